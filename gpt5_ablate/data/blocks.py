"""Packed token blocks: tokenize (or copy) each split into ``.npy`` files of a cache entry.

Layout of a blocks entry (``<cache_dir>/blocks/<corpus>-<tok>-L<seq_len>-<key>/``)::

    train.npy        [n_train_blocks, seq_len + 1]  uint16 (int32 for vocabularies > 65536)
    val.npy          [n_val_blocks, seq_len + 1]    the whole validation split
    val_doc_ids.npy  [n_val_blocks, seq_len] int32  validation document of each TARGET token
    val_docs.json    the validation document names (keys, paths), indexed by those ids
    test.npy, test_doc_ids.npy, test_docs.json     the same for the whole test split
    COMPLETE.json    file sizes + stats, written last

A split's documents (each followed by EOS; a token shard is used as it is) are concatenated in
their fixed order and cut into non-overlapping blocks of ``seq_len + 1`` tokens (the tail that
does not fill a block is dropped). A block gives a model ``seq_len`` inputs (``block[:-1]``) and
the ``seq_len`` next-token targets (``block[1:]``); ``<split>_doc_ids`` labels those targets.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from datasets import Dataset, Features, List, Value
from transformers import PreTrainedTokenizerFast

from gpt5_ablate.data.cache import CacheDamagedError
from gpt5_ablate.data.corpora.base import TextCorpus, TokenCorpus
from gpt5_ablate.data.hashing import stable_hash
from gpt5_ablate.data.overlap import val_train_overlap
from gpt5_ablate.data.split import SPLIT_NAMES
from gpt5_ablate.errors import InputError

log = logging.getLogger(__name__)

# Bump when the entry's files change, so old cache entries are not reused. 2: near-duplicate
# aware splits, the whole validation split with document ids, the overlap statistic. 3: the
# test split.
BLOCKS_FORMAT = 3
TRAIN_FILE = "train.npy"
VAL_FILE = "val.npy"
VAL_DOC_IDS_FILE = "val_doc_ids.npy"
VAL_DOCS_FILE = "val_docs.json"
HELD_OUT = ("val", "test")  # the splits scored per document
LABELS = {"train": "training", "val": "validation", "test": "test"}
assert set(LABELS) == set(SPLIT_NAMES)


def blocks_file(split: str) -> str:
    return f"{split}.npy"


def doc_ids_file(split: str) -> str:
    return f"{split}_doc_ids.npy"


def docs_file(split: str) -> str:
    return f"{split}_docs.json"


UINT16_LIMIT = 2**16
COPY_CHUNK = 1 << 24  # tokens copied at a time from a shard


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest dtype that holds every id: uint16 halves disk and page-cache use."""
    return np.dtype(np.uint16) if vocab_size <= UINT16_LIMIT else np.dtype(np.int32)


@dataclass
class LoadedBlocks:
    train: np.ndarray  # memory-mapped, read-only
    val: np.ndarray  # memory-mapped, read-only
    val_doc_ids: np.ndarray  # memory-mapped, read-only
    val_doc_names: list[str]
    test: np.ndarray  # memory-mapped, read-only
    test_doc_ids: np.ndarray  # memory-mapped, read-only
    test_doc_names: list[str]
    meta: dict[str, Any]


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
    if not sys.stderr.isatty():
        # Without a terminal a bar cannot redraw in place: each refresh (and the close) would be
        # a line of its own in logs and captured output. The prepare step logs one summary line.
        datasets.disable_progress_bars()
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


def pack_stream(
    pieces: Iterable[np.ndarray],
    n_tokens: int,
    path: Path,
    seq_len: int,
    vocab_size: int,
    what: str,
    hint: str = "data.val_fraction or data.max_docs",
) -> int:
    """Write the concatenated ``pieces`` (``n_tokens`` in all) as ``[n_blocks, seq_len + 1]``
    blocks into a ``.npy`` file through a memory map, so memory stays flat. Returns n_blocks."""
    block = seq_len + 1
    n_blocks = n_tokens // block
    if n_blocks == 0:
        raise InputError(
            f"{what} has only {n_tokens} tokens, fewer than one block of seq_len + 1 = {block} "
            f"tokens; give it more text (raise {hint}) or lower the "
            "sequence length."
        )
    out = np.lib.format.open_memmap(
        path, mode="w+", dtype=token_dtype(vocab_size), shape=(n_blocks, block)
    )
    flat = out.reshape(-1)
    filled = 0
    for values in pieces:
        if filled == flat.size:
            break
        if values.size and (int(values.min()) < 0 or int(values.max()) >= vocab_size):
            raise InputError(
                f"{what} holds token id {int(values.max())}, outside the tokenizer's vocabulary "
                f"[0, {vocab_size}): the ids were made with another tokenizer."
            )
        take = min(values.size, flat.size - filled)
        flat[filled : filled + take] = values[:take]
        filled += take
    out.flush()
    del flat, out  # closes the memory map before the file is fsynced and renamed
    return n_blocks


def write_doc_ids(lengths: Sequence[int], path: Path, n_blocks: int, seq_len: int) -> None:
    """``[n_blocks, seq_len]`` int32: the document of each target token (``block[1:]``), given
    each document's token count in stream order. Written in row chunks: memory stays flat."""
    ends = np.cumsum(np.asarray(lengths, dtype=np.int64))
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.int32, shape=(n_blocks, seq_len))
    rows = max(1, COPY_CHUNK // (seq_len + 1))
    for r0 in range(0, n_blocks, rows):
        r1 = min(n_blocks, r0 + rows)
        positions = np.arange(r0 * (seq_len + 1), r1 * (seq_len + 1), dtype=np.int64)
        doc = np.searchsorted(ends, positions, side="right").astype(np.int32)
        out[r0:r1] = doc.reshape(r1 - r0, seq_len + 1)[:, 1:]
    out.flush()
    del out


def _text_split(
    out_dir: Path,
    corpus: TextCorpus,
    split: str,
    tokenizer: PreTrainedTokenizerFast,
    seq_len: int,
    num_proc: int,
) -> dict[str, Any]:
    label = LABELS[split]
    docs = corpus.dataset(split)
    if len(docs) == 0:
        raise InputError(f"The {label} split of data={corpus.name} has no documents.")
    log.info("tokenizing %d %s documents of data=%s", len(docs), label, corpus.name)
    tokenized = tokenize_split(docs, tokenizer, out_dir / "scratch" / split, num_proc)
    column = tokenized.data.column("ids")
    lengths = np.concatenate([chunk.value_lengths().to_numpy() for chunk in column.chunks])
    n_tokens = int(lengths.sum())
    what = f"The {label} split of data={corpus.name} ({len(docs)} documents)"
    pieces = (chunk.flatten().to_numpy() for chunk in column.chunks)
    file = out_dir / blocks_file(split)
    hint = f"data.{split}_fraction or data.max_docs" if split != "train" else "data.max_docs"
    n_blocks = pack_stream(pieces, n_tokens, file, seq_len, len(tokenizer), what, hint)
    if split in HELD_OUT:
        write_doc_ids(lengths, out_dir / doc_ids_file(split), n_blocks, seq_len)
        (out_dir / docs_file(split)).write_text(json.dumps(corpus.keys(split)))
    del tokenized, column, pieces  # release the Arrow memory map before deleting its file
    return {
        f"n_docs_{split}": len(docs),
        f"n_{split}_tokens": n_tokens,
        f"n_{split}_blocks": n_blocks,
    }


def _chunks(streams: Sequence[tuple[str, np.ndarray]]) -> Iterator[np.ndarray]:
    for _, tokens in streams:
        for start in range(0, len(tokens), COPY_CHUNK):
            yield np.asarray(tokens[start : start + COPY_CHUNK])


def _token_split(
    out_dir: Path, corpus: TokenCorpus, split: str, vocab_size: int, seq_len: int
) -> dict[str, Any]:
    label = LABELS[split]
    streams = corpus.streams(split)
    lengths = [len(tokens) for _, tokens in streams]
    log.info("copying %d %s shards of data=%s", len(streams), label, corpus.name)
    what = f"The {label} split of data={corpus.name} ({len(streams)} shards)"
    file = out_dir / blocks_file(split)
    hint = "data.val_patterns / data.test_patterns" if split != "train" else "data.train_patterns"
    n_blocks = pack_stream(_chunks(streams), sum(lengths), file, seq_len, vocab_size, what, hint)
    if split in HELD_OUT:
        write_doc_ids(lengths, out_dir / doc_ids_file(split), n_blocks, seq_len)
        (out_dir / docs_file(split)).write_text(json.dumps([name for name, _ in streams]))
    return {
        f"n_docs_{split}": len(streams),
        f"n_{split}_tokens": sum(lengths),
        f"n_{split}_blocks": n_blocks,
    }


def build_blocks(
    out_dir: Path,
    corpus: TextCorpus | TokenCorpus,
    tokenizer: PreTrainedTokenizerFast,
    seq_len: int,
    num_proc: int,
) -> dict[str, Any]:
    """Write every file of a blocks entry into ``out_dir``; return the metadata (stats)."""
    start = time.perf_counter()
    meta: dict[str, Any] = {"seq_len": seq_len, "vocab_size": len(tokenizer)}
    # Held-out splits first: they are small, and a too-small one is the likeliest failure.
    for split in ("val", "test", "train"):
        if isinstance(corpus, TokenCorpus):
            meta.update(_token_split(out_dir, corpus, split, len(tokenizer), seq_len))
        else:
            meta.update(_text_split(out_dir, corpus, split, tokenizer, seq_len, num_proc))
    # The Arrow scratch files are only a means to the .npy files; keep the entry small.
    shutil.rmtree(out_dir / "scratch", ignore_errors=True)
    meta["tokenize_seconds"] = time.perf_counter() - start
    meta["split"] = corpus.split_info()

    start = time.perf_counter()
    train = np.load(out_dir / TRAIN_FILE, mmap_mode="r")
    val = np.load(out_dir / VAL_FILE, mmap_mode="r")
    test = np.load(out_dir / blocks_file("test"), mmap_mode="r")
    overlap = val_train_overlap(train, val)
    meta["val_train_overlap_32"] = overlap.pop("overlap")
    meta["val_train_overlap_detail"] = {**overlap, "seconds": time.perf_counter() - start}
    # The same leak detector for test: against training, and against validation (small, cheap).
    meta["test_train_overlap_32"] = val_train_overlap(train, test)["overlap"]
    meta["test_val_overlap_32"] = val_train_overlap(val, test)["overlap"]
    del train, val, test
    log.info(
        "tokenized data=%s in %.1f s; %.2f%% of its %d validation %d-token windows occur verbatim "
        "in training",
        corpus.name,
        meta["tokenize_seconds"],
        100 * meta["val_train_overlap_32"],
        overlap["n_val_windows"],
        overlap["window"],
    )
    return meta


def load_blocks(
    directory: Path, meta: dict[str, Any], seq_len: int, vocab_size: int
) -> LoadedBlocks:
    """Open a complete entry (memory-mapped); CacheDamagedError when a file is unusable."""
    expected = {
        blocks_file(split): ((seq_len + 1,), token_dtype(vocab_size)) for split in SPLIT_NAMES
    }
    expected.update({doc_ids_file(split): ((seq_len,), np.dtype(np.int32)) for split in HELD_OUT})
    arrays: dict[str, np.ndarray] = {}
    for filename, (row_shape, dtype) in expected.items():
        # Memory-mapped and read-only: nothing is read until a batch touches it.
        array = np.load(directory / filename, mmap_mode="r", allow_pickle=False)
        if array.ndim != 2 or array.shape[1:] != row_shape or array.dtype != dtype:
            raise CacheDamagedError(
                f"{filename} has shape {array.shape} and dtype {array.dtype}, expected "
                f"[n, {row_shape[0]}] {dtype}"
            )
        arrays[filename] = array
    names: dict[str, list[str]] = {}
    for split in HELD_OUT:
        names[split] = json.loads((directory / docs_file(split)).read_text())
        ids = arrays[doc_ids_file(split)]
        if len(ids) != len(arrays[blocks_file(split)]) or not isinstance(names[split], list):
            raise CacheDamagedError(
                f"{doc_ids_file(split)} or {docs_file(split)} does not match {blocks_file(split)}"
            )
    return LoadedBlocks(
        train=arrays[TRAIN_FILE],
        val=arrays[VAL_FILE],
        val_doc_ids=arrays[doc_ids_file("val")],
        val_doc_names=names["val"],
        test=arrays[blocks_file("test")],
        test_doc_ids=arrays[doc_ids_file("test")],
        test_doc_names=names["test"],
        meta=meta,
    )
