"""Tokenizers: trained locally (``bpe``) or fetched from the Hugging Face hub (``hub``).

Either way the result is a ``transformers.PreTrainedTokenizerFast`` saved with
``save_pretrained`` into a directory of the cache, and every run loads it back from those files.
That directory is what checkpoints copy, so a checkpoint can always be decoded without the corpus.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

from transformers import AutoTokenizer, PreTrainedTokenizerFast

from gpt5_ablate.data.corpora.base import Corpus, TextCorpus
from gpt5_ablate.data.hashing import stable_hash
from gpt5_ablate.data.hub import hub_unavailable_reason
from gpt5_ablate.data.registry import TOKENIZER
from gpt5_ablate.errors import ConfigError, InputError
from gpt5_ablate.registry import Component, ComponentConfig

log = logging.getLogger(__name__)

# Bump when the way tokenizers are trained or saved changes, so old cache entries are not reused.
TOKENIZER_FORMAT = 1
N_BYTES = 256  # byte-level BPE starts from one token per byte value


class TokenizerBuilder(Component, ABC):
    """Makes the tokenizer files for one ``tokenizer=<name>`` option: ``Builder(cfg, ctx)``."""

    # True: learned from the corpus's training text (so a token-only corpus cannot use it).
    trains_on_corpus: ClassVar[bool] = False

    @abstractmethod
    def cache_name(self, corpus: Corpus) -> str:
        """Directory name under ``<cache_dir>/tokenizers``; changes whenever the result would."""

    @abstractmethod
    def build(self, out_dir: Path, corpus: Corpus) -> dict[str, Any]:
        """Write the tokenizer files into ``out_dir``; return metadata (e.g. training time)."""


def load_tokenizer(directory: Path) -> PreTrainedTokenizerFast:
    """Load a tokenizer saved by a builder (also how checkpoints reload theirs)."""
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        raise InputError(
            f"The tokenizer in {directory} loaded as {type(tokenizer).__name__}, not a fast "
            "(Rust `tokenizers`) tokenizer, which the data pipeline needs."
        )
    return tokenizer


# ----------------------------------------------------------------------------------------------
# bpe: byte-level BPE trained on the training split


@dataclass
class BPEConfig(ComponentConfig):
    name: str = "bpe"
    vocab_size: int = 8192  # including the special token
    min_frequency: int = 2  # a pair must occur this often to be merged
    eos_token: str = "<|endoftext|>"  # appended after every document

    def validate(self, ctx: Any = None) -> None:
        minimum = N_BYTES + 1  # every byte, plus the EOS token
        if self.vocab_size < minimum:
            raise ConfigError(
                f"tokenizer.vocab_size={self.vocab_size} is too small: byte-level BPE needs "
                f"{N_BYTES} byte tokens plus 1 special token ({self.eos_token}), so at least "
                f"{minimum}; typical values are 4096-32768."
            )
        if self.min_frequency < 1:
            raise ConfigError(f"tokenizer.min_frequency={self.min_frequency} must be >= 1.")
        if not self.eos_token:
            raise ConfigError("tokenizer.eos_token must be a non-empty string.")


@TOKENIZER.register("bpe", BPEConfig)
class ByteLevelBPE(TokenizerBuilder):
    """GPT-2 style byte-level BPE: any string encodes, and decoding gives back the exact string."""

    cfg: BPEConfig
    trains_on_corpus = True

    def cache_name(self, corpus: Corpus) -> str:
        key = stable_hash(
            {"corpus": corpus.fingerprint(), "cfg": asdict(self.cfg), "format": TOKENIZER_FORMAT}
        )
        return f"bpe-{corpus.name}-v{self.cfg.vocab_size}-{key}"

    def build(self, out_dir: Path, corpus: Corpus) -> dict[str, Any]:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        if not isinstance(corpus, TextCorpus):  # prepare_data refuses this pairing earlier
            raise ConfigError(f"tokenizer=bpe cannot be trained on data={corpus.name}: no text.")
        n_docs = len(corpus.dataset("train"))  # loads (and checks) the corpus first
        tokenizer = Tokenizer(models.BPE())
        # No prefix space: it would insert a character, and decode(encode(s)) must give s back.
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=self.cfg.vocab_size,
            min_frequency=self.cfg.min_frequency,
            special_tokens=[self.cfg.eos_token],
            # All 256 byte symbols, even unseen ones, so no input can ever be out of vocabulary.
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        log.info(
            "training a %d-token BPE on %d %s documents", self.cfg.vocab_size, n_docs, corpus.name
        )
        start = time.perf_counter()
        tokenizer.train_from_iterator(corpus.documents("train"), trainer, length=n_docs)
        seconds = time.perf_counter() - start
        wrapped = PreTrainedTokenizerFast(
            tokenizer_object=tokenizer,
            eos_token=self.cfg.eos_token,
            # The default clean-up rewrites " ." as "." on decode, which breaks round trips.
            clean_up_tokenization_spaces=False,
        )
        wrapped.save_pretrained(str(out_dir))
        if len(wrapped) < self.cfg.vocab_size:
            log.warning(
                "data=%s is too small to learn %d tokens: the tokenizer has %d",
                corpus.name,
                self.cfg.vocab_size,
                len(wrapped),
            )
        log.info("trained the tokenizer in %.1f s", seconds)
        return {"train_seconds": seconds, "vocab_size": len(wrapped), "n_docs": n_docs}


# ----------------------------------------------------------------------------------------------
# hub: a pretrained tokenizer from the Hugging Face hub


@dataclass
class HubTokenizerConfig(ComponentConfig):
    name: str = "hub"
    pretrained_name: str = "gpt2"  # a hub repository id, or a local directory
    revision: str | None = None
    probe_timeout: float = 3.0  # seconds to wait for the hub before reporting it unreachable

    def validate(self, ctx: Any = None) -> None:
        if not self.pretrained_name:
            raise ConfigError("tokenizer.pretrained_name is empty; give a hub id such as 'gpt2'.")


@TOKENIZER.register("hub", HubTokenizerConfig)
class HubTokenizer(TokenizerBuilder):
    """``AutoTokenizer.from_pretrained(pretrained_name)``, copied into the cache once."""

    cfg: HubTokenizerConfig

    def cache_name(self, corpus: Corpus) -> str:
        # Independent of the corpus: one copy serves every dataset.
        key = stable_hash(
            {
                "pretrained_name": self.cfg.pretrained_name,
                "revision": self.cfg.revision,
                "format": TOKENIZER_FORMAT,
            }
        )
        safe = self.cfg.pretrained_name.replace("/", "--").replace("\\", "--").strip(".-") or "x"
        return f"hub-{safe}-{key}"

    def build(self, out_dir: Path, corpus: Corpus) -> dict[str, Any]:
        name = self.cfg.pretrained_name
        is_local_dir = Path(name).expanduser().is_dir()
        # Offline (by setting or because the hub is unreachable) only the local HF cache can
        # help; asking transformers to look there alone avoids its long network retries.
        unavailable = None if is_local_dir else hub_unavailable_reason(self.cfg.probe_timeout)
        try:
            tokenizer = AutoTokenizer.from_pretrained(
                str(Path(name).expanduser()) if is_local_dir else name,
                revision=self.cfg.revision,
                local_files_only=unavailable is not None,
            )
        except Exception as exc:  # transformers raises OSError, ValueError, hub errors...
            if unavailable is not None:
                raise InputError(
                    f"tokenizer=hub needs {name!r} from the Hugging Face hub, but {unavailable} "
                    "and it is not in the local Hugging Face cache. Use tokenizer=bpe (trained "
                    "locally) offline, or run once with internet access."
                ) from exc
            raise InputError(
                f"tokenizer.pretrained_name={name!r} could not be loaded "
                f"({exc.__class__.__name__}: {exc}); check the hub id (e.g. 'gpt2')."
            ) from exc
        if not isinstance(tokenizer, PreTrainedTokenizerFast):
            raise InputError(
                f"tokenizer.pretrained_name={name!r} has no fast (Rust `tokenizers`) version; "
                "choose a tokenizer that ships a tokenizer.json."
            )
        if tokenizer.eos_token_id is None:
            raise InputError(
                f"tokenizer.pretrained_name={name!r} defines no EOS token, which the data "
                "pipeline appends after every document as the separator; choose another one."
            )
        tokenizer.save_pretrained(str(out_dir))
        return {"pretrained_name": name, "vocab_size": len(tokenizer)}
