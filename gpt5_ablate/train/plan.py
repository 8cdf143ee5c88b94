"""The plan of a run: every setting typed and checked before anything is allocated.

``make_plan(cfg)`` is cheap (no reading, no download, no tensors): a bad value fails here, with a
``ConfigError`` naming it, before a run dir, a cache entry or an MLflow run exists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from gpt5_ablate.config import TrackingConfig, TrainerConfig
from gpt5_ablate.data import DATA, TOKENIZER, DataContext
from gpt5_ablate.errors import ConfigError
from gpt5_ablate.factors import factor_levels
from gpt5_ablate.model import ArchitectureConfig
from gpt5_ablate.optim import OPTIMIZER
from gpt5_ablate.registry import as_typed
from gpt5_ablate.train import distributed

PHASES = ("select", "report")


@dataclass
class TrainPlan:
    """Every typed, validated setting of a run (built before any tensor exists)."""

    cfg: DictConfig
    arch: ArchitectureConfig
    trainer: TrainerConfig
    tracking: TrackingConfig
    optimizer: Any
    data: Any
    tokenizer: Any
    seq_len: int
    tokens_per_step: int
    total_steps: int

    @property
    def seed(self) -> int:
        return int(self.cfg.seed)

    @property
    def total_tokens(self) -> int:
        return self.total_steps * self.tokens_per_step

    def factors(self) -> dict[str, str]:
        """``{factor: level}`` for every factor in ``gpt5_ablate.factors.FACTORS``."""
        return factor_levels(self.cfg)

    def run_name(self, sweep_id: str | None = None) -> str:
        """What tells runs apart: arm, preset, budget, seed (and the sweep)."""
        if self.tracking.run_name:
            return self.tracking.run_name
        budget = _short_count(self.total_tokens) + "tok"
        name = f"{'-'.join(self.factors().values())}-{self.arch.model.name}-{budget}-s{self.seed}"
        return f"{name}-{sweep_id[:6]}" if sweep_id else name


def _short_count(n: int) -> str:
    for unit, size in (("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def non_embedding_params(arch: ArchitectureConfig) -> int:
    """Counted on the meta device: no memory, no random draws (and independent of the vocab)."""
    import torch

    from gpt5_ablate.model import GPT

    with torch.device("meta"):
        return GPT(arch, vocab_size=8).n_params(non_embedding=True)


def make_plan(cfg: DictConfig) -> TrainPlan:
    """Type and check the whole config; raises ConfigError naming the bad value."""
    arch = ArchitectureConfig.from_config(cfg)
    arch.validate()
    trainer = as_typed(TrainerConfig, cfg.trainer)
    trainer.validate(arch.model)
    tracking = as_typed(TrackingConfig, cfg.tracking)
    optimizer = OPTIMIZER.typed(cfg.optimizer)
    optimizer.validate()
    data = DATA.typed(cfg.data)
    tokenizer = TOKENIZER.typed(cfg.tokenizer)
    # The corpus and tokenizer checks are cheap (no reading, no download): run them here too.
    ctx = DataContext(tokenizer=tokenizer)
    DATA.build(data, ctx).validate()
    TOKENIZER.build(tokenizer, ctx).validate()
    if cfg.seed < 0:  # the data order (BlockLoader) is drawn from a generator seeded by it
        raise ConfigError(f"seed={cfg.seed} is invalid: use an integer >= 0.")
    if cfg.get("phase", "report") not in PHASES:
        raise ConfigError(f"phase={cfg.phase!r} is invalid. Valid choices: {', '.join(PHASES)}.")
    seq_len = trainer.resolved_seq_len(arch.model)
    # Under torchrun a step takes micro_batch_size x grad_accum_steps sequences on every rank.
    world_size = distributed.launch_world_size(trainer.parallel)
    tokens_per_step = trainer.micro_batch_size * trainer.grad_accum_steps * seq_len * world_size
    if trainer.tokens_per_param is not None:
        budget = trainer.tokens_per_param * non_embedding_params(arch)
        total_steps = max(1, math.ceil(budget / tokens_per_step))
    elif trainer.max_tokens is not None:
        total_steps = math.ceil(trainer.max_tokens / tokens_per_step)
    else:
        total_steps = trainer.max_steps
    return TrainPlan(
        cfg=cfg,
        arch=arch,
        trainer=trainer,
        tracking=tracking,
        optimizer=optimizer,
        data=data,
        tokenizer=tokenizer,
        seq_len=seq_len,
        tokens_per_step=tokens_per_step,
        total_steps=total_steps,
    )
