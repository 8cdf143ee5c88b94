"""Synthetic MLflow runs with hand-computable metrics, logged the way the training loop logs.

The design is attention ∈ {mha, gqa} × optimizer ∈ {muon_adamw, adamw} × seed ∈ {0, 1}; every
other factor is fixed. ``FINAL_LOSS`` holds each run's final validation loss; the learning
curve reaches it from above over three evaluations, except for one run whose best loss comes
before its final one (so best ≠ final is tested). One extra FAILED run must be filtered out,
and so must the sweep's parent run (as the training CLI logs one per multirun).

With these numbers (gqa − mha) per (optimizer, seed) is 0.10, 0.12, 0.08, 0.06 and
(adamw − muon_adamw) per (attention, seed) is 0.20, 0.24, 0.18, 0.18.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

EXPERIMENT = "synthetic"
LR_EXPERIMENT = "synthetic_lr"

TOKENS_PER_STEP = 1000
EVAL_STEPS = (10, 20, 30)
TRAIN_LOG_STEPS = (5, 10, 15, 20, 25, 30)
#: Validation loss at each eval step is the final loss plus this offset.
CURVE_OFFSETS = (0.8, 0.3, 0.0)

#: (attention, optimizer, seed) -> final validation loss.
FINAL_LOSS: dict[tuple[str, str, int], float] = {
    ("mha", "muon_adamw", 0): 3.00,
    ("mha", "muon_adamw", 1): 3.02,
    ("mha", "adamw", 0): 3.20,
    ("mha", "adamw", 1): 3.26,
    ("gqa", "muon_adamw", 0): 3.10,
    ("gqa", "muon_adamw", 1): 3.14,
    ("gqa", "adamw", 0): 3.28,
    ("gqa", "adamw", 1): 3.32,
}
#: The one run whose curve dips below its final value: (attention, optimizer, seed) -> curve.
DIPPING_RUN = ("mha", "adamw", 1)
DIPPING_CURVE = (4.00, 3.10, 3.26)

SECONDS_PER_STEP = {"mha": 0.10, "gqa": 0.08}
N_PARAMS = {"mha": 1_000_000, "gqa": 900_000}
FLOPS_PER_TOKEN = {"mha": 6_000_000, "gqa": 5_400_000}
KV_BYTES = {"mha": 2048, "gqa": 1024}

#: LR-sweep experiment: (attention, lr_scale) -> final loss offset added per seed below.
LR_FINAL_LOSS: dict[tuple[str, float], float] = {
    ("mha", 0.5): 3.30,
    ("mha", 1.0): 3.10,
    ("mha", 2.0): 3.20,
    ("gqa", 0.5): 3.40,
    ("gqa", 1.0): 3.35,
    ("gqa", 2.0): 3.15,
}
LR_SEED_OFFSET = {0: 0.0, 1: 0.02}


@dataclass(frozen=True)
class SyntheticRun:
    attention: str
    optimizer: str
    seed: int
    curve: tuple[float, ...]
    lr_scale: float = 1.0
    status: str = "FINISHED"


def val_curve(attention: str, optimizer: str, seed: int) -> tuple[float, ...]:
    if (attention, optimizer, seed) == DIPPING_RUN:
        return DIPPING_CURVE
    final = FINAL_LOSS[(attention, optimizer, seed)]
    return tuple(round(final + offset, 6) for offset in CURVE_OFFSETS)


def val_accuracy(loss: float) -> float:
    """A made-up but monotone map, so best accuracy sits where the loss is lowest."""
    return round(0.6 - loss / 10.0, 6)


def _log_run(client: MlflowClient, experiment_id: str, spec: SyntheticRun, sweep: str) -> str:
    tags = {
        "attention": spec.attention,
        "optimizer": spec.optimizer,
        "norm": "qk_rmsnorm",
        "pos": "rope",
        "ffn": "swiglu",
        "model": "tiny",
        "seed": str(spec.seed),
        "lr_scale": str(float(spec.lr_scale)),
        "sweep_id": sweep,
        "experiment_name": sweep,
        "git_commit": "0123abc",
    }
    run = client.create_run(
        experiment_id, tags=tags, run_name=f"{spec.attention}-{spec.optimizer}-s{spec.seed}"
    )
    run_id = run.info.run_id
    params = {
        "attention.name": spec.attention,
        "optimizer.name": spec.optimizer,
        "optimizer.lr": "0.003",
        "optimizer.lr_scale": str(float(spec.lr_scale)),
        "trainer.max_tokens": str(TOKENS_PER_STEP * EVAL_STEPS[-1]),
        "model.d_model": "128",
        "n_params": str(N_PARAMS[spec.attention]),
        "n_params_non_embedding": str(N_PARAMS[spec.attention] - 200_000),
        "flops_per_token": str(FLOPS_PER_TOKEN[spec.attention]),
        "kv_cache_bytes_per_token": str(KV_BYTES[spec.attention]),
        "tokens_per_step": str(TOKENS_PER_STEP),
    }
    now = int(time.time() * 1000)
    seconds = SECONDS_PER_STEP[spec.attention]
    metrics: list[Metric] = []
    steps = TRAIN_LOG_STEPS if spec.status == "FINISHED" else TRAIN_LOG_STEPS[:2]
    for step in steps:
        metrics += [
            Metric("train/loss", spec.curve[0] + 1.0 - step / 100, now + step, step),
            Metric("train/lr", 0.003, now + step, step),
            Metric("train/tokens_seen", step * TOKENS_PER_STEP, now + step, step),
            Metric("time/elapsed_s", round(step * seconds, 6), now + step, step),
        ]
    for step, loss in zip(EVAL_STEPS, spec.curve, strict=False):
        if step > steps[-1]:
            break
        metrics += [
            Metric("val/loss", loss, now + step, step),
            Metric("val/accuracy", val_accuracy(loss), now + step, step),
            Metric("val/perplexity", math.exp(loss), now + step, step),
            # Eval steps log elapsed time too; a slightly later value mimics eval overhead.
            Metric("time/elapsed_s", round(step * seconds + 0.01, 6), now + step + 1, step),
        ]
    client.log_batch(
        run_id,
        metrics=metrics,
        params=[Param(k, v) for k, v in params.items()],
        tags=[RunTag("mlflow.source.name", "tests/analysis_fixtures.py")],
    )
    client.set_terminated(run_id, spec.status)
    return run_id


def _experiment_id(client: MlflowClient, name: str) -> str:
    existing = client.get_experiment_by_name(name)
    return existing.experiment_id if existing else client.create_experiment(name)


def log_factorial_runs(tracking_uri: str, experiment: str = EXPERIMENT) -> dict[str, str]:
    """Log the 2 × 2 × 2-seed design plus one FAILED run; return run ids keyed by run name."""
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment_id = _experiment_id(client, experiment)
    ids: dict[str, str] = {}
    for (attention, optimizer, seed), _ in FINAL_LOSS.items():
        spec = SyntheticRun(attention, optimizer, seed, val_curve(attention, optimizer, seed))
        ids[f"{attention}-{optimizer}-s{seed}"] = _log_run(client, experiment_id, spec, experiment)
    failed = SyntheticRun("mha", "muon_adamw", 2, (9.0, 9.0, 9.0), status="FAILED")
    ids["failed"] = _log_run(client, experiment_id, failed, experiment)
    # The training CLI groups a multirun under a parent run that has no factor tags or metrics.
    parent = client.create_run(
        experiment_id, tags={"sweep_id": experiment, "sweep_parent": "true"}, run_name="sweep"
    )
    client.set_terminated(parent.info.run_id, "FINISHED")
    for run_id in list(ids.values()):
        client.set_tag(run_id, "mlflow.parentRunId", parent.info.run_id)
    ids["parent"] = parent.info.run_id
    return ids


def log_lr_sweep_runs(
    tracking_uri: str,
    experiment: str = LR_EXPERIMENT,
    seeds: Iterable[int] = (0, 1),
) -> None:
    """attention ∈ {mha, gqa} × lr_scale ∈ {0.5, 1, 2} × seeds, optimizer fixed to adamw.

    mha is best at lr_scale 1.0 (3.10 + seed offset) and gqa at 2.0 (3.15 + seed offset).
    """
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment_id = _experiment_id(client, experiment)
    for (attention, lr_scale), final in LR_FINAL_LOSS.items():
        for seed in seeds:
            loss = round(final + LR_SEED_OFFSET[seed], 6)
            curve = tuple(round(loss + offset, 6) for offset in CURVE_OFFSETS)
            spec = SyntheticRun(attention, "adamw", seed, curve, lr_scale=lr_scale)
            _log_run(client, experiment_id, spec, experiment)
