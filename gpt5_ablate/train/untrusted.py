"""Pickle files a run may meet: the trainer state of checkpoints from before the pickle-free
format (loaded only when the user trusts them) and pickle files in a checkpoint dir (refused).
Unpickling runs whatever code the file contains; nothing here unpickles without the opt-in."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from gpt5_ablate.errors import InputError

log = logging.getLogger("gpt5_ablate")
TRUST_OPTION = "trainer.trust_checkpoint=true"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt")


def load_legacy_pickle(path: Path, trusted: bool) -> dict[str, Any]:
    """A trainer state pickled by ``torch.save`` (checkpoints from before the pickle-free
    format). Unpickling runs whatever code the file contains, so this refuses (``InputError``)
    unless the user said they trust the checkpoint (``trainer.trust_checkpoint=true``)."""
    path = Path(path)
    if not trusted:
        raise InputError(
            f"{path} is a trainer state in the old pickle format (torch.save). Loading a pickle "
            "file runs any code that whoever wrote it put inside, so it is not loaded by default. "
            f"If you wrote this checkpoint yourself or trust where it came from, resume with "
            f"{TRUST_OPTION} (the next checkpoint is then written in the pickle-free format: "
            "trainer_state.json + trainer_state.safetensors); otherwise start afresh with "
            "trainer.resume=false or delete the checkpoint."
        )
    log.warning(f"Loading {path} with pickle ({TRUST_OPTION}): it can run code it contains.")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(state, dict):
        raise InputError(f"{path} holds a {type(state).__name__}, not a trainer state dict.")
    return state


def pickle_files(directory: Path, ignore: Iterable[str] = ()) -> list[Path]:
    """Files under ``directory`` (recursively) whose suffix says pickle/torch.save format."""
    ignored = set(ignore)
    return sorted(
        p
        for p in Path(directory).rglob("*")
        if p.suffix.lower() in PICKLE_SUFFIXES and p.name not in ignored and p.is_file()
    )


def refuse_pickle_files(directory: Path, ignore: Iterable[str] = ()) -> None:
    """Raise ``InputError`` if ``directory`` holds pickle-format files (``*.pt``, ``*.pth``,
    ``*.bin``, ``*.pkl``, ``*.pickle``, ``*.ckpt``), except those named in ``ignore``."""
    found = pickle_files(directory, ignore)
    if found:
        shown = ", ".join(str(p) for p in found[:5]) + (" ..." if len(found) > 5 else "")
        raise InputError(
            f"{directory} holds pickle-format file(s): {shown}. Loading pickle files can run "
            "arbitrary code, and this harness reads checkpoints only as safetensors, JSON and "
            "YAML. Point at a checkpoint directory written by gpt5_ablate (model.safetensors, "
            "config.yaml, tokenizer/), or remove those files if you know where they came from."
        )
