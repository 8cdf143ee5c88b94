"""A run that already finished: ``finished.json`` in its run dir, written once the run is done.

Re-running a finished run (the same command, or the same configuration as one job of a sweep)
reads its result back instead of training, evaluating or logging again; ``trainer.resume=false``
trains it again from step 0. The record names the final checkpoint: a run whose final checkpoint
is gone or damaged is not finished, and resumes as usual.

When the run dir holds nothing (no ``finished.json``, no checkpoint: a scratch disk purged, a fresh
clone of committed results), the tracking store is asked instead: a FINISHED run of the same
experiment whose run dir had the same name (the name ends in the run's identity hash, see
gpt5_ablate.run_identity) is that run, and its recorded result is reported. It has no
checkpoint here to resume or generate from; ``trainer.resume=false`` trains it again.

A finished run found by a sweep joins that sweep, so the sweep's report counts it: it is tagged
``in_sweep.<sweep_id>`` (a run may belong to several sweeps: the one that trained it, and every
sweep that found it finished), and gets ``sweep_id`` too when it had none (a single run made
before the sweep). ``sweep_id`` itself never changes: it names the sweep that trained the run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from gpt5_ablate.files import write_atomic
from gpt5_ablate.train.checkpoint_files import quick_damage
from gpt5_ablate.train.records import TrainResult

log = logging.getLogger("gpt5_ablate")
FINISHED_FILE = "finished.json"
SWEEP_MEMBER_TAG = "in_sweep."  # + sweep id = "true" (read by gpt5_ablate.analysis.load)
FORMAT = 1


@dataclasses.dataclass
class AlreadyFinished(TrainResult):
    """The result of an earlier, finished run of the same configuration: from its run dir, or,
    when ``recorded_in`` names a tracking store, from that store alone (no checkpoint here)."""

    recorded_in: str | None = None


def record_finished(result: TrainResult) -> None:
    """Write ``finished.json``: the run's result, with the checkpoint relative to the run dir."""
    record: dict[str, Any] = {
        "format": FORMAT,
        **dataclasses.asdict(result),
        "run_dir": ".",
        "checkpoint": str(result.checkpoint.relative_to(result.run_dir)),
    }
    write_atomic(result.run_dir / FINISHED_FILE, json.dumps(record, indent=1, default=str))


def forget_finished(run_dir: Path) -> None:
    """The run trains again (``trainer.resume=false``, or it resumes a checkpoint): it is no
    longer finished until it finishes again."""
    (run_dir / FINISHED_FILE).unlink(missing_ok=True)


def read_finished(run_dir: Path, total_steps: int) -> AlreadyFinished | None:
    """The run dir's finished result, or None when it has none that still holds: no record, a
    record of another budget, or a final checkpoint that is missing or damaged (file sizes are
    checked; the checksums are verified when a run resumes from it)."""
    try:
        record = json.loads((run_dir / FINISHED_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        return None
    if record.get("steps") != total_steps:
        return None
    known = {f.name for f in dataclasses.fields(TrainResult)}
    values = {k: v for k, v in record.items() if k in known}
    values["run_dir"] = run_dir
    values["checkpoint"] = run_dir / str(record.get("checkpoint", ""))
    if quick_damage(values["checkpoint"]):
        return None
    try:
        return AlreadyFinished(**values)
    except TypeError:  # written by a harness version whose result had other fields
        return None


def recorded_finished(
    run_dir: Path, total_steps: int, uri: str, experiment: str
) -> AlreadyFinished | None:
    """The store's record of this run when it finished elsewhere or its run dir was emptied:
    the newest FINISHED run of ``experiment`` whose ``run_dir`` tag has this run dir's name and
    whose final pass was logged at ``total_steps``. None when there is none, or the store can't
    be read (the run then trains, as it would without a store)."""
    from mlflow.tracking import MlflowClient

    from gpt5_ablate.secrets import redact_text, redact_uri
    from gpt5_ablate.train.tracking import sqlite_file

    store = sqlite_file(uri)
    if store is not None and not store.is_file():
        return None  # no store yet: asking would create one
    try:
        client = MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name(experiment)
        if found is None:
            return None
        # LIKE's "_" matches any one character: the exact name is compared below.
        runs = client.search_runs(
            [found.experiment_id],
            filter_string=f"attributes.status = 'FINISHED' and tags.run_dir LIKE '%{run_dir.name}'",
            order_by=["attributes.start_time DESC"],
        )
        for run in runs:
            recorded_dir = run.data.tags.get("run_dir", "").replace("\\", "/")
            if recorded_dir.rsplit("/", 1)[-1] != run_dir.name:
                continue
            history = client.get_metric_history(run.info.run_id, "final/val_loss")
            if not history or history[-1].step != total_steps:
                continue
            first = [
                m for m in client.get_metric_history(run.info.run_id, "val/loss") if m.step == 0
            ]
            return _from_record(run, run_dir, total_steps, first, redact_uri(uri))
    except Exception as error:  # the store is down or unreadable: train as if it had no record
        log.warning(redact_text(f"warning: could not ask {uri} whether this run finished: {error}"))
    return None


def _from_record(
    run: Any, run_dir: Path, total_steps: int, first: list[Any], store: str
) -> AlreadyFinished:
    """A TrainResult rebuilt from an MLflow run's metrics and params (names as records.py logs)."""
    metrics, params = run.data.metrics, run.data.params
    full_eval = {
        k.removeprefix("final/val_"): v for k, v in metrics.items() if k.startswith("final/val_")
    }
    full_eval |= {
        "test_" + k.removeprefix("final/test_"): v
        for k, v in metrics.items()
        if k.startswith("final/test_") and "_pos_" not in k
    }
    nan = float("nan")
    # The last periodic eval; a run that logged none has its full-split loss in its place.
    final_eval = {k.removeprefix("val/"): v for k, v in metrics.items() if k.startswith("val/")}
    return AlreadyFinished(
        run_dir=run_dir,
        checkpoint=run_dir / "checkpoints",
        run_id=run.info.run_id,
        steps=total_steps,
        tokens=int(metrics.get("train/tokens_seen", 0)),
        elapsed_s=float(metrics.get("final/elapsed_s", nan)),
        final_eval=final_eval or {"loss": full_eval.get("loss", nan)},
        first_eval={"loss": first[0].value} if first else {},
        unigram_loss=float(params.get("unigram_val_loss", nan)),
        full_eval=full_eval,
        recorded_in=store,
    )


def join_sweep(uri: str, run_id: str, sweep_id: str) -> None:
    """Make a finished run a member of ``sweep_id`` (see the module's docstring)."""
    from mlflow.tracking import MlflowClient

    from gpt5_ablate.secrets import redact_text

    try:
        client = MlflowClient(tracking_uri=uri)
        tags = client.get_run(run_id).data.tags
        if tags.get("sweep_id") == sweep_id:
            return
        client.set_tag(run_id, f"{SWEEP_MEMBER_TAG}{sweep_id}", "true")
        if "sweep_id" not in tags:
            client.set_tag(run_id, "sweep_id", sweep_id)
    except Exception as error:  # the result stands; only the sweep's grouping is missing
        log.warning(
            redact_text(f"warning: could not add MLflow run {run_id} to sweep {sweep_id}: {error}")
        )
