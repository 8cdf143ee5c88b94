"""A plain-file export of an experiment that ``report source=<dir>`` reads instead of MLflow.

Layout of an export directory::

    export.json      {"format": 1, "experiment": ..., "runs": "runs.csv",
                      "history": "history.csv" or null,
                      "per_document": "per_document/{run_id}.csv", "origin": "..."}
    runs.csv         one row per run: the columns of :func:`gpt5_ablate.analysis.load.load_runs`
    history.csv      optional: the long metric-history table (learning curves)
    per_document/    optional: each run's ``eval/per_document.csv`` (and, for runs with a
                     test split, ``per_document_val/``: their ``eval/per_document_val.csv``)

``per_document`` is a path pattern relative to the export directory, so an export can point at
artifacts kept elsewhere in the results folder (``../artifacts/{run_id}/artifacts/eval/...``).
Committing an export makes a report regenerable without the MLflow store that produced it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from gpt5_ablate.analysis.docboot import COLUMNS
from gpt5_ablate.analysis.load import (
    FULL_SPLIT_METRICS,
    HISTORY_COLUMNS,
    NUMERIC_PARAMS,
    ExperimentData,
    add_derived_sizes,
    arm_labels,
)
from gpt5_ablate.analysis.stats import LEGACY_DEFAULTS
from gpt5_ablate.errors import InputError

MANIFEST = "export.json"
FORMAT = 1
#: Columns read as text whatever they look like (ids made of digits stay ids).
TEXT_COLUMNS = (
    "run_id", "arm", "run_name", "status", "experiment_name", "sweep_id", "git_commit", "phase",
    "model", "data", "attention", "optimizer", "norm", "pos", "ffn", "window", "sinks",
    "final_val_loss_source",
)  # fmt: skip
DEFAULT_PER_DOCUMENT = "per_document/{run_id}.csv"


def write_export(
    data: ExperimentData,
    out_dir: str | Path,
    per_document: dict[str, pd.DataFrame] | None = None,
    origin: str = "",
    per_document_val: dict[str, pd.DataFrame] | None = None,
) -> Path:
    """Write ``data`` (and the per-document tables given) as an export directory."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data.runs.to_csv(out / "runs.csv", index=False)
    history = None
    if not data.history.empty:
        data.history.to_csv(out / "history.csv", index=False)
        history = "history.csv"
    pattern = DEFAULT_PER_DOCUMENT
    for tables in (per_document or {}, per_document_val or {}):
        for run_id, table in tables.items():
            path = out / pattern.format(run_id=run_id)
            path.parent.mkdir(parents=True, exist_ok=True)
            table.to_csv(path, index=False)
        pattern = DEFAULT_PER_DOCUMENT.replace("per_document", "per_document_val")
    manifest = {
        "format": FORMAT,
        "experiment": data.experiment,
        "runs": "runs.csv",
        "history": history,
        "per_document": DEFAULT_PER_DOCUMENT,
        "origin": origin or f"MLflow experiment {data.experiment!r} at {data.tracking_uri}",
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return out


def read_manifest(path: str | Path) -> dict[str, object]:
    directory = Path(path)
    manifest = directory / MANIFEST
    if not manifest.is_file():
        raise InputError(
            f"source={path}: no {MANIFEST} there. Pass a directory written by an export (it holds "
            f"{MANIFEST} and runs.csv), e.g. source=docs/results/cpu_hour/export."
        )
    raw = json.loads(manifest.read_text(encoding="utf-8"))
    if raw.get("format") != FORMAT:
        raise InputError(f"{manifest}: format {raw.get('format')!r}; this version reads {FORMAT}.")
    return raw


def load_export(path: str | Path, include_unfinished: bool = False) -> ExperimentData:
    """The export at ``path`` as :class:`ExperimentData` (``tracking_uri`` names the export)."""
    directory = Path(path)
    manifest = read_manifest(directory)
    dtypes = dict.fromkeys(TEXT_COLUMNS, "string")
    runs = pd.read_csv(directory / str(manifest["runs"]), dtype=dtypes)
    runs = runs.astype({c: object for c in TEXT_COLUMNS if c in runs})
    runs["seed"] = pd.to_numeric(runs["seed"], errors="coerce").astype("Int64")
    for column in ("start_time", "end_time"):
        if column in runs:
            runs[column] = pd.to_datetime(runs[column], errors="coerce", utc=True)
    excluded: dict[str, int] = {}
    if not include_unfinished and "status" in runs:
        finished = runs["status"] == "FINISHED"
        excluded = {str(k): int(v) for k, v in runs.loc[~finished, "status"].value_counts().items()}
        runs = runs[finished]
    runs = add_derived_sizes(_complete(runs.reset_index(drop=True)))
    runs["arm"] = arm_labels(runs)
    runs = runs.sort_values(["arm", "seed", "lr_scale"], kind="stable").reset_index(drop=True)
    history = pd.DataFrame(columns=list(HISTORY_COLUMNS))
    if manifest.get("history"):
        history = pd.read_csv(directory / str(manifest["history"]), dtype={"run_id": "string"})
        history["run_id"] = history["run_id"].astype(object)
        history["arm"] = history["run_id"].map(runs.set_index("run_id")["arm"])
    experiment = str(manifest["experiment"])
    data = ExperimentData(experiment, f"export {directory}", runs, history, excluded)
    data.export_dir = directory
    data.per_document_pattern = str(manifest.get("per_document") or DEFAULT_PER_DOCUMENT)
    return data


def _complete(runs: pd.DataFrame) -> pd.DataFrame:
    """Columns older exports lack, as the MLflow loader reads runs that predate them."""
    for factor, level in LEGACY_DEFAULTS.items():
        runs[factor] = runs[factor].fillna(level) if factor in runs else level
    runs["phase"] = runs["phase"].fillna("report") if "phase" in runs else "report"
    for column in (*NUMERIC_PARAMS.values(), *FULL_SPLIT_METRICS.values(), "budget_tokens"):
        if column not in runs:
            runs[column] = float("nan")
    runs["budget_tokens"] = runs["budget_tokens"].fillna(runs["tokens_seen"])
    if "last_val_loss" not in runs:
        runs["last_val_loss"] = runs["final_val_loss"]
    if "final_val_loss_source" not in runs:
        full = runs["full_val_loss"].notna()
        runs["final_val_loss_source"] = full.map({True: "full split", False: "last periodic eval"})
    for column in ("data", "sweep_id"):
        if column not in runs:
            runs[column] = None
    return runs


def export_per_document(
    data: ExperimentData, run_ids: Sequence[str], validation: bool = False
) -> dict[str, pd.DataFrame]:
    """``{run_id: per-document table}`` from an export's files (runs without one skipped);
    ``validation``: the validation split's files (``per_document_val``) of test-split runs."""
    pattern = data.per_document_pattern
    if validation:
        pattern = pattern.replace("per_document", "per_document_val")
    tables = {}
    for run_id in run_ids:
        path = Path(data.export_dir or ".") / pattern.format(run_id=run_id)
        if not path.is_file():
            continue
        table = pd.read_csv(path)
        if set(COLUMNS) <= set(table.columns) and not table.empty:
            tables[run_id] = table[list(COLUMNS)]
    return tables
