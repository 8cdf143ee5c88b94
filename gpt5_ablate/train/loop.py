"""``train(cfg, run_dir)``: plan a run from its composed config and hand it to the Trainer."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from gpt5_ablate.train.plan import make_plan
from gpt5_ablate.train.records import TrainResult
from gpt5_ablate.train.trainer import Trainer


def train(
    cfg: DictConfig, run_dir: Path, sweep_id: str | None = None, parent_run_id: str | None = None
) -> TrainResult:
    """One run. Raises ConfigError before anything is allocated for a bad config."""
    plan = make_plan(cfg)
    return Trainer(plan, run_dir, sweep_id=sweep_id, parent_run_id=parent_run_id).train()
