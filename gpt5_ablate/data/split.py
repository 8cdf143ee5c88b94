"""Deterministic train/validation splits: by document, or by group of near-duplicate documents.

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
# tokenizers and blocks cached for the old split are not reused.
SPLIT_FORMAT = 2
_DIGITS = re.compile(r"\d+")


def _hash_order(keys: Sequence[str]) -> list[int]:
    return sorted(range(len(keys)), key=lambda i: (stable_int(keys[i]), keys[i]))


def _check_enough(n: int, what: str) -> None:
    if n < 2:
        raise InputError(
            f"{what} has {n} document(s), but at least 2 are needed to hold out whole documents "
            "for validation; add more documents (or raise data.max_docs)."
        )


def split_by_document(keys: Sequence[str], val_fraction: float, what: str) -> list[bool]:
    """Mark each document as validation (True) or training (False).

    The ``round(val_fraction * n)`` documents whose key has the smallest stable hash go to
    validation: exactly the requested share, and never an empty side once there are two.
    """
    n = len(keys)
    _check_enough(n, what)
    n_val = min(n - 1, max(1, round(val_fraction * n)))
    held_out = set(_hash_order(keys)[:n_val])
    return [i in held_out for i in range(n)]


def split_by_group(
    keys: Sequence[str], groups: Sequence[int], val_fraction: float, what: str
) -> list[bool]:
    """Like :func:`split_by_document`, but every group goes wholly to one side.

    ``groups[i]`` labels document i's group. Groups are visited in the stable-hash order of
    their key (the smallest member key) and taken into validation while they fit in the
    ``round(val_fraction * n)`` documents wanted; a group too big to fit stays in training, so
    validation never overshoots. With every group a single document this is exactly
    :func:`split_by_document`.
    """
    n = len(keys)
    _check_enough(n, what)
    members: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    if len(members) < 2:
        raise InputError(
            f"{what}: all {n} documents are near-duplicates of each other (one group), so no "
            "validation document can be held out without its copies in training; add "
            "different documents, or raise data.near_dup_threshold (1.0: only exact copies of "
            "each other's lines) or set it to null to split document by document."
        )
    group_keys = {g: min(keys[i] for i in idx) for g, idx in members.items()}
    order = sorted(members, key=lambda g: (stable_int(group_keys[g]), group_keys[g]))
    wanted = min(n - 1, max(1, round(val_fraction * n)))
    is_val = [False] * n
    taken = 0
    for g in order:
        if taken + len(members[g]) <= wanted:
            for i in members[g]:
                is_val[i] = True
            taken += len(members[g])
        if taken == wanted:
            break
    if taken == 0:
        # Every group is bigger than the share wanted: hold out the smallest one instead.
        g = min(order, key=lambda g: len(members[g]))
        for i in members[g]:
            is_val[i] = True
    return is_val


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
