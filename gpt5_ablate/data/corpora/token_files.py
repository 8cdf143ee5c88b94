"""``data=token_files``: pre-tokenized shards in the llm.c / modded-nanogpt ``.bin`` layout.

A shard is a header of 256 little-endian int32 (``header[0]`` = 20240520, the magic number;
``header[1]`` = 1, the version; ``header[2]`` = the number of tokens) followed by exactly that
many little-endian uint16 token ids. llm.c's ``fineweb.py`` writes FineWeb this way, each
document preceded by the GPT-2 ``<|endoftext|>`` token.

There is no text, so no tokenizer can be trained: the ids must be those of the configured
pretrained tokenizer (e.g. ``tokenizer=hub tokenizer.pretrained_name=gpt2`` for llm.c's
FineWeb shards), which is only loaded, and whose vocabulary must fit in uint16. Shards are
memory-mapped, never read into memory whole; each shard counts as one held-out "document".

Test split: the shards matched by ``test_patterns``; when it is empty (the default, as llm.c
writes a single validation shard), the validation shards' token stream is cut in half: the
first half (in sorted path order) stays validation, the second half is the test split.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gpt5_ablate.data.corpora.base import TokenCorpus, check_patterns
from gpt5_ablate.data.corpora.text_files import match_files
from gpt5_ablate.data.registry import DATA, TOKENIZER
from gpt5_ablate.errors import ConfigError, InputError
from gpt5_ablate.registry import ComponentConfig

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
TOKEN_DTYPE = np.dtype("<u2")


def read_shard(path: Path) -> np.ndarray:
    """The shard's tokens as a read-only memory map; InputError (one line, naming the file) for
    a wrong magic number or version, or a size that disagrees with the header."""
    size = path.stat().st_size
    if size < HEADER_BYTES:
        raise InputError(
            f"{path} is not a token shard: {size} bytes, shorter than the {HEADER_BYTES}-byte header."
        )
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    if header[0] != SHARD_MAGIC:
        raise InputError(
            f"{path} is not a token shard: magic number {header[0]}, expected {SHARD_MAGIC}."
        )
    if header[1] != SHARD_VERSION:
        raise InputError(
            f"{path} is a version {header[1]} token shard; only version {SHARD_VERSION} "
            "(uint16 tokens) is supported."
        )
    n_tokens = int(header[2])
    held = (size - HEADER_BYTES) // TOKEN_DTYPE.itemsize
    if n_tokens < 0 or held < n_tokens:
        raise InputError(
            f"{path} is truncated: its header announces {n_tokens} tokens but it holds {held}."
        )
    if size != HEADER_BYTES + n_tokens * TOKEN_DTYPE.itemsize:
        raise InputError(
            f"{path} has {size - HEADER_BYTES - n_tokens * TOKEN_DTYPE.itemsize} bytes after the "
            f"{n_tokens} tokens its header announces; the file is damaged or not a token shard."
        )
    if n_tokens == 0:
        return np.empty(0, dtype=TOKEN_DTYPE)  # an empty memory map is not allowed
    return np.memmap(path, dtype=TOKEN_DTYPE, mode="r", offset=HEADER_BYTES, shape=(n_tokens,))


@dataclass
class TokenFilesConfig(ComponentConfig):
    name: str = "token_files"
    # Glob patterns ("**" recurses); relative ones start at the working directory. The defaults
    # are where llm.c / modded-nanogpt put FineWeb-10B.
    train_patterns: list[str] = field(
        default_factory=lambda: ["data/fineweb10B/fineweb_train_*.bin"]
    )
    val_patterns: list[str] = field(default_factory=lambda: ["data/fineweb10B/fineweb_val_*.bin"])
    # Shards for the final test evaluation; empty: the second half of the validation tokens.
    test_patterns: list[str] = field(default_factory=list)
    max_train_shards: int | None = None  # the first N training shards (sorted); None: all

    def validate(self, ctx: Any = None) -> None:
        check_patterns(self.name, "train_patterns", self.train_patterns)
        check_patterns(self.name, "val_patterns", self.val_patterns)
        if self.max_train_shards is not None and self.max_train_shards <= 0:
            raise ConfigError(
                f"data.max_train_shards={self.max_train_shards} is invalid: use a positive "
                "number of shards or null (all)."
            )
        tokenizer = getattr(ctx, "tokenizer", None)
        if tokenizer is not None and TOKENIZER.get(tokenizer.name).trains_on_corpus:
            raise ConfigError(
                f"tokenizer={tokenizer.name} is trained on the corpus, but data=token_files holds "
                "token ids, not text; use the pretrained tokenizer the shards were made with, "
                "e.g. tokenizer=hub tokenizer.pretrained_name=gpt2 for llm.c's FineWeb shards."
            )
        train = {p.resolve() for p in match_files(self.train_patterns, "train_patterns")}
        val = {p.resolve() for p in match_files(self.val_patterns, "val_patterns")}
        if train & val:
            raise ConfigError(
                f"{min(train & val)} matches both data.train_patterns and data.val_patterns; "
                "a shard must be on one side only."
            )
        if self.test_patterns:
            test = {p.resolve() for p in match_files(self.test_patterns, "test_patterns")}
            if test & (train | val):
                raise ConfigError(
                    f"{min(test & (train | val))} matches data.test_patterns and also "
                    "data.train_patterns or data.val_patterns; a shard must be in one split only."
                )


@DATA.register("token_files", TokenFilesConfig)
class TokenFilesCorpus(TokenCorpus):
    """Training and validation shards matched by glob patterns, each in sorted path order."""

    cfg: TokenFilesConfig

    def check_available(self) -> None:
        return None  # local files; a missing match is reported by validate()

    def files(self, split: str) -> list[Path]:
        """The shards a split reads (for test without test_patterns: the validation shards)."""
        if split == "test" and self.cfg.test_patterns:
            return match_files(self.cfg.test_patterns, "test_patterns")
        if split in ("val", "test"):
            return match_files(self.cfg.val_patterns, "val_patterns")
        files = match_files(self.cfg.train_patterns, "train_patterns")
        return files[: self.cfg.max_train_shards]

    def _fingerprint_payload(self) -> Any:
        # Size and modification time stand in for the content, so a cache hit reads no shard.
        files = {
            split: [
                (str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns)
                for p in self.files(split)
            ]
            for split in ("train", "val", "test")
        }
        return {"cfg": asdict(self.cfg), "files": files}

    def streams(self, split: str) -> list[tuple[str, np.ndarray]]:
        streams = [(str(path), read_shard(path)) for path in self.files(split)]
        if split == "train" or self.cfg.test_patterns:
            return streams
        return _half_of_stream(streams, second=split == "test")


def _half_of_stream(
    streams: list[tuple[str, np.ndarray]], second: bool
) -> list[tuple[str, np.ndarray]]:
    """The first or second half (by tokens) of the concatenated ``streams``, as slices of them:
    one cut, so at most the one shard it falls in is shared by validation and test."""
    cut = sum(len(tokens) for _, tokens in streams) // 2
    half, start = [], 0
    for name, tokens in streams:
        lo, hi = (
            (max(cut - start, 0), len(tokens)) if second else (0, min(cut - start, len(tokens)))
        )
        if hi > lo:
            half.append((name, tokens[lo:hi]))
        start += len(tokens)
    return half
