"""Synthetic MLflow runs with hand-computable metrics, logged the way the training loop logs.

The design is attention ∈ {mha, gqa} × optimizer ∈ {muon_adamw, adamw} × seed ∈ {0, 1}; every
other factor is fixed. ``FINAL_LOSS`` holds each run's final validation loss; the learning
curve reaches it from above over three evaluations, except for one run whose best loss comes
before its final one (so best ≠ final is tested). One extra FAILED run must be filtered out,
and so must the sweep's parent run (as the training CLI logs one per multirun).

With these numbers (gqa − mha) per (optimizer, seed) is 0.10, 0.12, 0.08, 0.06 and
(adamw − muon_adamw) per (attention, seed) is 0.20, 0.24, 0.18, 0.18.

Those runs predate the full-split evaluation. :func:`log_run` logs runs the way the training loop
does now: ``final/val_*`` metrics over the whole validation split, the ``eval/per_document.csv``
artifact, the unigram baseline, the budget params, ``sweep_id`` and ``phase`` tags.
"""

from __future__ import annotations

import math
import tempfile
import time
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
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
    """The experiment's id; a new one keeps its artifacts beside the SQLite file."""
    existing = client.get_experiment_by_name(name)
    if existing:
        return existing.experiment_id
    uri = client.tracking_uri
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri.removeprefix("sqlite:///")).parent / "artifacts" / name).as_uri()
    return client.create_experiment(name, artifact_location=location)


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


# --------------------------------------------------------------------------------------------
# Runs as the training loop logs them today
# --------------------------------------------------------------------------------------------

DEFAULT_LEVELS = {
    "attention": "gqa",
    "optimizer": "muon_adamw",
    "norm": "qk_rmsnorm",
    "pos": "rope",
    "ffn": "swiglu",
}
N_DOCUMENTS = 40


@dataclass(frozen=True)
class RunSpec:
    """One run; ``loss`` is its full-split final loss (also the last periodic val/loss ± 0.01)."""

    levels: Mapping[str, str]
    seed: int
    loss: float
    sweep: str | None = "sweep-a"
    phase: str | None = None
    model: str = "tiny"
    total_steps: int = 40
    tokens_per_step: int = 512
    unigram: float | None = 6.5
    lr_scale: float = 1.0
    documents: int = N_DOCUMENTS
    full_split: bool = True
    start_ms: int | None = None
    n_params: int | None = None
    extra_tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        levels = {**DEFAULT_LEVELS, **self.levels}
        return "-".join(levels.values()) + f"-{self.model}-{self.total_steps}st-s{self.seed}"


def per_document_table(spec: RunSpec) -> list[tuple[str, int, float]]:
    """Documents shared by every run (same ids and lengths); losses that average to spec.loss.

    Each document has a difficulty shared by all runs and a small run-specific wobble, so paired
    differences between runs vary little across documents (as on real data).
    """
    shared = np.random.default_rng(12345)
    tokens = shared.integers(20, 200, size=spec.documents)
    difficulty = shared.normal(0.0, 0.5, size=spec.documents)
    own = np.random.default_rng(zlib.crc32(f"{spec.name}/{spec.sweep}".encode()))
    per_token = spec.loss + difficulty + own.normal(0.0, 0.02, size=spec.documents)
    loss_sum = tokens * per_token
    loss_sum *= spec.loss * tokens.sum() / loss_sum.sum()  # exactly spec.loss overall
    return [
        (f"doc{i:03d}", int(t), float(v))
        for i, (t, v) in enumerate(zip(tokens, loss_sum, strict=True))
    ]


def log_run(client: MlflowClient, experiment_id: str, spec: RunSpec) -> str:
    levels = {**DEFAULT_LEVELS, **spec.levels}
    tags = {**levels, "model": spec.model, "seed": str(spec.seed), "lr_scale": str(spec.lr_scale)}
    if spec.sweep:
        tags["sweep_id"] = spec.sweep
    if spec.phase:
        tags["phase"] = spec.phase
    tags.update(spec.extra_tags)
    run = client.create_run(experiment_id, start_time=spec.start_ms, tags=tags, run_name=spec.name)
    run_id = run.info.run_id
    n_params = (spec.n_params or 1_000_000) + 50_000 * ("mla" in levels.values())
    params = {
        **{f"{k}.name": v for k, v in levels.items()},
        "model.name": spec.model,
        "data.name": "stdlib",
        "trainer.max_steps": str(spec.total_steps),
        "total_steps": str(spec.total_steps),
        "tokens_per_step": str(spec.tokens_per_step),
        "optimizer.lr_scale": str(spec.lr_scale),
        "n_params": str(n_params),
        "n_params_non_embedding": str(n_params - 200_000),
        "flops_per_token": str(6 * n_params),
        "kv_cache_bytes_per_token": "1024",
    }
    if spec.unigram is not None:
        params["unigram_val_loss"] = str(spec.unigram)
    now = spec.start_ms or int(time.time() * 1000)
    steps = (spec.total_steps // 2, spec.total_steps)
    last = spec.loss + 0.01
    metrics = [
        Metric("val/loss", last + 0.5, now + 1, steps[0]),
        Metric("val/loss", last, now + 2, steps[1]),
        Metric("train/loss", last + 0.2, now + 2, steps[1]),
        Metric("time/elapsed_s", 1.0 * steps[1], now + 2, steps[1]),
    ]
    if spec.full_split:
        metrics += [
            Metric("final/val_loss", spec.loss, now + 3, spec.total_steps),
            Metric("final/val_perplexity", math.exp(spec.loss), now + 3, spec.total_steps),
            Metric("final/val_accuracy", val_accuracy(spec.loss), now + 3, spec.total_steps),
        ]
    client.log_batch(run_id, metrics=metrics, params=[Param(k, v) for k, v in params.items()])
    if spec.full_split and spec.documents:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "per_document.csv"
            rows = ["document,tokens,loss_sum"] + [
                f"{d},{t},{v!r}" for d, t, v in per_document_table(spec)
            ]
            path.write_text("\n".join(rows) + "\n")
            client.log_artifact(run_id, str(path), artifact_path="eval")
    client.set_terminated(run_id, "FINISHED", end_time=now + 10)
    return run_id


def log_runs(tracking_uri: str, experiment: str, specs: Iterable[RunSpec]) -> list[str]:
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment_id = _experiment_id(client, experiment)
    return [log_run(client, experiment_id, spec) for spec in specs]


#: A 2 × 2 × 2-seed sweep as the training loop logs it now: gqa beats mla by 0.05 under muon_adamw
#: and 0.06 under adamw (pooled 0.055), muon_adamw beats adamw by about 0.3; unigram 6.5 nats.
FULL_SWEEP_LOSS: dict[tuple[str, str, int], float] = {
    ("gqa", "muon_adamw", 0): 4.000,
    ("gqa", "muon_adamw", 1): 4.010,
    ("mla", "muon_adamw", 0): 4.052,
    ("mla", "muon_adamw", 1): 4.058,
    ("gqa", "adamw", 0): 4.300,
    ("gqa", "adamw", 1): 4.330,
    ("mla", "adamw", 0): 4.355,
    ("mla", "adamw", 1): 4.395,
}


def full_sweep_specs(
    sweep: str = "sweep-a",
    total_steps: int = 40,
    start_ms: int | None = None,
    documents: int = N_DOCUMENTS,
) -> list[RunSpec]:
    return [
        RunSpec(
            {"attention": a, "optimizer": o},
            seed,
            loss,
            sweep=sweep,
            total_steps=total_steps,
            start_ms=start_ms,
            documents=documents,
        )
        for (a, o, seed), loss in FULL_SWEEP_LOSS.items()
    ]
