"""The evaluation sets of ``PreparedData``: the whole validation split with per-token document
ids, and the fixed, seeded periodic eval sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gpt5_ablate.data import PreparedData, prepare_data
from gpt5_ablate.data.corpora import StdlibConfig, StdlibCorpus
from gpt5_ablate.data.tokenizer import BPEConfig

SEQ_LEN = 32
EVAL_TOKENS = 640  # 20 blocks
DATA = StdlibConfig(max_docs=60, val_fraction=0.2)
BPE = BPEConfig(vocab_size=400)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("eval_cache")


@pytest.fixture(scope="module")
def prepared(cache_dir: Path) -> PreparedData:
    return prepare_data(DATA, BPE, SEQ_LEN, cache_dir, eval_tokens=EVAL_TOKENS)


def test_val_blocks_are_the_whole_validation_split(prepared: PreparedData) -> None:
    corpus = StdlibCorpus(DATA)
    assert prepared.val_doc_names == corpus.keys("val")
    ids = [
        [*prepared.tokenizer.encode(doc, add_special_tokens=False), prepared.eos_token_id]
        for doc in corpus.documents("val")
    ]
    stream = np.concatenate(ids)
    n_blocks = len(stream) // (SEQ_LEN + 1)
    assert prepared.val_blocks.shape == (n_blocks, SEQ_LEN + 1)
    np.testing.assert_array_equal(
        prepared.val_blocks.reshape(-1), stream[: n_blocks * (SEQ_LEN + 1)]
    )


def test_val_doc_ids_label_every_target_token(prepared: PreparedData) -> None:
    doc_ids, names = prepared.val_block_doc_ids, prepared.val_doc_names
    assert doc_ids.shape == prepared.val_blocks[:, 1:].shape and doc_ids.dtype == np.int32
    assert int(doc_ids.min()) >= 0 and int(doc_ids.max()) < len(names)
    assert len(np.unique(doc_ids)) > 1
    # Rebuilt by hand: document i covers its tokens and its closing EOS, in stream order, and
    # the ids are those of the targets (every block position but the first).
    lengths = [
        len(prepared.tokenizer.encode(doc, add_special_tokens=False)) + 1
        for doc in StdlibCorpus(DATA).documents("val")
    ]
    stream_ids = np.repeat(np.arange(len(lengths)), lengths)
    n_blocks = len(doc_ids)
    expected = stream_ids[: n_blocks * (SEQ_LEN + 1)].reshape(n_blocks, SEQ_LEN + 1)[:, 1:]
    np.testing.assert_array_equal(doc_ids, expected)


def test_eval_blocks_are_a_fixed_seeded_sample(prepared: PreparedData, cache_dir: Path) -> None:
    n_eval = EVAL_TOKENS // SEQ_LEN
    assert prepared.eval_blocks.shape == (n_eval, SEQ_LEN + 1)
    indices = prepared.eval_block_indices
    assert len(set(indices.tolist())) == n_eval and np.all(np.diff(indices) > 0)
    np.testing.assert_array_equal(prepared.eval_blocks, prepared.val_blocks[indices])
    # Drawn across the split, not its first blocks: several documents are represented.
    assert indices[-1] >= n_eval
    docs = np.unique(prepared.val_block_doc_ids[indices])
    assert len(docs) > 1
    # The same sample from the cache, and from a fresh cache dir (the seed is the data key).
    again = prepare_data(DATA, BPE, SEQ_LEN, cache_dir, eval_tokens=EVAL_TOKENS)
    assert not again.tokenized_now
    np.testing.assert_array_equal(again.eval_blocks, prepared.eval_blocks)
    assert again.stats["eval_seed"] == prepared.stats["eval_seed"]
    assert not isinstance(again.eval_blocks, np.memmap)  # an in-memory copy


def test_eval_set_size_follows_eval_tokens(prepared: PreparedData, cache_dir: Path) -> None:
    n_val = len(prepared.val_blocks)
    none = prepare_data(DATA, BPE, SEQ_LEN, cache_dir, eval_tokens=0)
    assert none.eval_blocks.shape == (0, SEQ_LEN + 1)
    everything = prepare_data(DATA, BPE, SEQ_LEN, cache_dir, eval_tokens=10**9)
    assert everything.eval_blocks.shape == (n_val, SEQ_LEN + 1)
    np.testing.assert_array_equal(everything.eval_blocks, prepared.val_blocks)
    assert everything.stats["n_eval_tokens"] == n_val * SEQ_LEN
