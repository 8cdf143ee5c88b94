"""Writing files so that a crash never leaves half of one behind, readable as the umask says."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def write_atomic(path: str | os.PathLike[str], data: str | bytes) -> None:
    """Replace ``path`` with ``data``: readers see the old content or the new, never a part.
    Written to a unique temporary name beside it, flushed to disk, then renamed over it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    payload = data.encode("utf-8") if isinstance(data, str) else data
    try:
        with open(tmp, "wb") as file:
            file.write(payload)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def current_umask() -> int:
    """The process's umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(root: str | os.PathLike[str]) -> None:
    """Give ``root`` and everything under it the permissions a newly created file or directory
    gets (0666 / 0777 less the umask). Some writers create private files (safetensors writes
    0600; ``tempfile.mkdtemp`` makes 0700 dirs that ``shutil.copytree`` copies as they are),
    which teammates on a shared filesystem could then not read."""
    mask = current_umask()
    root = Path(root)
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)
