"""The pieces of a training step the Trainer and the bench share."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from gpt5_ablate.errors import NonFiniteLossError
from gpt5_ablate.train.runtime import Runtime


def accumulate_gradients(
    model: torch.nn.Module,
    micro_batches: list[tuple[torch.Tensor, torch.Tensor]],
    runtime: Runtime,
    scaler: torch.amp.GradScaler,
) -> torch.Tensor:
    """Backward over k micro-batches, each loss divided by k, so the summed gradient equals the
    gradient of the mean loss over one batch k times larger. Returns that mean loss (detached,
    still on the device: no host sync here)."""
    total = torch.zeros((), device=runtime.device)
    for inputs, targets in micro_batches:
        with runtime.autocast():
            _, loss = model(inputs, targets)
        scaler.scale(loss / len(micro_batches)).backward()
        total += loss.detach()
    return total / len(micro_batches)


def use_compile(mode: str, device: torch.device) -> bool:
    """``trainer.compile``: auto compiles on CUDA, where it pays; on CPU the compile time (tens
    of seconds) outweighs the gain at the sizes a CPU trains."""
    mode = str(mode).lower()
    return device.type == "cuda" if mode == "auto" else mode == "true"


class NonFiniteWatch:
    """The first step whose loss or gradient norm was NaN/Inf, kept on the device.

    Recording costs no host sync; ``check`` (called where the trainer syncs anyway: log, eval
    and checkpoint steps, and always before a checkpoint is written) raises for it, naming the
    exact step, so a bad step can never reach a checkpoint.
    """

    def __init__(self, device: torch.device) -> None:
        # [step, loss, grad_norm]; step -1: nothing recorded
        self.first = torch.tensor([-1.0, 0.0, 0.0], dtype=torch.float64, device=device)

    def record(self, bad: torch.Tensor, step: int, loss: torch.Tensor, norm: torch.Tensor) -> None:
        hit = bad & (self.first[0] < 0)
        values = torch.stack((torch.full_like(self.first[0], step), loss.double(), norm.double()))
        self.first = torch.where(hit, values, self.first)

    def check(self, last_checkpoint: Path | None) -> None:
        step, loss, norm = self.first.tolist()
        if step < 0:
            return
        what = "loss" if not torch.isfinite(torch.tensor(loss)) else "gradient norm"
        raise NonFiniteLossError(
            f"The {what} became non-finite at step {int(step)} (loss={loss}, grad_norm={norm}); "
            f"the last good checkpoint is {last_checkpoint or 'none (no checkpoint yet)'}. Lower "
            "the learning rate, or set trainer.on_nonfinite=skip to skip such steps."
        )


class PhaseTimer:
    """Times the trainer's phases (forward_backward, optimizer) for the bench; a no-op unless
    given a ``sync`` (the device synchronisation that makes GPU timings mean something)."""

    def __init__(self, sync: object = None) -> None:
        self.sync = sync
        self.seconds: dict[str, list[float]] = defaultdict(list)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if self.sync is None:
            yield
            return
        self.sync()  # type: ignore[operator]
        started = time.perf_counter()
        yield
        self.sync()  # type: ignore[operator]
        self.seconds[name].append(time.perf_counter() - started)

    def reset(self) -> None:
        self.seconds.clear()
