"""``prepare_data``: corpus -> tokenizer -> packed token blocks, all cached on disk.

Layout of ``cache_dir``::

    tokenizers/<kind>-...-<key>/    tokenizer.json, tokenizer_config.json, COMPLETE.json
    blocks/<corpus>-<tok>-L<seq_len>-<key>/
        train.npy  [n_train_blocks, seq_len + 1]  uint16 (int32 for vocabularies > 65536)
        val.npy    [n_val_blocks, seq_len + 1]
        COMPLETE.json                             file sizes + stats, written last

Every document is tokenized, followed by the EOS token, and the split's documents are
concatenated in their fixed order and cut into non-overlapping blocks of ``seq_len + 1`` tokens
(the tail that does not fill a block is dropped). A block gives a model ``seq_len`` inputs
(``block[:-1]``) and the ``seq_len`` next-token targets (``block[1:]``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, Features, List, Value
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from transformers import PreTrainedTokenizerFast

from gpt5_ablate.data.cache import MARKER, CacheDamagedError, load_or_build
from gpt5_ablate.data.corpora import Corpus
from gpt5_ablate.data.hashing import hash_files, stable_hash
from gpt5_ablate.data.registry import DATA, TOKENIZER
from gpt5_ablate.data.tokenizer import TokenizerBuilder, load_tokenizer
from gpt5_ablate.errors import ConfigError, InputError
from gpt5_ablate.registry import Registry, to_dataclass

log = logging.getLogger(__name__)

# Bump when the block files' layout or content changes, so old cache entries are not reused.
BLOCKS_FORMAT = 1
TRAIN_FILE = "train.npy"
VAL_FILE = "val.npy"
UINT16_LIMIT = 2**16


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest dtype that holds every id: uint16 halves disk and page-cache use."""
    return np.dtype(np.uint16) if vocab_size <= UINT16_LIMIT else np.dtype(np.int32)


@dataclass
class PreparedData:
    """Everything the trainer needs from the data side."""

    tokenizer: PreTrainedTokenizerFast
    tokenizer_dir: Path  # the saved tokenizer files; copy them into checkpoints
    vocab_size: int  # len(tokenizer): the model's embedding size
    seq_len: int
    eos_token_id: int
    train_blocks: np.ndarray  # [n_train_blocks, seq_len + 1], memory-mapped, read-only
    val_blocks: np.ndarray  # [n_eval_blocks, seq_len + 1]: the fixed held-out set, in memory
    cache_path: Path  # this key's block cache directory
    tokenized_now: bool  # False when the blocks were loaded from the cache
    stats: dict[str, Any]


def as_config(registry: Registry[Any], cfg: Any, group: str) -> Any:
    """Accept a typed dataclass, an OmegaConf node or a plain dict; return the typed dataclass."""
    if isinstance(cfg, Mapping) and not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(dict(cfg))
    if isinstance(cfg, DictConfig):
        if "name" not in cfg:
            raise ConfigError(
                f"The {group} config has no 'name' key. Valid choices: {', '.join(registry.names())}."
            )
        try:
            return to_dataclass(registry, cfg)
        except OmegaConfBaseException as exc:
            fields = [
                f.name for f in dataclasses.fields(registry.entry(str(cfg.name)).config_class)
            ]
            raise ConfigError(
                f"Invalid {group}={cfg.name} config: {exc}. Valid keys: {', '.join(fields)}."
            ) from exc
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        entry = registry.entry(str(getattr(cfg, "name", "")))
        if not isinstance(cfg, entry.config_class):
            raise ConfigError(
                f"The {group} config is a {type(cfg).__name__} but names {entry.name!r}, whose "
                f"config class is {entry.config_class.__name__}."
            )
        return cfg
    raise ConfigError(
        f"The {group} config must be a dataclass or a mapping with a 'name' key, "
        f"got {type(cfg).__name__}."
    )


def _check_int(key: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key}={value!r} is invalid: it must be an integer >= {minimum}.")


# ----------------------------------------------------------------------------------------------
# Tokenize and pack


def _encode_batch(
    batch: dict[str, list[str]], backend: Any, eos_id: int
) -> dict[str, list[list[int]]]:
    # The Rust tokenizer encodes a batch on all cores; calling it directly (not through
    # transformers) also skips the "sequence longer than model_max_length" warnings.
    encodings = backend.encode_batch_fast(batch["text"], add_special_tokens=False)
    return {"ids": [[*encoding.ids, eos_id] for encoding in encodings]}


def tokenize_split(
    docs: Dataset, tokenizer: PreTrainedTokenizerFast, scratch_dir: Path, num_proc: int = 1
) -> Dataset:
    """Token ids of every document followed by EOS, as an on-disk Arrow ``ids`` column."""
    scratch_dir.mkdir(parents=True, exist_ok=True)
    return docs.map(
        _encode_batch,
        batched=True,
        batch_size=1024,
        fn_kwargs={"backend": tokenizer.backend_tokenizer, "eos_id": tokenizer.eos_token_id},
        remove_columns=docs.column_names,
        features=Features({"ids": List(Value("int32"))}),
        # Our own cache decides reuse; the file is scratch inside the entry being built.
        cache_file_name=str(scratch_dir / "ids.arrow"),
        load_from_cache_file=False,
        # A fixed fingerprint spares `datasets` from hashing the Rust tokenizer.
        new_fingerprint=stable_hash(str(scratch_dir)),
        num_proc=num_proc if num_proc > 1 else None,
        desc=f"tokenizing {scratch_dir.name}",
    )


def pack_blocks(
    tokenized: Dataset, path: Path, seq_len: int, vocab_size: int, what: str
) -> tuple[int, int]:
    """Concatenate the ``ids`` rows into ``[n_blocks, seq_len + 1]`` blocks saved as ``.npy``.

    Streams Arrow chunks into a memory-mapped output, so memory stays flat for large corpora.
    Returns ``(n_tokens, n_blocks)``.
    """
    column = tokenized.data.column("ids")
    n_tokens = sum(len(chunk.flatten()) for chunk in column.chunks)
    block = seq_len + 1
    n_blocks = n_tokens // block
    if n_blocks == 0:
        raise InputError(
            f"{what} has only {n_tokens} tokens ({len(tokenized)} documents), fewer than one "
            f"block of seq_len + 1 = {block} tokens; give it more text (raise data.val_fraction "
            "or data.max_docs) or lower the sequence length."
        )
    out = np.lib.format.open_memmap(
        path, mode="w+", dtype=token_dtype(vocab_size), shape=(n_blocks, block)
    )
    flat = out.reshape(-1)
    filled = 0
    for chunk in column.chunks:
        if filled == flat.size:
            break
        values = chunk.flatten().to_numpy()
        if values.size and (values.min() < 0 or values.max() >= vocab_size):
            raise ValueError(f"token id out of range [0, {vocab_size}) in {what}")
        take = min(values.size, flat.size - filled)
        flat[filled : filled + take] = values[:take]
        filled += take
    out.flush()
    del flat, out  # closes the memory map before the file is fsynced and renamed
    return n_tokens, n_blocks


def _build_blocks(
    out_dir: Path,
    corpus: Corpus,
    tokenizer: PreTrainedTokenizerFast,
    seq_len: int,
    num_proc: int,
) -> dict[str, Any]:
    start = time.perf_counter()
    meta: dict[str, Any] = {"seq_len": seq_len, "vocab_size": len(tokenizer)}
    # Validation first: it is small, and a too-small validation split is the likeliest failure.
    for split, filename, label in (
        ("val", VAL_FILE, "validation"),
        ("train", TRAIN_FILE, "training"),
    ):
        docs = corpus.dataset(split)
        if len(docs) == 0:
            raise InputError(f"The {label} split of data={corpus.name} has no documents.")
        log.info("tokenizing %d %s documents of data=%s", len(docs), label, corpus.name)
        tokenized = tokenize_split(docs, tokenizer, out_dir / "scratch" / split, num_proc)
        n_tokens, n_blocks = pack_blocks(
            tokenized,
            out_dir / filename,
            seq_len,
            len(tokenizer),
            f"The {label} split of data={corpus.name}",
        )
        meta[f"n_docs_{split}"] = len(docs)
        meta[f"n_{split}_tokens"] = n_tokens
        meta[f"n_{split}_blocks"] = n_blocks
        del tokenized  # release the Arrow memory map before deleting its file
    # The Arrow scratch files are only a means to the .npy files; keep the entry small.
    shutil.rmtree(out_dir / "scratch")
    meta["tokenize_seconds"] = time.perf_counter() - start
    log.info("tokenized data=%s in %.1f s", corpus.name, meta["tokenize_seconds"])
    return meta


def _load_blocks(
    directory: Path, meta: dict[str, Any], seq_len: int, vocab_size: int
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    arrays = []
    for filename in (TRAIN_FILE, VAL_FILE):
        # Memory-mapped and read-only: nothing is read until a batch touches it.
        array = np.load(directory / filename, mmap_mode="r", allow_pickle=False)
        if (
            array.ndim != 2
            or array.shape[1] != seq_len + 1
            or array.dtype != token_dtype(vocab_size)
        ):
            raise CacheDamagedError(
                f"{filename} has shape {array.shape} and dtype {array.dtype}, expected "
                f"[n, {seq_len + 1}] {token_dtype(vocab_size)}"
            )
        arrays.append(array)
    return arrays[0], arrays[1], meta


# ----------------------------------------------------------------------------------------------
# Public entry point


def prepare_data(
    data_cfg: Any,
    tokenizer_cfg: Any,
    seq_len: int,
    cache_dir: str | os.PathLike[str] = "~/.cache/gpt5_ablate",
    eval_tokens: int = 65536,
    num_proc: int = 1,
) -> PreparedData:
    """Build (or load from ``cache_dir``) the tokenizer and the packed train/validation blocks.

    ``data_cfg`` / ``tokenizer_cfg``: the typed config dataclasses, or OmegaConf nodes with a
    ``name`` key. ``eval_tokens``: size of the fixed held-out set, in predicted tokens; the first
    ``ceil(eval_tokens / seq_len)`` validation blocks (all of them when fewer; none for 0).
    ``num_proc``: processes for ``Dataset.map``; 1 is usually best, since the Rust tokenizer
    already encodes each batch on every core.
    """
    # Every check that needs no data runs first, so mistakes surface in milliseconds.
    data_cfg = as_config(DATA, data_cfg, "data")
    tokenizer_cfg = as_config(TOKENIZER, tokenizer_cfg, "tokenizer")
    _check_int("seq_len", seq_len, 1)
    _check_int("eval_tokens", eval_tokens, 0)
    _check_int("num_proc", num_proc, 1)
    corpus: Corpus = DATA.get(data_cfg.name)(data_cfg)
    builder: TokenizerBuilder = TOKENIZER.get(tokenizer_cfg.name)(tokenizer_cfg)
    corpus.validate()
    builder.validate()
    root = Path(os.path.expanduser(os.fspath(cache_dir)))
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"cache_dir={os.fspath(cache_dir)!r} cannot be created ({exc}); point cache_dir at a "
            "writable directory."
        ) from exc

    # 1. The tokenizer (trained on the training split only, so validation stays unseen).
    tokenizer_dir = root / "tokenizers" / builder.cache_name(corpus)
    (tokenizer, tokenizer_meta), _ = load_or_build(
        tokenizer_dir,
        lambda tmp: builder.build(tmp, corpus),
        lambda path, meta: (load_tokenizer(path), meta),
    )
    vocab_size = len(tokenizer)
    if tokenizer.eos_token_id is None:
        raise InputError(f"The tokenizer in {tokenizer_dir} has no EOS token.")

    # 2. The blocks, keyed by everything that changes them.
    key = stable_hash(
        {
            "corpus": corpus.fingerprint(),
            "tokenizer": hash_files(tokenizer_dir, exclude=(MARKER,)),
            "seq_len": seq_len,
            "format": BLOCKS_FORMAT,
        }
    )
    blocks_dir = root / "blocks" / f"{corpus.name}-{builder.name}-L{seq_len}-{key}"
    (train_blocks, all_val_blocks, meta), tokenized_now = load_or_build(
        blocks_dir,
        lambda tmp: _build_blocks(tmp, corpus, tokenizer, seq_len, num_proc),
        lambda path, meta: _load_blocks(path, meta, seq_len, vocab_size),
    )

    # 3. The fixed held-out set: always the same leading blocks of the validation split.
    wanted = math.ceil(eval_tokens / seq_len)
    n_eval = min(wanted, len(all_val_blocks))
    if n_eval < wanted:
        log.warning(
            "eval_tokens=%d asks for %d validation blocks but data=%s has %d; using all of them",
            eval_tokens,
            wanted,
            corpus.name,
            len(all_val_blocks),
        )
    # A small in-memory copy: evaluation may turn it into a tensor, which a read-only memory map
    # cannot back without a warning.
    val_blocks = np.array(all_val_blocks[:n_eval])

    stats: dict[str, Any] = {
        "corpus": corpus.name,
        "tokenizer": builder.name,
        "seq_len": seq_len,
        "vocab_size": vocab_size,
        "dtype": str(train_blocks.dtype),
        "n_docs_train": meta["n_docs_train"],
        "n_docs_val": meta["n_docs_val"],
        "n_train_tokens": meta["n_train_tokens"],  # all tokenized tokens, EOS included
        "n_val_tokens": meta["n_val_tokens"],
        "n_train_blocks": int(train_blocks.shape[0]),
        "n_val_blocks": int(all_val_blocks.shape[0]),  # available; val_blocks holds n_eval_blocks
        "n_eval_blocks": n_eval,
        "n_eval_tokens": n_eval * seq_len,  # predicted tokens in the held-out set
        "tokenize_seconds": meta["tokenize_seconds"],
        "tokenizer_train_seconds": tokenizer_meta.get("train_seconds"),
        "corpus_fingerprint": corpus.fingerprint(),
        "cache_key": key,
    }
    return PreparedData(
        tokenizer=tokenizer,
        tokenizer_dir=tokenizer_dir,
        vocab_size=vocab_size,
        seq_len=seq_len,
        eos_token_id=int(tokenizer.eos_token_id),
        train_blocks=train_blocks,
        val_blocks=val_blocks,
        cache_path=blocks_dir,
        tokenized_now=tokenized_now,
        stats=stats,
    )
