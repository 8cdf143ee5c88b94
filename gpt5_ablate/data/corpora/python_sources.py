"""``data=python_sources``: the ``.py`` files of the packages installed in this interpreter.

A large, offline code corpus: about 100-350 MB on a typical ML environment when every package
is taken. Packages are named by their import name (``yaml``, not ``PyYAML``); files are read in
a fixed sorted order and split by group of near-duplicates, since site-packages is full of
vendored and generated copies.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gpt5_ablate.data.corpora.base import LocalCorpus, LocalCorpusConfig
from gpt5_ablate.data.registry import DATA
from gpt5_ablate.errors import ConfigError, InputError

SKIPPED_DIRS = frozenset({"__pycache__"})
SHOWN_CHOICES = 30  # installed packages listed in the error message for an unknown one


def site_roots() -> list[Path]:
    """The interpreter's purelib and platlib directories (often the same one), existing only."""
    paths = sysconfig.get_paths()
    roots: list[Path] = []
    for key in ("purelib", "platlib"):
        root = Path(paths[key])
        if root.is_dir() and root not in roots:
            roots.append(root)
    return roots


def installed_packages() -> dict[str, Path]:
    """Top-level import name -> its package directory or single-module file, sorted by name.

    One directory listing per root, no file read: cheap enough for ``validate``.
    """
    found: dict[str, Path] = {}
    for root in site_roots():
        for entry in sorted(os.scandir(root), key=lambda e: e.name):
            name = entry.name
            if entry.is_dir() and name.isidentifier() and name not in SKIPPED_DIRS:
                found.setdefault(name, Path(entry.path))
            elif entry.is_file() and name.endswith(".py") and name[:-3].isidentifier():
                found.setdefault(name[:-3], Path(entry.path))
    return dict(sorted(found.items()))


def _distribution_hint(name: str) -> str:
    """For a distribution name given instead of an import name: the import names it provides."""
    from importlib.metadata import packages_distributions

    provided = sorted(
        module
        for module, dists in packages_distributions().items()
        if any(d.lower() == name.lower() for d in dists)
    )
    if not provided:
        return ""
    return f" ({name!r} is a distribution; it installs {', '.join(provided)})"


@dataclass
class PythonSourcesConfig(LocalCorpusConfig):
    name: str = "python_sources"
    packages: list[str] = field(default_factory=list)  # import names; empty: every package
    # Skip bigger files: generated tables and bundled copies, one of which could fill a corpus.
    max_file_bytes: int | None = 1_000_000

    def validate(self, ctx: Any = None) -> None:
        super().validate(ctx)
        if self.max_file_bytes is not None and self.max_file_bytes <= 0:
            raise ConfigError(
                f"data.max_file_bytes={self.max_file_bytes} is invalid for data={self.name}: "
                "use a positive number of bytes (e.g. 1000000) or null (no limit)."
            )
        installed = installed_packages()
        for package in self.packages:
            if package not in installed:
                names = list(installed)
                shown = ", ".join(names[:SHOWN_CHOICES])
                more = (
                    f" and {len(names) - SHOWN_CHOICES} more" if len(names) > SHOWN_CHOICES else ""
                )
                raise ConfigError(
                    f"data.packages entry {package!r} is not an installed package of this "
                    f"interpreter ({sys.executable}){_distribution_hint(package)}: give top-level "
                    f"import names found in {', '.join(map(str, site_roots()))}, or an empty "
                    f"list for all of them. Installed: {shown}{more}."
                )


@DATA.register("python_sources", PythonSourcesConfig)
class PythonSourcesCorpus(LocalCorpus):
    """Every ``.py`` file of the chosen packages, sorted by path relative to site-packages."""

    cfg: PythonSourcesConfig

    def source_files(self) -> list[tuple[str, Path]]:
        """``(key, path)`` of every file taken, in the fixed order, ``max_docs`` applied."""
        installed = installed_packages()
        chosen = sorted(set(self.cfg.packages)) if self.cfg.packages else list(installed)
        limit = self.cfg.max_file_bytes
        files: list[tuple[str, Path]] = []
        for package in chosen:
            top = installed[package]
            root = top.parent
            candidates = [top] if top.is_file() else self._walk(top)
            for path in candidates:
                size = path.stat().st_size
                # Empty files (many __init__.py) carry no text; huge ones are generated.
                if size == 0 or (limit is not None and size > limit):
                    continue
                files.append((path.relative_to(root).as_posix(), path))
                if self.cfg.max_docs is not None and len(files) >= self.cfg.max_docs:
                    return files
        return files

    @staticmethod
    def _walk(directory: Path) -> list[Path]:
        found: list[Path] = []
        for current, subdirs, filenames in os.walk(directory):
            subdirs[:] = sorted(d for d in subdirs if d not in SKIPPED_DIRS)
            found += [Path(current) / f for f in sorted(filenames) if f.endswith(".py")]
        return sorted(found)

    def _fingerprint_payload(self) -> Any:
        # Size and modification time stand in for the content, so a cache hit reads no file.
        files = [(key, p.stat().st_size, p.stat().st_mtime_ns) for key, p in self.source_files()]
        return {"cfg": asdict(self.cfg), "python": sys.version, "files": files}

    def read_documents(self) -> list[tuple[str, str]]:
        docs = [
            # Source files are UTF-8 by default (PEP 3120); "replace" guards against the rare
            # file declaring another encoding.
            (key, path.read_bytes().decode("utf-8", errors="replace"))
            for key, path in self.source_files()
        ]
        if not docs:
            raise InputError(
                f"data=python_sources found no non-empty .py file in the packages "
                f"{self.cfg.packages or 'installed'} (data.max_file_bytes={self.cfg.max_file_bytes})."
            )
        return docs
