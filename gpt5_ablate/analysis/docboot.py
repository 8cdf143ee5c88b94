"""Evaluation-set noise: a paired bootstrap over validation documents.

Each run logs ``eval/per_document.csv`` (``document,tokens,loss_sum``: the summed token loss in
nats of every document of the compared split: the held-out test split for runs that log one,
whose validation documents are in ``eval/per_document_val.csv``; the validation split for older
runs). Holding the trained models fixed, a
resample of the documents (with replacement, the SAME resample for every run, so runs stay
paired by document) gives every run a new loss ``Σ w·loss_sum / Σ w·tokens``, and the comparison
a new value: the mean over matched run pairs (same other factors, same seed) of ``loss(best) −
loss(other)``. The 2.5th and 97.5th percentiles of those values are the document-level
interval. It shows how much the comparison would move on another validation sample of the same
size, next to the seed-level interval of the model, which covers training noise.

Resampling draws multinomial document counts and applies them by matrix products, one batch of
resamples at a time; ``scipy.stats.bootstrap`` would materialise every resampled array of every
run at once, which for dozens of runs and thousands of documents does not fit in memory.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

#: The compared split's per-document losses: the TEST split for runs that log one (their
#: validation split's are in VAL_ARTIFACT), the validation split for older runs.
ARTIFACT = "eval/per_document.csv"
VAL_ARTIFACT = "eval/per_document_val.csv"
COLUMNS = ("document", "tokens", "loss_sum")
DEFAULT_RESAMPLES = 1000
BATCH = 200
PROGRESS_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


@contextmanager
def _no_progress_bars() -> Iterator[None]:
    """MLflow draws a progress bar per download; a report downloads one file per run."""
    previous = os.environ.get(PROGRESS_ENV)
    os.environ[PROGRESS_ENV] = "false"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(PROGRESS_ENV, None)
        else:
            os.environ[PROGRESS_ENV] = previous


def load_per_document(
    tracking_uri: str, run_ids: Sequence[str], artifact: str = ARTIFACT
) -> dict[str, pd.DataFrame]:
    """``{run_id: per-document table}`` for the runs that logged the artifact (others skipped)."""
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri)
    tables: dict[str, pd.DataFrame] = {}
    with _no_progress_bars(), tempfile.TemporaryDirectory(prefix="per_document_") as tmp:
        for run_id in run_ids:
            try:
                listed = {a.path for a in client.list_artifacts(run_id, "eval")}
                if artifact not in listed:
                    continue
                path = download_artifacts(
                    run_id=run_id,
                    artifact_path=artifact,
                    dst_path=str(Path(tmp) / run_id),
                    tracking_uri=tracking_uri,
                )
                table = pd.read_csv(path)
            except (MlflowException, OSError, ValueError):
                continue
            if set(COLUMNS) <= set(table.columns) and not table.empty:
                tables[run_id] = table[list(COLUMNS)]
    return tables


@dataclass(frozen=True)
class DocInterval:
    low: float
    high: float
    estimate: float
    n_documents: int
    n_pairs: int

    def text(self) -> str:
        return (
            f"[{self.low:+.3f}, {self.high:+.3f}] ({self.n_documents} docs, {self.n_pairs} pairs)"
        )


def matched_pairs(
    runs: pd.DataFrame,
    factor: str,
    level: str,
    reference: str,
    condition: Sequence[tuple[str, str]],
    factors: Sequence[str],
) -> list[tuple[str, str]]:
    """Run-id pairs ``(level run, reference run)`` equal in every other factor and the seed."""
    subset = runs
    for name, value in condition:
        subset = subset[subset[name].astype(str) == value]
    keys = [f for f in factors if f != factor] + ["seed"]
    a = subset[subset[factor] == level].drop_duplicates(keys, keep="last").set_index(keys)
    b = subset[subset[factor] == reference].drop_duplicates(keys, keep="last").set_index(keys)
    joined = a[["run_id"]].join(b[["run_id"]], how="inner", lsuffix="_a", rsuffix="_b")
    return list(zip(joined["run_id_a"], joined["run_id_b"], strict=True))


def bootstrap_pairs(
    pairs: Sequence[tuple[str, str]],
    tables: dict[str, pd.DataFrame],
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> DocInterval | None:
    """Percentile interval of the mean paired loss difference over document resamples."""
    pairs = [p for p in pairs if p[0] in tables and p[1] in tables]
    if not pairs:
        return None
    run_ids = list(dict.fromkeys(r for pair in pairs for r in pair))
    documents = set.intersection(*(set(tables[r]["document"]) for r in run_ids))
    if not documents:
        return None
    order = sorted(documents, key=str)
    loss = np.column_stack(
        [
            tables[r].drop_duplicates("document").set_index("document").loc[order, "loss_sum"]
            for r in run_ids
        ]
    ).astype(float)
    tokens = np.column_stack(
        [
            tables[r].drop_duplicates("document").set_index("document").loc[order, "tokens"]
            for r in run_ids
        ]
    ).astype(float)
    index = {r: i for i, r in enumerate(run_ids)}
    a_idx = np.array([index[a] for a, _ in pairs])
    b_idx = np.array([index[b] for _, b in pairs])

    def effect(run_loss: np.ndarray) -> np.ndarray:
        return (run_loss[..., a_idx] - run_loss[..., b_idx]).mean(axis=-1)

    estimate = float(effect(loss.sum(axis=0) / tokens.sum(axis=0)))
    rng = np.random.default_rng(seed)
    n_docs = len(order)
    values = []
    for start in range(0, n_resamples, BATCH):
        size = min(BATCH, n_resamples - start)
        counts = rng.multinomial(n_docs, np.full(n_docs, 1.0 / n_docs), size=size).astype(float)
        values.append(effect((counts @ loss) / (counts @ tokens)))
    draws = np.concatenate(values)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(draws, [tail, 100 - tail])
    if math.isnan(low):
        return None
    return DocInterval(float(low), float(high), estimate, n_docs, len(pairs))
