"""Load an experiment's runs from MLflow into pandas.

Two tables come out:

* ``runs`` – one row per run: factor levels, seed, lr_scale, phase, sweep, model size, compute,
  budget, the unigram baseline, and the best and final validation metrics;
* ``history`` – a long table with one row per (run, metric, step), including the tokens seen and
  the wall-clock time at that step, for learning curves.

Everything goes through MLflow's public API (``mlflow.search_runs`` and
``MlflowClient.get_metric_history``), so any tracking backend works: SQLite, a file store or a
tracking server. The column conventions are those the training loop logs (see the project README).

Final validation loss: runs log ``final/val_loss``, one pass over the ENTIRE validation split,
at the end; that is ``full_val_loss``. The periodic ``val/loss`` evaluations use a fixed seeded
sample of validation blocks; the last of them is ``last_val_loss``. ``final_val_loss`` is the
full-split value where the run logged one and the last periodic value otherwise (older runs), and
``final_val_loss_source`` says which. Runs that also log ``final/test_loss`` (the held-out test
split; the validation split then only chooses learning rates) have it as ``full_test_loss``, and
their ``eval/per_document.csv`` holds the test split's documents. Factors added after a run was logged read as the level
the run implicitly used (``window=all_full``, ``sinks=none``), and an untagged ``phase`` as
``report``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import ViewType

from gpt5_ablate.analysis.stats import FACTORS, LEGACY_DEFAULTS, varied_factors
from gpt5_ablate.errors import InputError

DEFAULT_EXPERIMENT = "gpt5_ablate"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"

#: Metrics summarised per run, and whether lower or higher is better.
SUMMARY_METRICS: dict[str, str] = {
    "val/loss": "min",
    "val/accuracy": "max",
    "val/perplexity": "min",
}

#: Metrics fetched into the long history table by default.
HISTORY_METRICS: tuple[str, ...] = ("val/loss", "val/accuracy", "val/perplexity", "train/loss")

ELAPSED_METRIC = "time/elapsed_s"
TOKENS_METRIC = "train/tokens_seen"

#: Params converted to numbers and exposed as run columns (MLflow stores params as strings).
NUMERIC_PARAMS: dict[str, str] = {
    "n_params": "n_params",
    "n_params_non_embedding": "n_params_non_embedding",
    "n_params_active": "n_params_active",
    "n_params_non_embedding_active": "n_params_non_embedding_active",
    "model.max_seq_len": "context_len",
    "window.size": "window_size",
    "flops_per_token": "flops_per_token",
    "kv_cache_bytes_per_token": "kv_cache_bytes_per_token",
    "tokens_per_step": "tokens_per_step",
    "total_steps": "total_steps",
    "trainer.max_steps": "max_steps",
    "trainer.max_tokens": "max_tokens",
    "optimizer.lr": "lr",
    "tokenizer.vocab_size": "vocab_size",
    "unigram_val_loss": "unigram_val_loss",
    "data.val_train_overlap_32": "val_train_overlap_32",
    "data.test_train_overlap_32": "test_train_overlap_32",
    "data.test_val_overlap_32": "test_val_overlap_32",
    "data.n_docs_val": "n_docs_val",
    "data.n_docs_test": "n_docs_test",
    "data.n_train_tokens": "n_train_tokens",
    "data.n_val_tokens": "n_val_tokens",
    "data.n_test_tokens": "n_test_tokens",
}

#: End-of-run metrics over the whole validation split (read from the run's latest values).
FULL_SPLIT_METRICS: dict[str, str] = {
    "final/val_loss": "full_val_loss",
    "final/val_accuracy": "full_val_accuracy",
    "final/val_perplexity": "full_val_perplexity",
    "final/val_tokens": "full_val_tokens",
    "final/test_loss": "full_test_loss",
    "final/test_accuracy": "full_test_accuracy",
    "final/test_perplexity": "full_test_perplexity",
    "final/test_tokens": "full_test_tokens",
}

HISTORY_COLUMNS: tuple[str, ...] = (
    "run_id",
    "arm",
    "seed",
    "lr_scale",
    "metric",
    "step",
    "tokens_seen",
    "elapsed_s",
    "value",
    "timestamp",
)


@dataclass
class ExperimentData:
    """Everything the plots and the report need about one experiment."""

    experiment: str
    tracking_uri: str
    runs: pd.DataFrame
    history: pd.DataFrame
    #: Runs left out because of their status, e.g. ``{"FAILED": 2}``.
    excluded: dict[str, int] = field(default_factory=dict)
    #: Set when read from a plain-file export (:mod:`gpt5_ablate.analysis.export`), not MLflow.
    export_dir: Path | None = None
    per_document_pattern: str = ""

    @property
    def source_text(self) -> str:
        if self.export_dir is not None:
            return (
                f"the committed export `{self.export_dir}` of MLflow experiment `{self.experiment}`"
            )
        return f"MLflow experiment `{self.experiment}` at `{self.tracking_uri}`"

    def per_document(
        self, run_ids: Sequence[str], validation: bool = False
    ) -> dict[str, pd.DataFrame]:
        """Each run's per-document losses, where it logged them: ``eval/per_document.csv``, or
        with ``validation`` the validation split's file of runs that also have a test split."""
        from gpt5_ablate.analysis.docboot import ARTIFACT, VAL_ARTIFACT, load_per_document

        if self.export_dir is not None:
            from gpt5_ablate.analysis.export import export_per_document

            return export_per_document(self, run_ids, validation)
        return load_per_document(
            self.tracking_uri, run_ids, VAL_ARTIFACT if validation else ARTIFACT
        )


@contextmanager
def _tracking_uri(uri: str) -> Iterator[None]:
    """Point ``mlflow.search_runs`` (which only reads the global URI) at ``uri`` temporarily."""
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def check_store(tracking_uri: str) -> None:
    """A SQLite store that does not exist is an error (opening it would create an empty one)."""
    from gpt5_ablate.train.tracking import sqlite_file

    path = sqlite_file(tracking_uri)
    if path is not None and not path.is_file():
        raise InputError(
            f"There is no MLflow store at {path} (tracking.uri={tracking_uri}); pass the "
            "tracking.uri the runs were logged to."
        )


def search_runs(
    experiment: str = DEFAULT_EXPERIMENT,
    tracking_uri: str = DEFAULT_TRACKING_URI,
    include_unfinished: bool = False,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The experiment's runs as MLflow's search DataFrame, and counts of runs filtered out.

    Only FINISHED runs are kept unless ``include_unfinished``: a crashed or killed run stops
    early and would bias every comparison towards whatever arm crashed least.
    """
    check_store(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    if client.get_experiment_by_name(experiment) is None:
        names = sorted(e.name for e in client.search_experiments(view_type=ViewType.ALL))
        raise InputError(
            f"No MLflow experiment named {experiment!r} at {tracking_uri}. "
            f"Experiments there: {', '.join(names) or '(none)'}."
        )
    with _tracking_uri(tracking_uri):
        frame = mlflow.search_runs(
            experiment_names=[experiment], run_view_type=ViewType.ACTIVE_ONLY
        )
    if not isinstance(frame, pd.DataFrame):  # pragma: no cover - output_format is pandas
        raise TypeError("mlflow.search_runs did not return a DataFrame")
    if not frame.empty:
        frame = frame[~_is_sweep_parent(frame)]
    if frame.empty or include_unfinished:
        return frame.reset_index(drop=True), {}
    finished = frame["status"] == "FINISHED"
    excluded = frame.loc[~finished, "status"].value_counts().to_dict()
    return frame[finished].reset_index(drop=True), {str(k): int(v) for k, v in excluded.items()}


def _is_sweep_parent(frame: pd.DataFrame) -> pd.Series:
    """Bookkeeping runs that group a multirun (tagged ``sweep_parent``, or parents of others).

    They train nothing, so they are not design points and are never analysed.
    """
    tagged = (
        _column(frame, "tags.sweep_parent").astype(object).map(lambda v: str(v).lower() == "true")
    )
    parents = set(_column(frame, "tags.mlflow.parentRunId").dropna())
    return tagged | frame["run_id"].isin(parents)


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    """A search-result column, or an all-missing one when no run logged it."""
    if name in frame.columns:
        return frame[name]
    return pd.Series([None] * len(frame), index=frame.index, dtype=object)


def _tag_or_param(frame: pd.DataFrame, key: str, *params: str) -> pd.Series:
    """Prefer the run tag, fall back to params (runs logged before the tag convention)."""
    values = _column(frame, f"tags.{key}")
    for param in params:
        values = values.fillna(_column(frame, f"params.{param}"))
    return values


def _fetch_histories(
    client: MlflowClient, run_ids: Sequence[str], metrics: Sequence[str]
) -> pd.DataFrame:
    rows: list[tuple[str, str, int, float, int]] = []
    for run_id in run_ids:
        for metric in metrics:
            for m in client.get_metric_history(run_id, metric):
                rows.append((run_id, metric, int(m.step), float(m.value), int(m.timestamp)))
    frame = pd.DataFrame(rows, columns=["run_id", "metric", "step", "value", "timestamp"])
    # A value re-logged at the same step (e.g. after a resume) supersedes the earlier one.
    frame = frame.sort_values(["run_id", "metric", "step", "timestamp"], kind="stable")
    return frame.drop_duplicates(["run_id", "metric", "step"], keep="last").reset_index(drop=True)


def _interpolate_per_run(target: pd.DataFrame, source: pd.DataFrame, column: str) -> pd.Series:
    """For each target row, ``source`` value of the same run at that step (linear in between).

    Used to attach wall-clock time (logged at train-log and eval steps) to every metric point.
    """
    out = pd.Series(np.nan, index=target.index, dtype=float)
    for run_id, points in source.groupby("run_id"):
        rows = target["run_id"] == run_id
        if not rows.any():
            continue
        out[rows] = np.interp(
            target.loc[rows, "step"].to_numpy(dtype=float),
            points["step"].to_numpy(dtype=float),
            points["value"].to_numpy(dtype=float),
        )
    return out.rename(column)


def arm_labels(runs: pd.DataFrame, factors: Sequence[str] = FACTORS) -> pd.Series:
    """Label each run by the levels of the factors that vary (plus the model if that varies)."""
    columns = varied_factors(runs, factors)
    if "model" in runs.columns and runs["model"].dropna().nunique() > 1:
        columns.append("model")
    if not columns:
        # Nothing varies: name the single arm by its full configuration.
        columns = [f for f in factors if f in runs.columns and runs[f].notna().any()]
    if not columns:
        return pd.Series(["all runs"] * len(runs), index=runs.index, dtype=object)
    # Built cell by cell: pandas 3's string dtype keeps NaN through astype(str).
    return pd.Series(
        [
            " / ".join("n/a" if pd.isna(v) else str(v) for v in values)
            for values in runs[columns].itertuples(index=False)
        ],
        index=runs.index,
        dtype=object,
    )


def load_experiment(
    experiment: str = DEFAULT_EXPERIMENT,
    tracking_uri: str = DEFAULT_TRACKING_URI,
    include_unfinished: bool = False,
    history_metrics: Sequence[str] = HISTORY_METRICS,
) -> ExperimentData:
    """Load the per-run table and the long metric-history table of one experiment."""
    raw, excluded = search_runs(experiment, tracking_uri, include_unfinished)
    if raw.empty:
        raise InputError(
            f"Experiment {experiment!r} at {tracking_uri} has no "
            f"{'' if include_unfinished else 'FINISHED '}runs"
            + (f" (left out: {excluded})." if excluded else ".")
        )
    client = MlflowClient(tracking_uri=tracking_uri)
    metrics = list(dict.fromkeys([*SUMMARY_METRICS, *history_metrics, ELAPSED_METRIC]))
    tokens_per_step = pd.to_numeric(_column(raw, "params.tokens_per_step"), errors="coerce")
    if tokens_per_step.isna().any():
        # Only runs without the param need the logged token counter.
        metrics.append(TOKENS_METRIC)
    histories = _fetch_histories(client, raw["run_id"].tolist(), metrics)

    runs = _build_runs_table(raw, histories)
    history = _build_history_table(runs, histories, history_metrics)
    return ExperimentData(experiment, tracking_uri, runs, history, excluded)


def load_runs(
    experiment: str = DEFAULT_EXPERIMENT,
    tracking_uri: str = DEFAULT_TRACKING_URI,
    include_unfinished: bool = False,
) -> pd.DataFrame:
    """Just the one-row-per-run table (see :func:`load_experiment`)."""
    return load_experiment(experiment, tracking_uri, include_unfinished).runs


def _build_runs_table(raw: pd.DataFrame, histories: pd.DataFrame) -> pd.DataFrame:
    runs = pd.DataFrame(
        {
            "run_id": raw["run_id"],
            "run_name": _column(raw, "tags.mlflow.runName"),
            "status": raw["status"],
            "experiment_name": _column(raw, "tags.experiment_name"),
            "sweep_id": _column(raw, "tags.sweep_id"),
            "git_commit": _column(raw, "tags.git_commit"),
            "phase": _column(raw, "tags.phase").fillna("report"),
            "model": _tag_or_param(raw, "model", "model.name"),
            "data": _column(raw, "params.data.name"),
        }
    )
    # Sweeps that found the run already finished (tags in_sweep.<id>, gpt5_ablate.train.finished).
    member_tags = [c for c in raw.columns if str(c).startswith("tags.in_sweep.")]
    runs["also_in_sweeps"] = [
        ",".join(c.removeprefix("tags.in_sweep.") for c in member_tags if row[c] == "true")
        for _, row in raw[member_tags].iterrows()
    ]
    for factor in FACTORS:
        runs[factor] = _tag_or_param(raw, factor, f"{factor}.name")
        if factor in LEGACY_DEFAULTS:
            runs[factor] = runs[factor].fillna(LEGACY_DEFAULTS[factor])
    runs["seed"] = pd.to_numeric(_tag_or_param(raw, "seed", "seed"), errors="coerce").astype(
        "Int64"
    )
    lr_scale = pd.to_numeric(_tag_or_param(raw, "lr_scale", "optimizer.lr_scale"), errors="coerce")
    # Runs that predate the LR multiplier trained at the configured rates, i.e. scale 1.
    runs["lr_scale"] = lr_scale.fillna(1.0)
    for param, column in NUMERIC_PARAMS.items():
        runs[column] = pd.to_numeric(_column(raw, f"params.{param}"), errors="coerce")

    by_run = {run_id: group for run_id, group in histories.groupby("run_id")}
    summaries = [_summarize_run(by_run.get(run_id)) for run_id in runs["run_id"]]
    summary = pd.DataFrame(summaries, index=runs.index)
    runs = pd.concat([runs, summary], axis=1)
    for metric, column in FULL_SPLIT_METRICS.items():
        runs[column] = pd.to_numeric(_column(raw, f"metrics.{metric}"), errors="coerce")
    runs["last_val_loss"] = runs["final_val_loss"]
    full = runs["full_val_loss"].notna()
    runs["final_val_loss"] = runs["full_val_loss"].where(full, runs["last_val_loss"])
    runs["final_val_loss_source"] = np.where(full, "full split", "last periodic eval")
    full_ppl = runs["full_val_perplexity"].fillna(np.exp(runs["full_val_loss"]))
    runs["final_val_perplexity"] = full_ppl.where(full, runs["final_val_perplexity"])
    runs["final_val_accuracy"] = runs["full_val_accuracy"].fillna(runs["final_val_accuracy"])

    # Budget: planned steps x tokens per step; runs without total_steps use the steps they logged.
    steps = runs["total_steps"].fillna(runs["final_step"])
    runs["tokens_seen"] = runs["final_step"] * runs["tokens_per_step"]
    runs["tokens_seen"] = runs["tokens_seen"].fillna(summary["logged_tokens_seen"])
    runs["budget_tokens"] = (steps * runs["tokens_per_step"]).fillna(runs["tokens_seen"])
    runs = runs.drop(columns="logged_tokens_seen")
    runs = add_derived_sizes(runs)
    runs["train_flops"] = runs["tokens_seen"] * runs["flops_per_token"]
    # Runs that never logged elapsed time still have MLflow's own start/end timestamps.
    duration_s = (raw["end_time"] - raw["start_time"]).dt.total_seconds()
    # The run's own clock at its end (what the console prints), else its last logged time.
    final_clock = pd.to_numeric(_column(raw, "metrics.final/elapsed_s"), errors="coerce")
    runs["wall_time_source"] = np.where(final_clock.notna(), "final/elapsed_s", "time/elapsed_s")
    runs["wall_time_s"] = final_clock.fillna(runs["wall_time_s"]).fillna(duration_s)
    runs["start_time"] = raw["start_time"]
    runs["end_time"] = raw["end_time"]
    runs.insert(1, "arm", arm_labels(runs))
    return runs.sort_values(["arm", "seed", "lr_scale"], kind="stable").reset_index(drop=True)


def add_derived_sizes(runs: pd.DataFrame) -> pd.DataFrame:
    """Non-embedding active parameters where a run predates that param: active minus the
    embedding share (total − non-embedding), which is exact for dense and MoE models alike."""
    if "n_params_non_embedding_active" not in runs:
        runs["n_params_non_embedding_active"] = np.nan
    embedding = runs["n_params"] - runs["n_params_non_embedding"]
    derived = runs["n_params_active"] - embedding
    runs["n_params_non_embedding_active"] = runs["n_params_non_embedding_active"].fillna(derived)
    return runs


def _summarize_run(history: pd.DataFrame | None) -> dict[str, float]:
    """Best and final values of the validation metrics, and the run's extent."""
    out: dict[str, float] = {}
    for metric, better in SUMMARY_METRICS.items():
        name = metric.replace("/", "_")
        points = history[history["metric"] == metric] if history is not None else None
        if points is None or points.empty:
            out[f"best_{name}"] = math.nan
            out[f"final_{name}"] = math.nan
            continue
        values = points.sort_values("step")["value"]
        out[f"best_{name}"] = float(values.min() if better == "min" else values.max())
        out[f"final_{name}"] = float(values.iloc[-1])
    # A run without logged perplexity still has one implied by its loss (nats/token).
    for kind in ("best", "final"):
        if math.isnan(out[f"{kind}_val_perplexity"]) and not math.isnan(out[f"{kind}_val_loss"]):
            out[f"{kind}_val_perplexity"] = math.exp(out[f"{kind}_val_loss"])
    if history is None or history.empty:
        out.update(final_step=math.nan, wall_time_s=math.nan, logged_tokens_seen=math.nan)
        return out
    out["final_step"] = float(history["step"].max())
    elapsed = history[history["metric"] == ELAPSED_METRIC]
    out["wall_time_s"] = float(elapsed["value"].max()) if not elapsed.empty else math.nan
    tokens = history[history["metric"] == TOKENS_METRIC]
    out["logged_tokens_seen"] = float(tokens["value"].max()) if not tokens.empty else math.nan
    return out


def _build_history_table(
    runs: pd.DataFrame, histories: pd.DataFrame, metrics: Sequence[str]
) -> pd.DataFrame:
    table = histories[histories["metric"].isin(metrics)].copy()
    if table.empty:
        return pd.DataFrame(columns=list(HISTORY_COLUMNS))
    info = runs.set_index("run_id")
    table["arm"] = table["run_id"].map(info["arm"])
    table["seed"] = table["run_id"].map(info["seed"]).astype("Int64")
    table["lr_scale"] = table["run_id"].map(info["lr_scale"])
    table["tokens_seen"] = table["step"] * table["run_id"].map(info["tokens_per_step"])
    missing = table["tokens_seen"].isna()
    if missing.any():
        logged = histories[histories["metric"] == TOKENS_METRIC]
        table.loc[missing, "tokens_seen"] = _interpolate_per_run(
            table[missing], logged, "tokens_seen"
        )
    elapsed = histories[histories["metric"] == ELAPSED_METRIC]
    table["elapsed_s"] = _interpolate_per_run(table, elapsed, "elapsed_s")
    table = table[list(HISTORY_COLUMNS)]
    return table.sort_values(
        ["arm", "seed", "run_id", "metric", "step"], kind="stable"
    ).reset_index(drop=True)
