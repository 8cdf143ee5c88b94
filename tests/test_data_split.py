"""Near-duplicate-aware splits and the validation/training overlap statistic.

Synthetic corpora with planted near-duplicate families check the grouping; one slow test
prepares the full default ``data=stdlib`` and checks the measured leak stays under 2%.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from gpt5_ablate.data import prepare_data
from gpt5_ablate.data.cache import MARKER
from gpt5_ablate.data.corpora import TextFilesConfig, TextFilesCorpus
from gpt5_ablate.data.neardup import containment, line_shingles, near_duplicate_groups
from gpt5_ablate.data.overlap import val_train_overlap, window_hashes
from gpt5_ablate.data.split import (
    digit_family,
    document_groups,
    split_by_document,
    split_by_group,
)
from gpt5_ablate.errors import ConfigError, InputError

N_FAMILIES, FAMILY_SIZE, N_UNIQUE = 5, 6, 40
WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta", "kappa", "sigma"]


def _line(rng: random.Random) -> str:
    words = " ".join(rng.choice(WORDS) for _ in range(4))
    return f"    result_{rng.randrange(10**6)} = compute({words!r}, {rng.randrange(10**4)})"


def _planted_corpus(root: Path) -> dict[str, list[str]]:
    """5 families of 6 files that share ~85% of their lines, plus 40 unrelated files; returns
    family name -> file paths. Names carry no digits, so only the content can group them."""
    rng = random.Random(1234)
    families: dict[str, list[str]] = {}
    for f in range(N_FAMILIES):
        base = [_line(rng) for _ in range(60)]
        family = f"family{'abcde'[f]}"
        families[family] = []
        for m in range(FAMILY_SIZE):
            lines = [_line(rng) if rng.random() < 0.15 else line for line in base]
            path = root / f"{family}_member{'abcdef'[m]}.py"
            path.write_text("\n".join(lines) + "\n")
            families[family].append(f"{path}#0")
    for _ in range(N_UNIQUE):
        name = "".join(rng.choice("abcdefghij") for _ in range(8))
        (root / f"unique_{name}.py").write_text("\n".join(_line(rng) for _ in range(40)) + "\n")
    return families


def _sides(corpus: TextFilesCorpus) -> dict[str, str]:
    return {key: split for split in ("train", "val", "test") for key in corpus.keys(split)}


def test_planted_families_go_wholly_to_one_side(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Relative paths: document keys (and so the hash order of the split) must not depend on
    # pytest's numbered tmp directory, or whether a family lands in validation is left to chance.
    monkeypatch.chdir(tmp_path)
    families = _planted_corpus(Path("."))
    cfg = TextFilesConfig(patterns=["*.py"], val_fraction=0.3)
    corpus = TextFilesCorpus(cfg)
    side = _sides(corpus)
    assert len(side) == N_FAMILIES * FAMILY_SIZE + N_UNIQUE
    for family, members in families.items():
        assert len({side[m] for m in members}) == 1, family
    # The test has teeth: a family did land in validation, and a per-document split of the
    # same corpus scatters families over both sides.
    assert any(side[members[0]] == "val" for members in families.values())
    naive = _sides(TextFilesCorpus(replace(cfg, near_dup_threshold=None)))
    assert any(len({naive[m] for m in members}) == 2 for members in families.values())
    info = corpus.split_info()
    assert info["n_groups"] == N_FAMILIES + N_UNIQUE
    assert info["largest_group"] == FAMILY_SIZE
    assert abs(len(corpus.keys("val")) - 0.3 * len(side)) <= FAMILY_SIZE


def test_near_duplicate_groups_find_exactly_the_families(tmp_path: Path) -> None:
    families = _planted_corpus(tmp_path)
    paths = sorted(tmp_path.glob("*.py"))
    found = near_duplicate_groups([p.read_text() for p in paths], threshold=0.3)
    label = {f"{p}#0": g for p, g in zip(paths, found.group, strict=True)}
    for members in families.values():
        assert len({label[m] for m in members}) == 1
    assert found.n_groups == N_FAMILIES + N_UNIQUE
    assert sorted(found.group_sizes(), reverse=True)[:N_FAMILIES] == [FAMILY_SIZE] * N_FAMILIES


def test_a_quote_inside_a_longer_document_is_grouped() -> None:
    rng = random.Random(7)
    long_doc = [_line(rng) for _ in range(200)]
    quote = "\n".join(long_doc[50:70])  # 10% of the long one, but all of the short one
    other = "\n".join(_line(rng) for _ in range(30))
    shingles = [line_shingles(t) for t in ("\n".join(long_doc), quote, other)]
    assert containment(shingles[0], shingles[1])[0] == 1.0
    assert near_duplicate_groups(["\n".join(long_doc), quote, other], 0.3).group == [0, 0, 2]
    # Short and blank lines are not evidence: identical boilerplate alone groups nothing.
    assert len(line_shingles("pass\n\n  }\nelse:\n")) == 0


def test_group_split_keeps_groups_whole_and_falls_back_cleanly() -> None:
    keys = [f"doc{i}" for i in range(10)]
    # Singleton groups: exactly the per-document split (the golden split stays the same).
    assert split_by_group(keys, list(range(10)), 0.3, "t") == split_by_document(keys, 0.3, "t")
    groups = [0, 0, 0, 0, 0, 0, 6, 7, 8, 9]  # one big group of 6
    labels = split_by_group(keys, groups, 0.3, "t")
    is_val = [label == "val" for label in labels]
    assert sum(is_val) == 3 and not any(is_val[:6])  # too big for validation: all training
    assert set(labels) == {"train", "val"}  # no test share asked for: no test split
    assert split_by_group(keys, groups, 0.3, "t") == labels  # deterministic
    with pytest.raises(InputError, match="form only 1 group"):
        split_by_group(keys, [0] * 10, 0.3, "t")
    # Every group bigger than the share wanted: the smallest one is held out.
    assert split_by_group(keys, [0] * 7 + [7] * 3, 0.1, "t").count("val") == 3


def test_numbered_files_form_families() -> None:
    assert digit_family("stdlib/encodings/cp437.py") == digit_family("stdlib/encodings/cp1252.py")
    assert digit_family("stdlib/encodings/cp437.py") != digit_family("stdlib/codecs/cp437.py")
    keys = ["a/cp1.py", "a/cp22.py", "a/other.py", "b/cp3.py"]
    groups, info = document_groups(keys, ["x"] * 4, None, numbered_families=True)
    assert groups == [0, 0, 2, 3] and info["largest_group"] == 2


def test_window_hashes_match_a_direct_computation() -> None:
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 65536, size=300).astype(np.uint16)
    for window in (1, 5, 32, 33):
        hashes = window_hashes(tokens, window)
        assert len(hashes) == len(tokens) - window + 1
        for i in (0, 17, len(hashes) - 1):
            expected = 0
            for t in tokens[i : i + window]:
                expected = (expected * 0x100000001B3 + int(t) + 1) % 2**64
            assert int(hashes[i]) == expected
    assert len(window_hashes(tokens[:10], 32)) == 0


def test_overlap_counts_validation_windows_seen_in_training() -> None:
    rng = np.random.default_rng(1)
    train = rng.integers(0, 50_000, size=10_000).astype(np.uint16)
    fresh = rng.integers(0, 50_000, size=32 * 6).astype(np.uint16)
    # Validation: 4 windows copied from training (at odd offsets), then 6 fresh ones.
    val = np.concatenate([train[1001 : 1001 + 32 * 4], fresh])
    result = val_train_overlap(train.reshape(-1, 100), val, window=32, stride=32)
    assert result["n_val_windows"] == 10 and result["overlap"] == pytest.approx(0.4)
    assert val_train_overlap(train, fresh)["overlap"] == 0.0


def test_bad_threshold_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"near_dup_threshold=1\.5"):
        prepare_data({"name": "stdlib", "near_dup_threshold": 1.5}, {"name": "bpe"}, 16, tmp_path)
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_default_stdlib_overlap_is_under_two_percent(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # The default corpus and tokenizer (8192-token BPE), as the default run prepares them.
    cache_dir = tmp_path_factory.mktemp("stdlib_default")
    data = prepare_data({"name": "stdlib"}, {"name": "bpe"}, 128, cache_dir, eval_tokens=16384)
    overlap = data.stats["val_train_overlap_32"]
    assert 0.0 <= overlap < 0.02, overlap
    detail = data.stats["val_train_overlap_detail"]
    stream = data.stats["n_val_blocks"] * 129  # the whole packed validation split
    assert detail["n_val_windows"] == (stream - 32) // 32 + 1 and detail["stride"] == 32
    assert data.stats["split"]["largest_group"] > 1  # the codec tables were grouped
    # Stored with the entry, so a cached reload reports the same figure.
    marker = json.loads((data.cache_path / MARKER).read_text())
    assert marker["meta"]["val_train_overlap_32"] == overlap
    again = prepare_data({"name": "stdlib"}, {"name": "bpe"}, 128, cache_dir, eval_tokens=16384)
    assert not again.tokenized_now and again.stats["val_train_overlap_32"] == overlap
