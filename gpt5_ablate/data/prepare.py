"""``prepare_data``: corpus -> tokenizer -> packed token blocks -> evaluation sets, all cached.

Layout of ``cache_dir``::

    tokenizers/<kind>-...-<key>/    tokenizer.json, tokenizer_config.json, COMPLETE.json
    blocks/<corpus>-<tok>-L<seq_len>-<key>/    see ``gpt5_ablate.data.blocks``

A text corpus is tokenized (its training split trains the tokenizer when it is ``bpe``); a token
corpus (``data=token_files``) is copied as it is, with a pretrained tokenizer that is only loaded.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from transformers import PreTrainedTokenizerFast

from gpt5_ablate.data.blocks import (
    BLOCKS_FORMAT,
    UINT16_LIMIT,
    LoadedBlocks,
    build_blocks,
    load_blocks,
)
from gpt5_ablate.data.cache import MARKER, load_or_build
from gpt5_ablate.data.corpora.base import Corpus, TokenCorpus
from gpt5_ablate.data.hashing import hash_files, stable_hash, stable_int
from gpt5_ablate.data.registry import DATA, TOKENIZER, DataContext
from gpt5_ablate.data.tokenizer import TokenizerBuilder, load_tokenizer
from gpt5_ablate.errors import ConfigError, InputError

log = logging.getLogger(__name__)


@dataclass
class PreparedData:
    """Everything the trainer needs from the data side."""

    tokenizer: PreTrainedTokenizerFast
    tokenizer_dir: Path  # the saved tokenizer files; copy them into checkpoints
    vocab_size: int  # len(tokenizer): the model's embedding size
    seq_len: int
    eos_token_id: int
    train_blocks: np.ndarray  # [n_train_blocks, seq_len + 1], memory-mapped, read-only
    # The WHOLE validation split: [n_val_blocks, seq_len + 1], memory-mapped, read-only.
    val_blocks: np.ndarray
    # [n_val_blocks, seq_len] int32: for each target token (val_blocks[:, 1:]), the index into
    # val_doc_names of the validation document it belongs to (for per-document losses).
    val_block_doc_ids: np.ndarray
    val_doc_names: list[str]  # validation document keys (paths; shard paths for token_files)
    # The WHOLE test split, held out like validation but scored only by the final pass.
    test_blocks: np.ndarray  # [n_test_blocks, seq_len + 1], memory-mapped, read-only
    test_block_doc_ids: np.ndarray  # [n_test_blocks, seq_len] int32, into test_doc_names
    test_doc_names: list[str]
    # The periodic eval set: a fixed sample of validation blocks (seeded by the data key, not
    # the run seed, so every run of this data sees the same one), in memory.
    eval_blocks: np.ndarray
    eval_block_indices: np.ndarray  # rows of val_blocks that eval_blocks holds, ascending
    cache_path: Path  # this key's block cache directory
    tokenized_now: bool  # False when the blocks were loaded from the cache
    stats: dict[str, Any]


def _check_int(key: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key}={value!r} is invalid: it must be an integer >= {minimum}.")


def sample_eval_blocks(n_val_blocks: int, n_wanted: int, seed: int) -> np.ndarray:
    """``min(n_wanted, n_val_blocks)`` distinct validation block indices, ascending, drawn
    uniformly from the whole split (not a prefix, which would be a handful of documents)."""
    if n_wanted >= n_val_blocks:
        return np.arange(n_val_blocks)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_val_blocks, size=n_wanted, replace=False))


def _make_components(data_cfg: Any, tokenizer_cfg: Any) -> tuple[Corpus, TokenizerBuilder]:
    data_cfg = DATA.typed(data_cfg)
    tokenizer_cfg = TOKENIZER.typed(tokenizer_cfg)
    ctx = DataContext(tokenizer=tokenizer_cfg)
    corpus: Corpus = DATA.build(data_cfg, ctx)
    builder: TokenizerBuilder = TOKENIZER.build(tokenizer_cfg, ctx)
    corpus.validate()
    builder.validate()
    if not corpus.has_text and builder.trains_on_corpus:
        raise ConfigError(
            f"tokenizer={builder.name} is trained on text, but data={corpus.name} holds token ids; "
            "use the pretrained tokenizer the ids were made with, e.g. tokenizer=hub "
            "tokenizer.pretrained_name=gpt2."
        )
    return corpus, builder


def prepare_data(
    data_cfg: Any,
    tokenizer_cfg: Any,
    seq_len: int,
    cache_dir: str | os.PathLike[str] = "~/.cache/gpt5_ablate",
    eval_tokens: int = 65536,
    num_proc: int = 1,
) -> PreparedData:
    """Build (or load from ``cache_dir``) the tokenizer, the packed blocks and the eval sets.

    ``data_cfg`` / ``tokenizer_cfg``: the typed config dataclasses, or OmegaConf nodes / plain
    mappings with a ``name`` key. ``eval_tokens``: size of the periodic eval set in predicted
    tokens: ``eval_tokens // seq_len`` validation blocks (at least one; all of them when the
    split has fewer; none for 0), a fixed seeded sample across the whole split.
    ``num_proc``: processes for ``Dataset.map``; 1 is usually best, since the Rust tokenizer
    already encodes each batch on every core.
    """
    # Every check that needs no data runs first, so mistakes surface in milliseconds.
    _check_int("seq_len", seq_len, 1)
    _check_int("eval_tokens", eval_tokens, 0)
    _check_int("num_proc", num_proc, 1)
    corpus, builder = _make_components(data_cfg, tokenizer_cfg)
    root = Path(os.path.expanduser(os.fspath(cache_dir)))
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"cache_dir={os.fspath(cache_dir)!r} cannot be created ({exc}); point cache_dir at a "
            "writable directory."
        ) from exc

    # 1. The tokenizer (trained on the training split only, so validation and test stay unseen).
    tokenizer_dir = root / "tokenizers" / builder.cache_name(corpus)
    (tokenizer, tokenizer_meta), _ = load_or_build(
        tokenizer_dir,
        lambda tmp: builder.build(tmp, corpus),
        lambda path, meta: (load_tokenizer(path), meta),
    )
    vocab_size = len(tokenizer)
    if tokenizer.eos_token_id is None:
        raise InputError(f"The tokenizer in {tokenizer_dir} has no EOS token.")
    if isinstance(corpus, TokenCorpus) and vocab_size > UINT16_LIMIT:
        raise InputError(
            f"tokenizer={builder.name} has {vocab_size} tokens, but data={corpus.name} stores "
            f"uint16 ids (at most {UINT16_LIMIT} tokens); its shards cannot come from this "
            "tokenizer."
        )

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
    blocks, tokenized_now = load_or_build(
        blocks_dir,
        lambda tmp: build_blocks(tmp, corpus, tokenizer, seq_len, num_proc),
        lambda path, meta: load_blocks(path, meta, seq_len, vocab_size),
    )

    # 3. The periodic eval set: the same seeded sample for every run of this data key.
    n_val = len(blocks.val)
    wanted = max(1, eval_tokens // seq_len) if eval_tokens else 0
    eval_seed = stable_int(f"eval-blocks/{key}")
    eval_indices = sample_eval_blocks(n_val, wanted, eval_seed)
    if wanted > n_val:
        log.warning(
            "eval_tokens=%d asks for %d validation blocks but data=%s has %d; using all of them",
            eval_tokens,
            wanted,
            corpus.name,
            n_val,
        )
    # A small in-memory copy: evaluation may turn it into a tensor, which a read-only memory map
    # cannot back without a warning.
    eval_blocks = np.array(blocks.val[eval_indices])

    stats = _stats(corpus, builder, blocks, tokenizer_meta, seq_len, vocab_size, key)
    stats.update(
        {
            "n_eval_blocks": len(eval_indices),
            "n_eval_tokens": len(eval_indices) * seq_len,  # predicted tokens in the eval set
            "eval_seed": eval_seed,
        }
    )
    log.info(
        "data=%s: %d training / %d validation / %d test blocks of %d tokens (%d / %d / %d "
        "documents), %d eval blocks; %.2f%% of validation and %.2f%% of test %d-token windows "
        "occur verbatim in training",
        corpus.name,
        stats["n_train_blocks"],
        n_val,
        stats["n_test_blocks"],
        seq_len + 1,
        stats["n_docs_train"],
        stats["n_docs_val"],
        stats["n_docs_test"],
        stats["n_eval_blocks"],
        100 * stats["val_train_overlap_32"],
        100 * stats["test_train_overlap_32"],
        stats["val_train_overlap_detail"]["window"],
    )
    return PreparedData(
        tokenizer=tokenizer,
        tokenizer_dir=tokenizer_dir,
        vocab_size=vocab_size,
        seq_len=seq_len,
        eos_token_id=int(tokenizer.eos_token_id),
        train_blocks=blocks.train,
        val_blocks=blocks.val,
        val_block_doc_ids=blocks.val_doc_ids,
        val_doc_names=blocks.val_doc_names,
        test_blocks=blocks.test,
        test_block_doc_ids=blocks.test_doc_ids,
        test_doc_names=blocks.test_doc_names,
        eval_blocks=eval_blocks,
        eval_block_indices=eval_indices,
        cache_path=blocks_dir,
        tokenized_now=tokenized_now,
        stats=stats,
    )


def _stats(
    corpus: Corpus,
    builder: TokenizerBuilder,
    blocks: LoadedBlocks,
    tokenizer_meta: dict[str, Any],
    seq_len: int,
    vocab_size: int,
    key: str,
) -> dict[str, Any]:
    meta = blocks.meta
    return {
        "corpus": corpus.name,
        "tokenizer": builder.name,
        "seq_len": seq_len,
        "vocab_size": vocab_size,
        "dtype": str(blocks.train.dtype),
        "n_docs_train": meta["n_docs_train"],
        "n_docs_val": meta["n_docs_val"],
        "n_docs_test": meta["n_docs_test"],
        "n_train_tokens": meta["n_train_tokens"],  # all tokenized tokens, EOS included
        "n_val_tokens": meta["n_val_tokens"],
        "n_test_tokens": meta["n_test_tokens"],
        "n_train_blocks": int(blocks.train.shape[0]),
        "n_val_blocks": int(blocks.val.shape[0]),  # all of them: val_blocks is the whole split
        "n_test_blocks": int(blocks.test.shape[0]),
        # Share of validation 32-token windows (every 32 tokens, over the whole validation
        # split) found verbatim anywhere in the training stream: a leak detector.
        "val_train_overlap_32": meta["val_train_overlap_32"],
        "val_train_overlap_detail": meta["val_train_overlap_detail"],
        # The same measure for the test split, against training and against validation.
        "test_train_overlap_32": meta["test_train_overlap_32"],
        "test_val_overlap_32": meta["test_val_overlap_32"],
        "split": meta["split"],  # near-duplicate groups of the split (local corpora)
        "tokenize_seconds": meta["tokenize_seconds"],
        "tokenizer_train_seconds": tokenizer_meta.get("train_seconds"),
        "corpus_fingerprint": corpus.fingerprint(),
        "cache_key": key,
    }
