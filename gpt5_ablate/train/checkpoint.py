"""Checkpoints: one writer and one reader for every parallel mode, safe against crashes, damaged
files and untrusted content.

Layout of a run dir::

    checkpoints/step_0000200/model.safetensors      weights (safetensors, tied tensors once)
                            /config.yaml            the resolved config (credentials redacted)
                            /tokenizer/             tokenizer files (PreTrainedTokenizerFast)
                            /trainer_state.json     optimizers, schedulers, scaler, RNG, data
                            /trainer_state.safetensors   position: structure + tensors, no pickle
                            /dcp/                   FSDP only: sharded model + optimizer state
                            /MANIFEST.json          every file's size and SHA-256, written last
    checkpoints/latest                              name of the newest complete checkpoint
    checkpoints/step_0000100.damaged                a damaged checkpoint, moved aside

A checkpoint is built in a hidden directory and renamed into place; ``latest`` is replaced only
after that, so a crash mid-write never leaves a half checkpoint under a real name. Reading
verifies the manifest: a damaged or missing ``latest`` falls back to the newest intact checkpoint
with a warning naming both, and when none is intact the run refuses to start rather than
silently starting again from step 0. A damaged checkpoint is moved aside (``step_N.damaged``), so
it never counts toward ``keep_checkpoints``: pruning keeps the newest intact ones.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_model, save_model

from gpt5_ablate.config import flatten
from gpt5_ablate.errors import CheckpointError, ConfigError, InputError
from gpt5_ablate.files import follow_umask, write_atomic
from gpt5_ablate.run_identity import is_cosmetic
from gpt5_ablate.train.checkpoint_files import (
    CONFIG,
    DCP_DIR,
    LATEST,
    LEGACY_STATE,
    MANIFEST,
    STATE_STEM,
    TOKENIZER,
    WEIGHTS,
    damage,
    latest_checkpoint,
    move_aside,
    quick_damage,
    step_dirs,
    write_manifest,
)
from gpt5_ablate.train.distributed import DistContext
from gpt5_ablate.train.state_io import load_state, save_state
from gpt5_ablate.train.untrusted import load_legacy_pickle

log = logging.getLogger("gpt5_ablate")


# Besides the cosmetic keys (gpt5_ablate.run_identity.COSMETIC_KEYS), settings that change how a
# run executes rather than what it computes may differ on resume (a run stopped on one machine,
# resumed on another): they are part of a run's identity, but do not block its resume.
RESUME_IGNORED_KEYS = {
    "trainer.num_threads",
    "trainer.device",
    "trainer.parallel",
    "trainer.compile",
}


# --- RNG ------------------------------------------------------------------------------------------


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
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    np.random.set_state(tuple(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


# --- files ---------------------------------------------------------------------------------------


def resolve_checkpoint_path(path: str | Path) -> Path:
    """Accept a checkpoint dir, a run dir, or its checkpoints/ dir; return the checkpoint dir."""
    path = Path(path).expanduser()
    for candidate in (path, path / "checkpoints"):
        if (candidate / WEIGHTS).is_file():
            return candidate
        latest = latest_checkpoint(candidate)
        if latest is not None:
            return latest
    raise InputError(
        f"checkpoint={str(path)!r} holds no checkpoint: expected a directory with {WEIGHTS}, "
        "config.yaml and tokenizer/ (e.g. <run dir>/checkpoints/step_0000600), or a run dir whose "
        "checkpoints/latest names one."
    )


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "_orig_mod", model)  # torch.compile wraps the module


def load_weights(model: torch.nn.Module, checkpoint: Path) -> None:
    device = str(next(model.parameters()).device)
    load_model(unwrap(model), str(checkpoint / WEIGHTS), device=device)


class Checkpointer:
    """Writes and reads one run's checkpoints, for a single process, DDP and FSDP2 alike.

    Call ``save`` on every rank: under FSDP each rank writes its shard of the model and optimizer
    state (``torch.distributed.checkpoint``) and rank 0 adds consolidated safetensors weights, so
    ``generate`` and the reports read every checkpoint the same way.
    """

    def __init__(self, root: Path, dist: DistContext, keep: int = 2, trusted: bool = False) -> None:
        self.root, self.dist, self.keep, self.trusted = root, dist, keep, trusted

    # --- writing -----------------------------------------------------------------------------

    def save(
        self,
        step: int,
        model: torch.nn.Module,
        optimizers: list[torch.optim.Optimizer],
        config_yaml: str,
        tokenizer_dir: Path,
        state: dict[str, Any],
    ) -> Path:
        name = f"step_{step:07d}"
        final, tmp = self.root / name, self.root / f".{name}.partial"
        if self.dist.is_main:  # a leftover of a crash mid-write is cleared first
            self.root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
        self.dist.barrier()
        try:
            weights_source = unwrap(model)
            state = {**state, "world_size": self.dist.world_size}
            if self.dist.sharded:
                weights_source = self._save_shards(tmp, model, optimizers)
                state["optimizers"] = None  # they live in the DCP shards
            else:
                state["optimizers"] = [opt.state_dict() for opt in optimizers]
            if self.dist.is_main:
                save_model(weights_source, str(tmp / WEIGHTS))
                (tmp / CONFIG).write_text(config_yaml)
                shutil.copytree(tokenizer_dir, tmp / TOKENIZER)
                save_state(state, tmp, STATE_STEM)
                # safetensors writes its file 0600 and the tokenizer cache dir is 0700: make the
                # checkpoint as readable as any other file the user creates.
                follow_umask(tmp)
                write_manifest(tmp, step)  # last: its presence says the rest is complete
                if final.exists():  # a re-save of the same step (the final one after a resume)
                    shutil.rmtree(final)
                os.replace(tmp, final)
                write_atomic(self.root / LATEST, name)
                self._prune(protect=name)
        except BaseException:
            if self.dist.is_main:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        # Nobody goes on (or exits) before the checkpoint is complete and ``latest`` names it.
        self.dist.barrier()
        return final

    def _save_shards(
        self, tmp: Path, model: torch.nn.Module, optimizers: list[torch.optim.Optimizer]
    ) -> torch.nn.Module:
        """FSDP: every rank writes its shards; returns the consolidated model (on rank 0)."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_state_dict,
        )

        from gpt5_ablate.model import GPT

        model_state, optim_state = get_state_dict(model, optimizers)
        dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=tmp / DCP_DIR)
        full = get_model_state_dict(
            model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
        if not self.dist.is_main:
            return model
        plain = GPT(model.arch, model.vocab_size)
        plain.load_state_dict(full)  # a tied head loads the same tensor twice: tie kept
        return plain

    def _prune(self, protect: str) -> None:
        """Keep the ``keep`` newest intact checkpoints and the one just written. Only intact
        ones count (sizes checked, no reading); a damaged one is moved aside, not counted, so
        the newest intact checkpoint is never deleted before a newer intact one exists."""
        if self.keep <= 0:
            return
        intact = []
        for path in step_dirs(self.root):
            problems = quick_damage(path)
            if problems:
                move_aside(path, problems)
            else:
                intact.append(path)
        kept = set(intact[-self.keep :]) | {self.root / protect}
        for old in intact:
            if old not in kept:
                shutil.rmtree(old, ignore_errors=True)

    # --- reading -----------------------------------------------------------------------------

    def resumable(self) -> Path | None:
        """The newest intact checkpoint, or None when the run has none yet.

        A damaged or dangling ``latest`` falls back to the newest intact checkpoint with a
        warning; when checkpoints exist but none is intact, ``CheckpointError`` says which files
        are damaged and what to do (never a silent restart from step 0)."""
        candidates = step_dirs(self.root)
        pointer = self.root / LATEST
        named = pointer.read_text().strip() if pointer.is_file() else None
        if not candidates:
            if named:
                log.warning(
                    f"warning: {pointer} names {named}, which does not exist, and no other "
                    "checkpoint is there: starting from step 0."
                )
            return None
        problems: dict[Path, list[str]] = {}
        preferred = self.root / named if named else None
        order = sorted(candidates, key=lambda p: (p == preferred, p.name), reverse=True)
        for path in order:
            problems[path] = damage(path)
            if problems[path]:
                continue
            if path != preferred:
                why = (
                    "; ".join(problems[preferred])
                    if preferred in problems
                    else f"{preferred or pointer} is missing"
                )
                log.warning(
                    f"warning: checkpoint {preferred or pointer} is unusable ({why}); "
                    f"resuming from {path}, the newest intact checkpoint."
                )
            self._set_aside(path, {p: issues for p, issues in problems.items() if issues})
            return path
        listed = "; ".join(p for issues in problems.values() for p in issues[:2])
        raise CheckpointError(
            f"No intact checkpoint in {self.root} to resume from ({listed}). Restore the files, "
            "or start this run afresh with trainer.resume=false (the damaged checkpoints are then "
            "replaced as the new run saves its own)."
        )

    def _set_aside(self, resumed: Path, damaged: dict[Path, list[str]]) -> None:
        """Move the damaged checkpoints found on the way to ``resumed`` aside, and point
        ``latest`` at it (every rank has read them before rank 0 renames them)."""
        if not damaged:
            return
        self.dist.barrier()
        if self.dist.is_main:
            for path, problems in damaged.items():
                move_aside(path, problems)
            write_atomic(self.root / LATEST, resumed.name)
        self.dist.barrier()

    def check_config(self, checkpoint: Path, current: dict[str, Any]) -> None:
        """Refuse to resume a checkpoint written under a different config (an edited YAML).
        Keys the saved config lacks (settings added to the harness since) do not block it."""
        saved = flatten(OmegaConf.to_container(OmegaConf.load(checkpoint / CONFIG)))
        now = flatten(current)
        differing = sorted(
            k
            for k in saved.keys() - RESUME_IGNORED_KEYS
            if not is_cosmetic(k) and saved[k] != now.get(k)
        )
        if differing:
            shown = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in differing[:5])
            raise ConfigError(
                f"The run dir {checkpoint.parent.parent} holds a checkpoint ({checkpoint.name}) "
                f"written with a different config ({shown}). Resume with the original config, "
                "start afresh in another dir (hydra.run.dir=...), or pass trainer.resume=false."
            )

    def load(
        self,
        checkpoint: Path,
        model: torch.nn.Module,
        optimizers: list[torch.optim.Optimizer],
    ) -> dict[str, Any]:
        """Restore weights and optimizer state on every rank; returns the rest of the state."""
        if (checkpoint / LEGACY_STATE).is_file() and not (checkpoint / MANIFEST).is_file():
            state = load_legacy_pickle(checkpoint / LEGACY_STATE, trusted=self.trusted)
        else:
            state = load_state(checkpoint, STATE_STEM)
        saved_world = state.get("world_size", 1)
        if saved_world != self.dist.world_size and self.dist.is_main:
            log.info(
                f"note: {checkpoint} was written by {saved_world} rank(s), resuming on "
                f"{self.dist.world_size}: the global batch changes with the number of ranks."
            )
        if self.dist.sharded:
            self._load_shards(checkpoint, model, optimizers)
            return state
        if state.get("optimizers") is None:
            raise ConfigError(
                f"{checkpoint} holds sharded optimizer state (written with trainer.parallel=fsdp); "
                "resume it with trainer.parallel=fsdp under torchrun."
            )
        load_weights(model, checkpoint)
        try:
            for opt, opt_state in zip(optimizers, state["optimizers"], strict=True):
                opt.load_state_dict(opt_state)
        except ValueError as error:  # e.g. a checkpoint from before MHA's q/kv split
            raise CheckpointError(
                f"{checkpoint}'s optimizer state does not fit this model's parameters ({error}); "
                "it was written by an older layout of this architecture. Its weights still load "
                "for generate and evaluation; to train on, start afresh with "
                "trainer.resume=false."
            ) from None
        return state

    def _load_shards(
        self, checkpoint: Path, model: torch.nn.Module, optimizers: list[torch.optim.Optimizer]
    ) -> None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        if not (checkpoint / DCP_DIR).is_dir():
            raise ConfigError(
                f"{checkpoint} has no {DCP_DIR}/ (sharded state): it was written without "
                "trainer.parallel=fsdp. Resume it with the parallel mode that wrote it."
            )
        # DCP loads in place into the (sharded) tensors: each rank reads only what its shards
        # need, and a different number of ranks reshards on load.
        model_state, optim_state = get_state_dict(model, optimizers)
        state = {"model": model_state, "optim": optim_state}
        dcp.load(state, checkpoint_id=checkpoint / DCP_DIR)
        set_state_dict(
            model, optimizers, model_state_dict=state["model"], optim_state_dict=state["optim"]
        )
