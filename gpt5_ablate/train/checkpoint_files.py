"""The files of a checkpoint dir: their names, the manifest of their sizes and SHA-256s, the
checks for damage, and where a damaged checkpoint is moved aside (``step_N.damaged``)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path

log = logging.getLogger("gpt5_ablate")

WEIGHTS = "model.safetensors"
CONFIG = "config.yaml"
TOKENIZER = "tokenizer"
STATE_STEM = "trainer_state"
LEGACY_STATE = "trainer_state.pt"  # pickled: written by harness versions before the manifest
MANIFEST = "MANIFEST.json"
DCP_DIR = "dcp"
LATEST = "latest"
DAMAGED_SUFFIX = ".damaged"
FORMAT = 2
STEP_DIR = re.compile(r"step_\d+")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(directory: Path, step: int) -> None:
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)
    entries = {
        str(p.relative_to(directory)): {"size": p.stat().st_size, "sha256": _sha256(p)}
        for p in files
    }
    manifest = {"format": FORMAT, "step": step, "files": entries}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1))


def damage(checkpoint: Path, checksums: bool = True) -> list[str]:
    """What is wrong with a checkpoint dir (empty: intact). Checkpoints from before the
    manifest are checked for their weights file only. ``checksums=False`` checks that every
    file is there with its size (no reading: see ``quick_damage``)."""
    if not (checkpoint / WEIGHTS).is_file():
        return [f"{checkpoint / WEIGHTS} is missing"]
    manifest_path = checkpoint / MANIFEST
    if not manifest_path.is_file():
        return [] if (checkpoint / LEGACY_STATE).is_file() else [f"{manifest_path} is missing"]
    try:
        entries = json.loads(manifest_path.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return [f"{manifest_path} is unreadable"]
    problems = []
    for name, expected in entries.items():
        path = checkpoint / name
        if not path.is_file():
            problems.append(f"{path} is missing")
        elif path.stat().st_size != expected["size"]:
            problems.append(f"{path} has {path.stat().st_size} bytes, expected {expected['size']}")
        elif checksums and _sha256(path) != expected["sha256"]:
            problems.append(f"{path} does not match its checksum")
    return problems


def quick_damage(checkpoint: Path) -> list[str]:
    """``damage`` without the checksums: what a missing file or a cut-short copy (a crash, a
    full disk) leaves, found without reading the files."""
    return damage(checkpoint, checksums=False)


def step_dirs(root: Path) -> list[Path]:
    """Checkpoint dirs, oldest first (not those moved aside as damaged)."""
    return sorted(p for p in root.glob("step_*") if p.is_dir() and STEP_DIR.fullmatch(p.name))


def move_aside(checkpoint: Path, problems: list[str]) -> Path:
    """Rename a damaged checkpoint ``step_N.damaged`` (``.damaged-2``... if taken), with a
    warning: it stays for inspection, but is never resumed, counted or pruned."""
    target = checkpoint.with_name(checkpoint.name + DAMAGED_SUFFIX)
    n = 2
    while target.exists():
        target = checkpoint.with_name(f"{checkpoint.name}{DAMAGED_SUFFIX}-{n}")
        n += 1
    os.replace(checkpoint, target)
    log.warning(
        f"warning: checkpoint {checkpoint} is damaged ({'; '.join(problems[:3])}); moved it "
        f"aside to {target}. Delete it once inspected."
    )
    return target


def latest_checkpoint(root: Path) -> Path | None:
    """The checkpoint ``latest`` names, if it is there (no verification: for readers such as
    ``generate``; resume uses ``Checkpointer.resumable``)."""
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    path = root / pointer.read_text().strip()
    return path if (path / WEIGHTS).is_file() else None
