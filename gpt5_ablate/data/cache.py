"""Crash- and race-safe cache entries: one directory per key, complete or absent.

An entry is built in a temporary directory next to its final place, finished by writing a
marker file (listing every file and its size) LAST, and then renamed into place in one
``os.replace``. Readers trust an entry only when the marker is there and every listed file has
its recorded size, so a build killed half-way, a truncated file or a deleted marker all read as
"absent" and the entry is rebuilt. A ``FileLock`` per key makes concurrent processes that need
the same entry build it once: the others wait, then load what the first one wrote.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock, Timeout

from gpt5_ablate.errors import InputError
from gpt5_ablate.files import follow_umask

log = logging.getLogger(__name__)

MARKER = "COMPLETE.json"
T = TypeVar("T")


class CacheDamagedError(Exception):
    """A cache entry exists but its content is unusable (raised by loaders, handled here)."""


def _fsync(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def write_marker(directory: Path, meta: dict[str, Any]) -> None:
    """Record every file's size, flushed to disk, then the marker itself (the commit point)."""
    files = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            _fsync(path)
            files[path.relative_to(directory).as_posix()] = path.stat().st_size
    marker = directory / MARKER
    marker.write_text(json.dumps({"files": files, "meta": meta}, indent=2, default=str))
    _fsync(marker)


def read_marker(directory: Path) -> dict[str, Any]:
    """The metadata of a complete entry; CacheDamagedError when files are missing or resized."""
    try:
        record = json.loads((directory / MARKER).read_text())
        files, meta = record["files"], record["meta"]
    except FileNotFoundError as exc:
        raise CacheDamagedError(f"no {MARKER} (an interrupted build)") from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CacheDamagedError(f"unreadable {MARKER}: {exc}") from exc
    for name, size in files.items():
        path = directory / name
        if not path.is_file():
            raise CacheDamagedError(f"{name} is missing")
        if path.stat().st_size != size:
            raise CacheDamagedError(f"{name} has {path.stat().st_size} bytes, expected {size}")
    return meta


def _try_load(
    directory: Path, load: Callable[[Path, dict[str, Any]], T], report: bool = True
) -> T | None:
    if not directory.exists():
        return None
    try:
        return load(directory, read_marker(directory))
    except (CacheDamagedError, OSError, ValueError) as exc:
        if report:
            log.warning(
                "cache entry %s is incomplete or damaged (%s); rebuilding it", directory, exc
            )
        return None


def _temp_dirs(target: Path) -> list[Path]:
    return sorted(target.parent.glob(f".{target.name}.tmp-*"))


def load_or_build(
    target: Path,
    build: Callable[[Path], dict[str, Any]],
    load: Callable[[Path, dict[str, Any]], T],
) -> tuple[T, bool]:
    """Load the entry at ``target``, building it first when absent or damaged.

    ``build(tmp_dir)`` writes the files and returns metadata (stored in the marker);
    ``load(dir, meta)`` opens them and raises CacheDamagedError (or OSError/ValueError) when they
    are unusable. Returns ``(loaded, built_now)``.
    """
    loaded = _try_load(target, load)
    if loaded is not None:
        return loaded, False

    target.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(target) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("waiting for another process that is building %s", target)
        lock.acquire()
    try:
        # Whoever held the lock before us may have just finished this very entry. (Damage was
        # reported by the first look; an entry still damaged now is rebuilt without more noise.)
        loaded = _try_load(target, load, report=False)
        if loaded is not None:
            return loaded, False
        # We hold the lock, so nobody else is building this key: whatever is here (a damaged
        # entry, temp dirs of killed builds) is garbage.
        for stale in [target, *_temp_dirs(target)]:
            if stale.exists():
                shutil.rmtree(stale)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            meta = build(tmp)
            write_marker(tmp, meta)
            follow_umask(tmp)  # mkdtemp made it 0700: a shared cache_dir is readable by all
            os.replace(tmp, target)  # atomic: readers see no entry or a complete one
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    finally:
        lock.release()

    loaded = _try_load(target, load)
    if loaded is None:
        raise InputError(
            f"The cache entry {target} was just written but cannot be read back; check the free "
            "disk space and permissions of cache_dir, delete that directory and retry."
        )
    return loaded, True
