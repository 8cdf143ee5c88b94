"""Stable hashes for cache keys and document splits.

Python's built-in ``hash`` is salted per process, so anything that must agree between runs (or
between two processes building the same cache) goes through blake2b instead.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hex digest of a JSON-serialisable object; dict key order does not matter."""
    payload = json.dumps(obj, sort_keys=True, default=str).encode("utf-8")
    return hashlib.blake2b(payload, digest_size=16).hexdigest()[:length]


def stable_int(text: str) -> int:
    """A 64-bit integer derived from ``text``, identical in every process and run."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


def hash_files(directory: Path, exclude: tuple[str, ...] = ()) -> str:
    """Digest of every file's name and content in ``directory`` (not recursive), in sorted order."""
    digest = hashlib.blake2b(digest_size=16)
    for path in sorted(directory.iterdir()):
        if not path.is_file() or path.name in exclude:
            continue
        digest.update(path.name.encode("utf-8") + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
