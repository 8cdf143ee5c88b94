"""Deterministic train/validation/test splits: by document, or by group of near-duplicate documents.

Every choice depends only on the document keys (through ``stable_int``, never Python's salted
``hash`` or file-system order), so every run and every process sees the same split.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from gpt5_ablate.data.hashing import stable_int
from gpt5_ablate.data.neardup import UnionFind, near_duplicate_groups
from gpt5_ablate.errors import InputError

# Part of every corpus fingerprint: bump it when the grouping or the split rule changes, so the
# tokenizers and blocks cached for the old split are not reused. 3: a test split apart from
# validation.
SPLIT_FORMAT = 3
SPLIT_NAMES = ("train", "val", "test")
_DIGITS = re.compile(r"\d+")


def _check_enough(n: int, needed: int, what: str) -> None:
    if n < needed:
        raise InputError(
            f"{what} has {n} document(s), but at least {needed} are needed to hold out whole "
            "documents for validation and test; add more documents (or raise data.max_docs)."
        )


def _wanted(fraction: float, n: int, most: int) -> int:
    """``round(fraction * n)`` documents, at least one, at most ``most``; 0 for no share."""
    return min(most, max(1, round(fraction * n))) if fraction > 0 else 0


def split_by_document(
    keys: Sequence[str], val_fraction: float, what: str, test_fraction: float = 0.0
) -> list[str]:
    """Label each document ``"train"``, ``"val"`` or ``"test"``.

    The ``round(val_fraction * n)`` documents whose key has the smallest stable hash go to
    validation, the next ``round(test_fraction * n)`` to test: exactly the requested shares,
    and never an empty split.
    """
    return split_by_group(keys, list(range(len(keys))), val_fraction, what, test_fraction)


def split_by_group(
    keys: Sequence[str],
    groups: Sequence[int],
    val_fraction: float,
    what: str,
    test_fraction: float = 0.0,
) -> list[str]:
    """Like :func:`split_by_document`, but every group goes wholly to one split.

    ``groups[i]`` labels document i's group. Groups are visited in the stable-hash order of
    their key (the smallest member key) and taken into validation while they fit in the
    ``round(val_fraction * n)`` documents wanted; a group too big to fit is passed over, so
    validation never overshoots. Test is then filled the same way from the groups left, so
    adding a test split leaves validation as it was (up to the last groups in hash order, kept
    free so no split is empty). With every group a single document this is exactly
    :func:`split_by_document`.
    """
    n = len(keys)
    n_splits = 3 if test_fraction > 0 else 2
    _check_enough(n, n_splits, what)
    members: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    if len(members) < n_splits:
        raise InputError(
            f"{what}: its {n} documents form only {len(members)} group(s) of near-duplicates, so "
            f"{n_splits - 1} held-out split(s) cannot be made without copies in training; add "
            "different documents, or raise data.near_dup_threshold (1.0: only exact copies of "
            "each other's lines) or set it to null to split document by document."
        )
    group_keys = {g: min(keys[i] for i in idx) for g, idx in members.items()}
    order = sorted(members, key=lambda g: (stable_int(group_keys[g]), group_keys[g]))
    label = ["train"] * n
    n_val = _wanted(val_fraction, n, n - n_splits + 1)
    n_test = _wanted(test_fraction, n, n - n_val - 1)
    for split, wanted, reserved in (("val", n_val, n_splits - 1), ("test", n_test, 1)):
        if wanted == 0:
            continue
        # The last free groups in hash order stay free for the splits still to be filled
        # (training, and test after validation), so no split ends up empty.
        free = [g for g in order if label[members[g][0]] == "train"]
        candidates = free[: len(free) - reserved]
        taken = 0
        for g in candidates:
            if taken + len(members[g]) <= wanted:
                for i in members[g]:
                    label[i] = split
                taken += len(members[g])
            if taken == wanted:
                break
        if taken == 0:
            # Every group is bigger than the share wanted: hold out the smallest one instead.
            g = min(candidates, key=lambda g: len(members[g]))
            for i in members[g]:
                label[i] = split
    return label


def digit_family(key: str) -> str:
    """The key with every run of digits in its file name replaced by ``#``: files of one
    directory that differ only by numbers (``cp437.py``, ``cp860.py``) share a family."""
    directory, _, filename = key.rpartition("/")
    return f"{directory}/{_DIGITS.sub('#', filename)}"


def document_groups(
    keys: Sequence[str], texts: Sequence[str], threshold: float | None, numbered_families: bool
) -> tuple[list[int], dict[str, Any]]:
    """Group labels for :func:`split_by_group`, and facts about the groups for the stats.

    Near-duplicates (line containment >= ``threshold``; None: none) and, when
    ``numbered_families``, files whose names differ only by digits end up in one group.
    """
    sets = UnionFind(len(keys))
    n_pairs = 0
    if threshold is not None:
        found = near_duplicate_groups(texts, threshold)
        n_pairs = found.n_pairs
        for i, g in enumerate(found.group):
            sets.union(i, g)
    if numbered_families:
        first: dict[str, int] = {}
        for i, key in enumerate(keys):
            sets.union(i, first.setdefault(digit_family(key), i))
    groups = sets.components()
    sizes: dict[int, int] = {}
    for g in groups:
        sizes[g] = sizes.get(g, 0) + 1
    info = {
        "n_groups": len(sizes),
        "largest_group": max(sizes.values(), default=0),
        "n_docs_in_shared_groups": sum(size for size in sizes.values() if size > 1),
        "near_dup_pairs": n_pairs,
    }
    return groups, info
