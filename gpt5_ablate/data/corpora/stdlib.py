"""``data=stdlib``: the running interpreter's standard library sources plus the pydoc topics.

Always available offline, about 12 MB of text; the default corpus.
"""

from __future__ import annotations

import logging
import os
import sys
import sysconfig
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gpt5_ablate.data.corpora.base import LocalCorpus, LocalCorpusConfig
from gpt5_ablate.data.hashing import stable_hash
from gpt5_ablate.data.registry import DATA

log = logging.getLogger(__name__)

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
class StdlibConfig(LocalCorpusConfig):
    name: str = "stdlib"
    include_pydoc_topics: bool = True  # each pydoc topic (reference text) is one document


@DATA.register("stdlib", StdlibConfig)
class StdlibCorpus(LocalCorpus):
    """The interpreter's standard library ``*.py`` sources (sorted) then the pydoc topic texts."""

    cfg: StdlibConfig

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
