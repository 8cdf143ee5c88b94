"""``data=tinystories`` / ``data=fineweb_edu``: Hugging Face datasets (internet needed once)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from datasets import Dataset

from gpt5_ablate.data.corpora.base import TextCorpus, check_max_docs, check_split_fractions
from gpt5_ablate.data.hashing import stable_int
from gpt5_ablate.data.hub import require_hub
from gpt5_ablate.data.registry import DATA
from gpt5_ablate.data.split import split_by_document
from gpt5_ablate.errors import ConfigError
from gpt5_ablate.registry import ComponentConfig


class HubCorpus(TextCorpus):
    """A corpus downloaded with ``datasets.load_dataset``; needs internet on the first run."""

    def __init__(self, cfg: Any, ctx: Any = None) -> None:
        super().__init__(cfg, ctx)
        self._hub_checked = False

    def check_available(self) -> None:
        if not self._hub_checked:
            require_hub(f"data={self.name} (dataset {self.cfg.path})", self.cfg.probe_timeout)
            self._hub_checked = True

    def _fingerprint_payload(self) -> Any:
        # The dataset id, revision and limits identify the documents; pin `revision` for
        # byte-exact reproducibility across upstream updates.
        return {"cfg": {k: v for k, v in asdict(self.cfg).items() if k != "probe_timeout"}}

    def _stream(
        self, split: str, limit: int, subset: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """The first ``limit`` rows of a hub split, streamed (no full download)."""
        from datasets import load_dataset

        stream = load_dataset(
            self.cfg.path, name=subset, split=split, streaming=True, revision=self.cfg.revision
        )
        yield from stream.take(limit)


@dataclass
class TinyStoriesConfig(ComponentConfig):
    name: str = "tinystories"
    path: str = "roneneldan/TinyStories"
    revision: str | None = None
    max_docs: int | None = 200_000  # training stories (the first N); None: all ~2.1M
    max_val_docs: int | None = None  # validation stories; None: all ~22k
    probe_timeout: float = 3.0  # seconds to wait for the hub before reporting it unreachable

    def validate(self, ctx: Any = None) -> None:
        check_max_docs(self.name, "max_docs", self.max_docs)
        check_max_docs(self.name, "max_val_docs", self.max_val_docs)


@DATA.register("tinystories", TinyStoriesConfig)
class TinyStoriesCorpus(HubCorpus):
    """roneneldan/TinyStories; its own train/validation splits are already split by story.

    The hub's validation split is halved for validation and test: a story whose key has an odd
    stable hash is a test story (deterministic, about half of them).
    """

    cfg: TinyStoriesConfig

    def _load(self, split: str) -> Dataset:
        hub_split = {"train": "train", "val": "validation", "test": "validation"}[split]
        limit = self.cfg.max_docs if split == "train" else self.cfg.max_val_docs
        if limit is None:
            from datasets import load_dataset

            full = load_dataset(self.cfg.path, split=hub_split, revision=self.cfg.revision)
            texts = full.select_columns(["text"])
            # Stories have no id: their position in the split names them.
            docs = texts.add_column("key", [f"{hub_split}/{i}" for i in range(len(texts))])
        else:
            texts = [row["text"] for row in self._stream(hub_split, limit)]
            docs = Dataset.from_dict(
                {"key": [f"{hub_split}/{i}" for i in range(len(texts))], "text": texts}
            )
        if split == "train":
            return docs
        want_test = split == "test"
        return docs.filter(lambda key: (stable_int(key) % 2 == 1) == want_test, input_columns="key")


@dataclass
class FineWebEduConfig(ComponentConfig):
    name: str = "fineweb_edu"
    path: str = "HuggingFaceFW/fineweb-edu"
    subset: str = "sample-10BT"
    revision: str | None = None
    max_docs: int = 20_000  # the first N documents of the stream (required: the set is 10B tokens)
    val_fraction: float = 0.05
    test_fraction: float = 0.05  # held out for the final test evaluation, apart from val
    probe_timeout: float = 3.0

    def validate(self, ctx: Any = None) -> None:
        check_split_fractions(self.name, self.val_fraction, self.test_fraction)
        if self.max_docs is None:
            raise ConfigError(
                "data.max_docs=null is invalid for data=fineweb_edu: the sample holds about 10B "
                "tokens; give a positive number of documents to stream (e.g. 20000)."
            )
        check_max_docs(self.name, "max_docs", self.max_docs)


@DATA.register("fineweb_edu", FineWebEduConfig)
class FineWebEduCorpus(HubCorpus):
    """The first ``max_docs`` documents of a FineWeb-Edu sample, split by document id.

    Web pages are not grouped by near-duplication (FineWeb is already deduplicated upstream).
    """

    cfg: FineWebEduConfig

    def __init__(self, cfg: FineWebEduConfig, ctx: Any = None) -> None:
        super().__init__(cfg, ctx)
        self._rows: list[tuple[str, str]] | None = None

    def _load(self, split: str) -> Dataset:
        if self._rows is None:
            # Streamed once and kept: both splits come from the same prefix of the stream.
            rows = self._stream("train", self.cfg.max_docs, subset=self.cfg.subset)
            self._rows = [(str(row.get("id", i)), row["text"]) for i, row in enumerate(rows)]
        keys = [key for key, _ in self._rows]
        labels = split_by_document(
            keys, self.cfg.val_fraction, f"data={self.name}", self.cfg.test_fraction
        )
        chosen = [row for row, label in zip(self._rows, labels, strict=True) if label == split]
        return Dataset.from_dict({"key": [k for k, _ in chosen], "text": [t for _, t in chosen]})
