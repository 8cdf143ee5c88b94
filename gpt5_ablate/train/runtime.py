"""Device, precision and seeding: the few facts about the machine the loop needs."""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass

import numpy as np
import torch

from gpt5_ablate.errors import ConfigError


@dataclass
class Runtime:
    device: torch.device
    precision: str  # fp32 | bf16 | fp16

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def resolve_runtime(device: str, precision: str, num_threads: int | None = None) -> Runtime:
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "trainer.device='cuda' but no CUDA device is visible; use trainer.device=auto or cpu."
        )
    if device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("trainer.device='mps' but MPS is not available; use auto or cpu.")
    if precision == "auto":  # mixed precision pays off on GPUs; on CPUs it is off unless asked
        precision = "bf16" if device == "cuda" else "fp32"
    if precision == "fp16" and device == "cpu":
        raise ConfigError(
            "trainer.precision='fp16' needs a GPU (the fp16 grad scaler); on CPU use fp32 or bf16."
        )
    return Runtime(torch.device(device), precision)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
