"""The test split: held out apart from validation, like it by whole near-duplicate groups, and
deterministic; its prepared blocks and statistics beside the validation ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gpt5_ablate.data import prepare_data
from gpt5_ablate.data.corpora import StdlibConfig, TextFilesConfig, TextFilesCorpus
from gpt5_ablate.data.split import split_by_document, split_by_group
from gpt5_ablate.data.tokenizer import BPEConfig
from gpt5_ablate.errors import ConfigError
from tests.test_data_split import FAMILY_SIZE, N_FAMILIES, N_UNIQUE, _planted_corpus


def test_three_way_split_is_disjoint_deterministic_and_sized() -> None:
    keys = [f"stdlib/module_{i}.py" for i in range(200)]
    labels = split_by_document(keys, 0.1, "t", test_fraction=0.15)
    assert labels.count("val") == 20 and labels.count("test") == 30
    assert labels.count("train") == 150
    assert split_by_document(keys, 0.1, "t", test_fraction=0.15) == labels
    # Order does not matter: only the keys' stable hashes do.
    assert split_by_document(keys[::-1], 0.1, "t", test_fraction=0.15) == labels[::-1]
    # Adding the test split leaves validation as it was.
    two_way = split_by_document(keys, 0.1, "t")
    assert [k for k, s in zip(keys, two_way, strict=True) if s == "val"] == [
        k for k, s in zip(keys, labels, strict=True) if s == "val"
    ]


def test_groups_stay_whole_across_all_three_splits() -> None:
    keys = [f"doc{i:02d}" for i in range(40)]
    groups = [i // 4 for i in range(40)]  # ten groups of four
    labels = split_by_group(keys, groups, 0.2, "t", test_fraction=0.2)
    for g in range(10):
        assert len({labels[i] for i in range(40) if groups[i] == g}) == 1, g
    assert labels.count("val") == 8 and labels.count("test") == 8


def test_planted_families_are_never_split_between_test_and_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # keys independent of the tmp dir's name: a fixed hash order
    families = _planted_corpus(Path("."))
    cfg = TextFilesConfig(patterns=["*.py"], val_fraction=0.2, test_fraction=0.2)
    corpus = TextFilesCorpus(cfg)
    side = {key: split for split in ("train", "val", "test") for key in corpus.keys(split)}
    assert len(side) == N_FAMILIES * FAMILY_SIZE + N_UNIQUE
    for family, members in families.items():
        assert len({side[m] for m in members}) == 1, family
    n = len(side)
    for split in ("val", "test"):
        assert abs(len(corpus.keys(split)) - 0.2 * n) <= FAMILY_SIZE, split
    assert any(side[members[0]] == "test" for members in families.values())  # teeth


@pytest.mark.parametrize(
    ("val", "test"), [(0.5, 0.5), (0.9, 0.2), (0.05, 0.0), (0.05, -0.1), (0.05, 1.0)]
)
def test_bad_fractions_are_rejected_with_the_values(val: float, test: float) -> None:
    cfg = StdlibConfig(max_docs=20, val_fraction=val, test_fraction=test)
    with pytest.raises(ConfigError) as error:
        cfg.validate()
    message = str(error.value)
    assert f"data.test_fraction={test}" in message and f"data.val_fraction={val}" in message
    assert "val_fraction + test_fraction must stay below 1" in message


def test_prepared_test_split_and_stats(tmp_path: Path) -> None:
    data = prepare_data(
        StdlibConfig(max_docs=60, val_fraction=0.1, test_fraction=0.1),
        BPEConfig(vocab_size=300),
        32,
        tmp_path,
        eval_tokens=256,
    )
    stats = data.stats
    assert (stats["n_docs_train"], stats["n_docs_val"], stats["n_docs_test"]) == (48, 6, 6)
    assert set(data.test_doc_names).isdisjoint(data.val_doc_names)
    assert data.test_blocks.shape == (stats["n_test_blocks"], 33)
    assert stats["n_test_blocks"] == stats["n_test_tokens"] // 33
    assert data.test_block_doc_ids.shape == (stats["n_test_blocks"], 32)
    # Every test document long enough to reach a block is labelled, in order.
    ids = data.test_block_doc_ids.reshape(-1)
    assert ids[0] == 0 and np.all(np.diff(ids) >= 0) and ids[-1] < len(data.test_doc_names)
    for key in ("test_train_overlap_32", "test_val_overlap_32"):
        assert 0.0 <= stats[key] <= 1.0
    # The periodic eval set is drawn from validation only.
    np.testing.assert_array_equal(data.eval_blocks, data.val_blocks[data.eval_block_indices])
