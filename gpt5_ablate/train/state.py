"""``TrainState``: the trainer's own counters, saved in every checkpoint.

Everything else a resume needs (weights, optimizer, scheduler, grad-scaler, data-position and RNG
states) belongs to its own object; ``Trainer.state_dict`` gathers them next to this.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class TrainState:
    step: int = 0  # optimizer steps taken
    elapsed_s: float = 0.0  # training wall time before this process (resumes add up)
    skipped_steps: int = 0  # non-finite steps skipped (trainer.on_nonfinite=skip)
    run_id: str | None = None  # the MLflow run this run logs into
    first_eval: dict[str, float] = field(default_factory=dict)
    # train/loss is logged as a mean over each log interval; a checkpoint taken mid-interval
    # carries the partial sum, so a resumed run logs exactly what an uninterrupted one would.
    interval_loss: torch.Tensor = field(default_factory=lambda: torch.zeros(()))
    interval_steps: int = 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "elapsed_s": self.elapsed_s,
            "skipped_steps": self.skipped_steps,
            "run_id": self.run_id,
            "first_eval": dict(self.first_eval),
            "interval_loss": self.interval_loss.detach().clone().cpu(),
            "interval_steps": self.interval_steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = self.interval_loss.device
        self.step, self.elapsed_s = int(state["step"]), float(state["elapsed_s"])
        self.skipped_steps = int(state["skipped_steps"])
        self.run_id = state.get("run_id")
        self.first_eval = dict(state.get("first_eval") or {})
        if "interval_loss" in state:  # absent from checkpoints written before it was saved
            self.interval_loss = torch.as_tensor(state["interval_loss"]).to(device)
            self.interval_steps = int(state["interval_steps"])
