"""What every corpus is: a fixed, ordered document collection with a deterministic split into
training, validation (periodic and final evaluation) and test (final evaluation only).

Two kinds of corpus feed ``prepare_data``:

- a **text corpus** (``TextCorpus``) yields documents as strings, with a stable key each (a
  path, a topic name, a dataset id); the tokenizer may be trained on its training split;
- a **token corpus** (``TokenCorpus``) yields streams of token ids that were tokenized
  elsewhere; the tokenizer is only loaded (the ids must be that tokenizer's), never trained.

Local text corpora (``LocalCorpus``) split by GROUP of near-duplicate documents (see
``gpt5_ablate.data.neardup``), so no copy of a validation file sits in the training set. Every
corpus has a cheap ``fingerprint`` that changes whenever its documents could have changed;
cache keys are built from it.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from datasets import Dataset

from gpt5_ablate.data.hashing import stable_hash
from gpt5_ablate.data.split import SPLIT_FORMAT, SPLIT_NAMES, document_groups, split_by_group
from gpt5_ablate.errors import ConfigError, InputError
from gpt5_ablate.registry import Component, ComponentConfig

SPLITS = SPLIT_NAMES  # ("train", "val", "test")


# ----------------------------------------------------------------------------------------------
# Checks shared by the config classes


def check_val_fraction(group_name: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ConfigError(
            f"data.val_fraction={value} is invalid for data={group_name}: it is the fraction of "
            "documents held out for validation and must lie strictly between 0 and 1 "
            "(e.g. 0.05)."
        )


def check_split_fractions(group_name: str, val_fraction: float, test_fraction: float) -> None:
    """Validation and test each take a share of the documents; training keeps the rest."""
    check_val_fraction(group_name, val_fraction)
    if not 0.0 < test_fraction < 1.0 or not val_fraction + test_fraction < 1.0:
        raise ConfigError(
            f"data.test_fraction={test_fraction} is invalid for data={group_name} with "
            f"data.val_fraction={val_fraction}: test_fraction is the fraction of documents held "
            "out for the final test evaluation; it must lie strictly between 0 and 1 and "
            "val_fraction + test_fraction must stay below 1 so training keeps documents "
            "(e.g. val_fraction=0.05 test_fraction=0.05)."
        )


def check_max_docs(group_name: str, key: str, value: int | None) -> None:
    if value is None or value > 0:
        return
    if value == 0:
        # Zero documents is a valid number but an empty corpus: nothing to train on.
        raise InputError(
            f"data.{key}=0 leaves data={group_name} with no documents, so there is nothing to "
            f"train on; set data.{key} to a positive number or to null (no limit)."
        )
    raise ConfigError(
        f"data.{key}={value} is invalid for data={group_name}: use a positive number of "
        "documents or null (no limit)."
    )


def check_patterns(group_name: str, key: str, patterns: list[str]) -> None:
    if not patterns:
        raise ConfigError(
            f"data.{key} is empty for data={group_name}: give at least one glob pattern, "
            f"e.g. data.{key}='[data/**/*.txt]'."
        )


@dataclass
class LocalCorpusConfig(ComponentConfig):
    """Settings every local text corpus shares: the split and the near-duplicate grouping."""

    val_fraction: float = 0.05  # share of documents held out for validation
    test_fraction: float = 0.05  # share held out for the final test evaluation, apart from val
    max_docs: int | None = None  # the first N documents of the fixed order; None: all
    # Documents sharing at least this share of the smaller one's distinctive lines go to the
    # same side of the split (1.0: only when all of them are shared); None: split per document.
    near_dup_threshold: float | None = 0.3
    # Also keep together files of one directory whose names differ only by digits (cp437.py,
    # cp860.py): generated families too different line by line to be caught above.
    group_numbered_files: bool = True

    def validate(self, ctx: Any = None) -> None:
        check_split_fractions(self.name, self.val_fraction, self.test_fraction)
        check_max_docs(self.name, "max_docs", self.max_docs)
        threshold = self.near_dup_threshold
        if threshold is not None and not 0.0 < threshold <= 1.0:
            raise ConfigError(
                f"data.near_dup_threshold={threshold} is invalid for data={self.name}: it is the "
                "share of a document's lines another must contain for the two to stay on one "
                "side of the split; use a value in (0, 1] (e.g. 0.3), or null to split document "
                "by document."
            )


# ----------------------------------------------------------------------------------------------
# Corpora


class Corpus(Component, ABC):
    """A corpus built from its typed config: ``Corpus(cfg, ctx)`` (``ctx`` may be None)."""

    has_text: ClassVar[bool] = True  # False: token ids only, no tokenizer can be trained on it

    def __init__(self, cfg: Any, ctx: Any = None) -> None:
        super().__init__(cfg, ctx)
        self._fingerprint: str | None = None

    @abstractmethod
    def check_available(self) -> None:
        """Raise InputError quickly when the documents cannot be obtained (e.g. offline)."""

    @abstractmethod
    def _fingerprint_payload(self) -> Any:
        """Everything that determines the documents, JSON-serialisable and cheap to compute."""

    def fingerprint(self) -> str:
        # Computed once: for the local corpora it lists (and stats) every file.
        if self._fingerprint is None:
            self._fingerprint = stable_hash(
                {
                    "corpus": self.name,
                    "payload": self._fingerprint_payload(),
                    "split_format": SPLIT_FORMAT,
                }
            )
        return self._fingerprint

    def split_info(self) -> dict[str, Any]:
        """Facts about how the split was made (group counts...), for the stats; after loading."""
        return {}


class TextCorpus(Corpus):
    """Documents as strings: a ``datasets.Dataset`` per split with ``key`` and ``text``."""

    def __init__(self, cfg: Any, ctx: Any = None) -> None:
        super().__init__(cfg, ctx)
        self._datasets: dict[str, Dataset] = {}

    @abstractmethod
    def _load(self, split: str) -> Dataset:
        """The split with ``key`` and ``text`` columns, in the fixed order."""

    def dataset(self, split: str) -> Dataset:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if split not in self._datasets:
            self.check_available()
            self._datasets[split] = self._load(split)
        return self._datasets[split]

    def documents(self, split: str) -> Iterator[str]:
        """The documents of ``split`` as strings, in the fixed order."""
        for batch in self.dataset(split).iter(batch_size=1000):
            yield from batch["text"]

    def keys(self, split: str) -> list[str]:
        """Document keys of ``split``, in the fixed order (the names of held-out documents)."""
        return list(self.dataset(split)["key"])


class LocalCorpus(TextCorpus):
    """Local files, small enough to hold in memory as ``(key, text)`` pairs, split by group."""

    cfg: LocalCorpusConfig

    def __init__(self, cfg: Any, ctx: Any = None) -> None:
        super().__init__(cfg, ctx)
        self._splits: dict[str, list[tuple[str, str]]] | None = None
        self._split_info: dict[str, Any] = {}

    def check_available(self) -> None:
        return None  # local files need no network; missing files are reported by validate()

    @abstractmethod
    def read_documents(self) -> list[tuple[str, str]]:
        """All ``(key, text)`` pairs in the fixed order, ``max_docs`` applied. ``key`` is stable."""

    def _split(self) -> dict[str, list[tuple[str, str]]]:
        if self._splits is None:
            docs = self.read_documents()
            keys = [key for key, _ in docs]
            start = time.perf_counter()
            groups, info = document_groups(
                keys,
                [text for _, text in docs],
                self.cfg.near_dup_threshold,
                self.cfg.group_numbered_files,
            )
            labels = split_by_group(
                keys, groups, self.cfg.val_fraction, f"data={self.name}", self.cfg.test_fraction
            )
            self._split_info = {**info, "split_seconds": round(time.perf_counter() - start, 3)}
            self._splits = {
                split: [doc for doc, label in zip(docs, labels, strict=True) if label == split]
                for split in SPLITS
            }
        return self._splits

    def keys(self, split: str) -> list[str]:
        return [key for key, _ in self._split()[split]]

    def split_info(self) -> dict[str, Any]:
        return dict(self._split_info)

    def _load(self, split: str) -> Dataset:
        docs = self._split()[split]
        return Dataset.from_dict({"key": [k for k, _ in docs], "text": [t for _, t in docs]})


class TokenCorpus(Corpus):
    """Pre-tokenized streams: ``(name, 1-D token array)`` per split, e.g. memory-mapped shards.

    Each stream is one "document" for the per-document statistics. The ids must come from the
    configured tokenizer, which is loaded, never trained.
    """

    has_text = False

    @abstractmethod
    def streams(self, split: str) -> list[tuple[str, np.ndarray]]:
        """The split's token streams, in the fixed order; raise InputError for a bad file."""
