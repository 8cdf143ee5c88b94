"""Checkpoints: written atomically, so a crash mid-write never leaves a corrupt "latest".

Layout of a run dir:
    checkpoints/step_0000200/model.safetensors     weights (safetensors, tied tensors once)
                            /config.yaml           the resolved config
                            /tokenizer/            tokenizer files (PreTrainedTokenizerFast)
                            /trainer_state.pt      optimizers, schedulers, grad scaler, RNG, data position
    checkpoints/latest                             name of the newest complete checkpoint

A checkpoint is built in a temporary directory and renamed into place; ``latest`` is replaced
with ``os.replace`` only after that, so readers see either the old or the new checkpoint.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_model, save_model

from gpt5_ablate.errors import InputError

WEIGHTS = "model.safetensors"
CONFIG = "config.yaml"
TOKENIZER = "tokenizer"
TRAINER_STATE = "trainer_state.pt"


def rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    checkpoint_root: Path,
    step: int,
    model: torch.nn.Module,
    config: DictConfig,
    tokenizer_dir: Path,
    trainer_state: dict[str, Any] | None,
    keep: int = 2,
) -> Path:
    checkpoint_root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:07d}"
    final = checkpoint_root / name
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=checkpoint_root))
    try:
        save_model(_unwrap(model), str(tmp / WEIGHTS))
        (tmp / CONFIG).write_text(OmegaConf.to_yaml(config, resolve=True))
        shutil.copytree(tokenizer_dir, tmp / TOKENIZER)
        if trainer_state is not None:
            torch.save(trainer_state, tmp / TRAINER_STATE)
        if final.exists():  # a re-save of the same step (e.g. the final one after a resume)
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _write_atomic(checkpoint_root / "latest", name)
    _prune(checkpoint_root, keep, protect=name)
    return final


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _prune(checkpoint_root: Path, keep: int, protect: str) -> None:
    if keep <= 0:
        return
    steps = sorted(p for p in checkpoint_root.glob("step_*") if p.is_dir())
    for old in steps[:-keep]:
        if old.name != protect:
            shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(checkpoint_root: Path) -> Path | None:
    pointer = checkpoint_root / "latest"
    if not pointer.exists():
        return None
    path = checkpoint_root / pointer.read_text().strip()
    return path if (path / WEIGHTS).exists() else None


def load_trainer_state(checkpoint: Path) -> dict[str, Any]:
    return torch.load(checkpoint / TRAINER_STATE, map_location="cpu", weights_only=False)


def load_weights(model: torch.nn.Module, checkpoint: Path) -> None:
    load_model(
        _unwrap(model), str(checkpoint / WEIGHTS), device=str(next(model.parameters()).device)
    )


def resolve_checkpoint_path(path: str | Path) -> Path:
    """Accept a checkpoint dir, a run dir, or its checkpoints/ dir; return the checkpoint dir."""
    path = Path(path).expanduser()
    candidates = [path, path / "checkpoints"]
    for candidate in candidates:
        if (candidate / WEIGHTS).exists():
            return candidate
        latest = latest_checkpoint(candidate)
        if latest is not None:
            return latest
    raise InputError(
        f"checkpoint={str(path)!r} holds no checkpoint: expected a directory with {WEIGHTS}, "
        "config.yaml and tokenizer/ (e.g. <run dir>/checkpoints/step_0000600), or a run dir whose "
        "checkpoints/latest names one."
    )


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "_orig_mod", model)  # torch.compile wraps the module
