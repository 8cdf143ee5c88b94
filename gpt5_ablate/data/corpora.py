"""Corpora: where the documents come from and how they split into train and validation.

A corpus is a fixed, ordered list of documents (strings). It is split BY DOCUMENT, so no file or
story contributes text to both the training and the validation set, and deterministically, so
every run (and every process) sees the same split. Each corpus also has a cheap ``fingerprint``
that changes whenever its documents could have changed; cache keys are built from it.

Options (``data=<name>``):

- ``stdlib``: the running interpreter's standard library sources plus the pydoc topic texts.
  Always available offline, about 12 MB of text; the default.
- ``text_files``: the user's own files, selected by glob patterns.
- ``tinystories`` / ``fineweb_edu``: Hugging Face datasets, downloaded (internet needed).
"""

from __future__ import annotations

import glob
import logging
import os
import sys
import sysconfig
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset

from gpt5_ablate.data.hashing import stable_hash, stable_int
from gpt5_ablate.data.hub import require_hub
from gpt5_ablate.data.registry import DATA
from gpt5_ablate.errors import ConfigError, InputError

log = logging.getLogger(__name__)

SPLITS = ("train", "val")


# ----------------------------------------------------------------------------------------------
# Shared helpers


def check_val_fraction(group_name: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ConfigError(
            f"data.val_fraction={value} is invalid for data={group_name}: it is the fraction of "
            "documents held out for validation and must lie strictly between 0 and 1 "
            "(e.g. 0.05)."
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


def split_by_document(keys: Sequence[str], val_fraction: float, what: str) -> list[bool]:
    """Mark each document as validation (True) or training (False).

    The ``round(val_fraction * n)`` documents whose key has the smallest stable hash go to
    validation. The choice depends only on the keys (never on Python's salted ``hash`` or on
    file-system order), holds out exactly the requested share, and never leaves either side
    empty once there are two documents.
    """
    n = len(keys)
    if n < 2:
        raise InputError(
            f"{what} has {n} document(s), but at least 2 are needed to hold out whole documents "
            "for validation; add more documents (or raise data.max_docs)."
        )
    n_val = min(n - 1, max(1, round(val_fraction * n)))
    order = sorted(range(n), key=lambda i: (stable_int(keys[i]), keys[i]))
    held_out = set(order[:n_val])
    return [i in held_out for i in range(n)]


# ----------------------------------------------------------------------------------------------
# Base classes


class Corpus(ABC):
    """An ordered document collection with a deterministic train/validation split."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self._datasets: dict[str, Dataset] = {}
        self._fingerprint: str | None = None

    @property
    def name(self) -> str:
        return str(self.cfg.name)

    @abstractmethod
    def validate(self) -> None:
        """Cheap checks of the config (no reading, no downloading); raise Config/InputError."""

    @abstractmethod
    def check_available(self) -> None:
        """Raise InputError quickly when the documents cannot be obtained (e.g. offline)."""

    @abstractmethod
    def _fingerprint_payload(self) -> Any:
        """Everything that determines the documents, JSON-serialisable and cheap to compute."""

    @abstractmethod
    def _load(self, split: str) -> Dataset:
        """The split as a ``datasets.Dataset`` with a ``text`` column, in the fixed order."""

    def fingerprint(self) -> str:
        # Computed once: for stdlib it walks the source tree.
        if self._fingerprint is None:
            self._fingerprint = stable_hash(
                {"corpus": self.name, "payload": self._fingerprint_payload()}
            )
        return self._fingerprint

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


class LocalCorpus(Corpus):
    """A corpus read from local files, small enough to hold in memory as ``(key, text)`` pairs."""

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self._splits: dict[str, list[tuple[str, str]]] | None = None

    def check_available(self) -> None:
        return None  # local files need no network; missing files are reported by validate()

    @abstractmethod
    def read_documents(self) -> list[tuple[str, str]]:
        """All ``(key, text)`` pairs in the fixed order, ``max_docs`` applied. ``key`` is stable."""

    def _split(self) -> dict[str, list[tuple[str, str]]]:
        if self._splits is None:
            docs = self.read_documents()
            is_val = split_by_document(
                [key for key, _ in docs], self.cfg.val_fraction, f"data={self.name}"
            )
            self._splits = {
                "train": [doc for doc, val in zip(docs, is_val, strict=True) if not val],
                "val": [doc for doc, val in zip(docs, is_val, strict=True) if val],
            }
        return self._splits

    def keys(self, split: str) -> list[str]:
        """Document keys of ``split`` (file paths, topic names), in the fixed order."""
        return [key for key, _ in self._split()[split]]

    def _load(self, split: str) -> Dataset:
        docs = self._split()[split]
        return Dataset.from_dict({"key": [k for k, _ in docs], "text": [t for _, t in docs]})


# ----------------------------------------------------------------------------------------------
# stdlib: the Python standard library


# Directories whose files are not library code (test suites, installed packages, build configs).
STDLIB_EXCLUDED_DIRS = frozenset(
    {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
)


def is_stdlib_excluded(relative: str) -> bool:
    """True for a path (relative to the stdlib root, POSIX separators) that is not library code."""
    *dirs, filename = relative.split("/")
    if any(d in STDLIB_EXCLUDED_DIRS or d.startswith("config-") for d in dirs):
        return True
    return (
        filename.startswith("test_")
        or filename.endswith("_test.py")
        or filename == "conftest.py"
        # Generated per machine (compiler flags, paths): would make the corpus machine-specific.
        or filename.startswith("_sysconfigdata")
        # The topics are added as separate documents, one per topic, from the imported module.
        or relative == "pydoc_data/topics.py"
    )


@dataclass
class StdlibConfig:
    name: str = "stdlib"
    val_fraction: float = 0.05
    max_docs: int | None = None  # first N documents in the fixed order; None: all
    include_pydoc_topics: bool = True


@DATA.register("stdlib", StdlibConfig)
class StdlibCorpus(LocalCorpus):
    """The interpreter's standard library ``*.py`` sources (sorted) then the pydoc topic texts."""

    cfg: StdlibConfig

    def validate(self) -> None:
        check_val_fraction(self.name, self.cfg.val_fraction)
        check_max_docs(self.name, "max_docs", self.cfg.max_docs)

    @staticmethod
    def root() -> Path:
        return Path(sysconfig.get_paths()["stdlib"])

    def source_files(self) -> list[str]:
        """Library source paths relative to :meth:`root`, POSIX style, sorted."""
        root = self.root()
        found: list[str] = []
        for directory, subdirs, filenames in os.walk(root):
            # Prune in place so os.walk never descends into test suites or site-packages.
            subdirs[:] = [d for d in subdirs if d not in STDLIB_EXCLUDED_DIRS]
            rel_dir = Path(directory).relative_to(root).as_posix()
            for filename in filenames:
                if not filename.endswith(".py"):
                    continue
                relative = filename if rel_dir == "." else f"{rel_dir}/{filename}"
                if not is_stdlib_excluded(relative):
                    found.append(relative)
        return sorted(found)

    def pydoc_topics(self) -> dict[str, str]:
        if not self.cfg.include_pydoc_topics:
            return {}
        try:
            from pydoc_data.topics import topics
        except ImportError:  # some distributions strip pydoc_data
            log.warning("pydoc_data.topics is not installed; the stdlib corpus has no topic texts")
            return {}
        return dict(topics)

    def _listing(self) -> list[tuple[str, Path | str]]:
        """``(key, file path or text)`` for every document in the fixed order, before max_docs."""
        root = self.root()
        # Empty files (many __init__.py) carry no text; dropping them here keeps max_docs exact.
        listing: list[tuple[str, Path | str]] = [
            (f"stdlib/{rel}", root / rel)
            for rel in self.source_files()
            if (root / rel).stat().st_size > 0
        ]
        topics = self.pydoc_topics()
        listing += [(f"pydoc_data.topics/{name}", topics[name]) for name in sorted(topics)]
        if self.cfg.max_docs is not None:
            listing = listing[: self.cfg.max_docs]
        return listing

    def _fingerprint_payload(self) -> Any:
        # The Python version pins the library; sizes catch a patched install. No file is read.
        files = [
            (key, source.stat().st_size if isinstance(source, Path) else stable_hash(source))
            for key, source in self._listing()
        ]
        return {"cfg": asdict(self.cfg), "python": sys.version, "files": files}

    def read_documents(self) -> list[tuple[str, str]]:
        docs = []
        for key, source in self._listing():
            if isinstance(source, Path):
                # The library is UTF-8 (PEP 3120); "replace" only guards against a damaged file.
                source = source.read_bytes().decode("utf-8", errors="replace")
            docs.append((key, source))
        return docs


# ----------------------------------------------------------------------------------------------
# text_files: the user's own files


@dataclass
class TextFilesConfig:
    name: str = "text_files"
    # Glob patterns ("**" recurses); relative patterns are resolved against the working directory.
    patterns: list[str] = field(default_factory=lambda: ["data/**/*.txt"])
    val_fraction: float = 0.05
    max_docs: int | None = None
    # None: each file is one document. Otherwise each file is cut into documents at this string.
    doc_separator: str | None = None
    encoding: str = "utf-8"
    encoding_errors: str = "strict"  # "replace" to accept files with invalid bytes


@DATA.register("text_files", TextFilesConfig)
class TextFilesCorpus(LocalCorpus):
    """Local text files matched by glob patterns; one document per file (or per separator)."""

    cfg: TextFilesConfig

    def validate(self) -> None:
        check_val_fraction(self.name, self.cfg.val_fraction)
        check_max_docs(self.name, "max_docs", self.cfg.max_docs)
        if not self.cfg.patterns:
            raise ConfigError(
                "data.patterns is empty for data=text_files: give at least one glob pattern, "
                "e.g. data.patterns='[notes/**/*.md]'."
            )
        if self.cfg.doc_separator == "":
            raise ConfigError("data.doc_separator='' is invalid: use null or a non-empty string.")
        self.files()  # an empty match is a user error worth reporting before anything else

    def files(self) -> list[Path]:
        """Matched files, sorted and de-duplicated; InputError when a pattern matches nothing."""
        matched: dict[str, Path] = {}
        for pattern in self.cfg.patterns:
            paths = [
                Path(p)
                for p in glob.glob(os.path.expanduser(pattern), recursive=True)
                if os.path.isfile(p)
            ]
            if not paths:
                raise InputError(
                    f"data.patterns entry {pattern!r} matches no files (resolved from the working "
                    f"directory {os.getcwd()}); check the path, quote the pattern on the command "
                    "line so the shell does not expand it, and use '**' to search sub-directories."
                )
            for path in paths:
                matched.setdefault(str(path.resolve()), path)
        return [matched[key] for key in sorted(matched)]

    def _fingerprint_payload(self) -> Any:
        # Size and modification time stand in for the content, so a cache hit reads no file.
        stats = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in self.files()]
        return {"cfg": asdict(self.cfg), "files": stats}

    def read_documents(self) -> list[tuple[str, str]]:
        docs: list[tuple[str, str]] = []
        for path in self.files():
            try:
                text = path.read_text(encoding=self.cfg.encoding, errors=self.cfg.encoding_errors)
            except UnicodeDecodeError as exc:
                raise InputError(
                    f"{path} is not valid {self.cfg.encoding} ({exc.reason} at byte {exc.start}); "
                    "set data.encoding to the file's encoding or data.encoding_errors=replace."
                ) from exc
            if self.cfg.doc_separator is None:
                pieces = [text]
            else:
                pieces = text.split(self.cfg.doc_separator)
            docs += [(f"{path}#{i}", piece) for i, piece in enumerate(pieces) if piece.strip()]
            if self.cfg.max_docs is not None and len(docs) >= self.cfg.max_docs:
                docs = docs[: self.cfg.max_docs]
                break
        if not docs:
            raise InputError(
                f"data=text_files found only empty documents in {len(self.files())} file(s) "
                f"matched by {list(self.cfg.patterns)}."
            )
        return docs


# ----------------------------------------------------------------------------------------------
# Hugging Face hub datasets


class HubCorpus(Corpus):
    """A corpus downloaded with ``datasets.load_dataset``; needs internet on the first run."""

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
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
class TinyStoriesConfig:
    name: str = "tinystories"
    path: str = "roneneldan/TinyStories"
    revision: str | None = None
    max_docs: int | None = 200_000  # training stories (the first N); None: all ~2.1M
    max_val_docs: int | None = None  # validation stories; None: all ~22k
    probe_timeout: float = 3.0  # seconds to wait for the hub before reporting it unreachable


@DATA.register("tinystories", TinyStoriesConfig)
class TinyStoriesCorpus(HubCorpus):
    """roneneldan/TinyStories; its own train/validation splits are already split by story."""

    cfg: TinyStoriesConfig

    def validate(self) -> None:
        check_max_docs(self.name, "max_docs", self.cfg.max_docs)
        check_max_docs(self.name, "max_val_docs", self.cfg.max_val_docs)

    def _load(self, split: str) -> Dataset:
        hub_split = {"train": "train", "val": "validation"}[split]
        limit = self.cfg.max_docs if split == "train" else self.cfg.max_val_docs
        if limit is None:
            from datasets import load_dataset

            full = load_dataset(self.cfg.path, split=hub_split, revision=self.cfg.revision)
            return full.select_columns(["text"])
        return Dataset.from_dict({"text": [row["text"] for row in self._stream(hub_split, limit)]})


@dataclass
class FineWebEduConfig:
    name: str = "fineweb_edu"
    path: str = "HuggingFaceFW/fineweb-edu"
    subset: str = "sample-10BT"
    revision: str | None = None
    max_docs: int = 20_000  # the first N documents of the stream (required: the set is 10B tokens)
    val_fraction: float = 0.05
    probe_timeout: float = 3.0


@DATA.register("fineweb_edu", FineWebEduConfig)
class FineWebEduCorpus(HubCorpus):
    """The first ``max_docs`` documents of a FineWeb-Edu sample, split by document id."""

    cfg: FineWebEduConfig

    def __init__(self, cfg: FineWebEduConfig) -> None:
        super().__init__(cfg)
        self._rows: list[tuple[str, str]] | None = None

    def validate(self) -> None:
        check_val_fraction(self.name, self.cfg.val_fraction)
        if self.cfg.max_docs is None:
            raise ConfigError(
                "data.max_docs=null is invalid for data=fineweb_edu: the sample holds about 10B "
                "tokens; give a positive number of documents to stream (e.g. 20000)."
            )
        check_max_docs(self.name, "max_docs", self.cfg.max_docs)

    def _load(self, split: str) -> Dataset:
        if self._rows is None:
            # Streamed once and kept: both splits come from the same prefix of the stream.
            rows = self._stream("train", self.cfg.max_docs, subset=self.cfg.subset)
            self._rows = [(str(row.get("id", i)), row["text"]) for i, row in enumerate(rows)]
        keys = [key for key, _ in self._rows]
        is_val = split_by_document(keys, self.cfg.val_fraction, f"data={self.name}")
        want_val = split == "val"
        texts = [text for (_, text), val in zip(self._rows, is_val, strict=True) if val == want_val]
        return Dataset.from_dict({"text": texts})
