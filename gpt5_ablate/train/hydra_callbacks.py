"""Hydra callback for sweeps: create the MLflow store once, group the runs, summarise failures.

Parallel jobs writing to one fresh SQLite store race on its schema creation, so the store and the
experiment are created here, before any job starts. Every job of the sweep gets the same
``sweep_id`` tag and is nested under a parent run, so the MLflow UI shows them together. Hydra
reports only the first failed job; ``on_multirun_end`` prints every job's outcome.

A job that fails on a reported error (bad config, NaN loss) returns a ``JobFailure`` instead of
raising, so Hydra prints no traceback and goes on with the other jobs. Hydra skips
``on_multirun_end`` when a sweep ends early (a job raised an unexpected error, or a stop signal
ended the sweep), so ``finish_sweep`` (called by the CLI after Hydra returns) prints the summary
and closes the parent run then.

A job whose run already finished (the same configuration, run before) trains nothing and returns
``JobAlreadyFinished``: it counts as finished, and the summary says it was not trained again. A
sweep whose jobs had all finished before deletes its (empty) parent run.

Launchers that run jobs in other processes (joblib, SLURM) call ``on_job_end`` there, so every
outcome is also appended to ``<sweep dir>/.sweeps/<sweep_id>.jsonl``, which the parent reads.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from gpt5_ablate.errors import TrainingInterrupted
from gpt5_ablate.secrets import redact_file, redact_text

SWEEP_ID_ENV = "GPT5_ABLATE_SWEEP_ID"
PARENT_RUN_ENV = "GPT5_ABLATE_PARENT_RUN_ID"


@dataclass
class JobFailure:
    """A sweep job's return value when it failed on an error already reported to the user."""

    reason: str
    status: str = "FAILED"  # or KILLED


@dataclass
class JobAlreadyFinished:
    """A sweep job's return value when its run had finished before: nothing was trained."""

    final_eval: dict[str, float]
    where: str  # the run dir's name and the MLflow run


ALREADY_FINISHED = "already finished, not trained again"  # the summary's note for such a job

_active: SweepCallback | None = None  # the sweep running in this process, until it is reported


class SweepCallback(Callback):
    def __init__(self) -> None:
        self.outcomes: list[tuple[str, str, str]] = []  # (overrides, status, reason)
        self.parent_run_id: str | None = None
        self.uri: str | None = None
        self.reported = False
        self.ended_early = False  # Hydra never called on_multirun_end (a job raised, a signal)
        self.outcome_file: Path | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _active
        _active = self
        sweep_id = os.environ.get(SWEEP_ID_ENV) or uuid.uuid4().hex[:12]
        os.environ[SWEEP_ID_ENV] = sweep_id
        self.outcome_file = _outcome_file(config)
        if not config.tracking.enabled:
            return
        from mlflow.tracking import MlflowClient

        from gpt5_ablate.train.tracking import check_tracking_uri, ensure_experiment

        self.uri = str(config.tracking.uri)
        try:
            check_tracking_uri(self.uri)
            experiment_id = ensure_experiment(self.uri, str(config.tracking.experiment))
            name = config.get("experiment_name") or "sweep"
            parent = MlflowClient(self.uri).create_run(
                experiment_id,
                run_name=f"{name}-{sweep_id}",
                tags={"sweep_id": sweep_id, "sweep_parent": "true"},
            )
            self.parent_run_id = parent.info.run_id
            os.environ[PARENT_RUN_ENV] = self.parent_run_id
        except Exception as error:  # each job will report the tracking problem itself
            print(
                redact_text(f"warning: could not prepare MLflow for the sweep: {error}"),
                file=sys.stderr,
            )

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        _redact_multirun_file(config)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        overrides = redact_text(" ".join(job_return.overrides or []))
        if job_return.status == JobStatus.COMPLETED:
            value = job_return.return_value
            if isinstance(value, JobFailure):
                outcome = (overrides, value.status, _first_line(value.reason))
            elif isinstance(value, JobAlreadyFinished):
                outcome = (overrides, "FINISHED", f"{ALREADY_FINISHED}: {value.where}")
            else:
                outcome = (overrides, "FINISHED", "")
        else:
            error = job_return._return_value
            reason = _first_line(f"{type(error).__name__}: {error}")
            status = (
                "KILLED" if isinstance(error, TrainingInterrupted | KeyboardInterrupt) else "FAILED"
            )
            outcome = (overrides, status, reason)
        self.outcomes.append(outcome)
        path = _outcome_file(config)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as file:  # one short line per job: appends do not interleave
                file.write(json.dumps(outcome) + "\n")

    def record_interrupted(self, overrides: str, reason: str) -> None:
        """A job stopped by a signal ends the sweep before Hydra calls on_job_end."""
        self.outcomes.append((overrides, "KILLED", _first_line(reason)))

    @property
    def n_failed(self) -> int:
        return sum(status != "FINISHED" for _, status, _ in self.outcomes)

    @property
    def n_already_finished(self) -> int:
        return sum(reason.startswith(ALREADY_FINISHED) for _, _, reason in self.outcomes)

    def on_multirun_end(self, config: DictConfig | None = None, **kwargs: Any) -> None:
        if self.reported:
            return
        self.reported = True
        if config is not None:
            _redact_multirun_file(config)
        if self.outcome_file is not None and self.outcome_file.exists():
            # Jobs run by other processes (joblib, SLURM) reported there, not in self.outcomes.
            recorded = [
                tuple(json.loads(line)) for line in self.outcome_file.read_text().splitlines()
            ]
            if len(recorded) > len(self.outcomes):
                self.outcomes = recorded  # type: ignore[assignment]
        failed = [o for o in self.outcomes if o[1] != "FINISHED"]
        if self.parent_run_id and self.uri:
            self._close_parent_run("FAILED" if failed or self.ended_early else "FINISHED")
        if not self.outcomes:
            return
        earlier = (
            f" ({self.n_already_finished} had finished before: not trained again)"
            if self.n_already_finished
            else ""
        )
        lines = [
            f"\nSweep summary: {len(self.outcomes) - len(failed)}/{len(self.outcomes)} runs "
            f"finished{earlier}, {len(failed)} failed."
            + (" The sweep stopped before its last job." if self.ended_early else "")
        ]
        # Show each job by the overrides that tell it apart, not the ones every job shares.
        shared = set.intersection(*(set(o.split()) for o, _, _ in self.outcomes))
        if len(self.outcomes) == 1:
            shared = set()
        for overrides, status, reason in self.outcomes:
            shown = " ".join(t for t in overrides.split() if t not in shared) or overrides
            lines.append(f"  {status:8s} {shown}" + (f"\n           -> {reason}" if reason else ""))
        print(redact_text("\n".join(lines)), file=sys.stderr)

    def _close_parent_run(self, status: str) -> None:
        """End the parent run; delete it when every job had finished before (no run of this
        sweep trained, so it would group nothing)."""
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.uri)
        try:
            if self.outcomes and self.n_already_finished == len(self.outcomes):
                client.delete_run(self.parent_run_id)
            else:
                client.set_terminated(self.parent_run_id, status)
        except Exception as error:
            print(
                redact_text(f"warning: could not close the sweep's parent run: {error}"),
                file=sys.stderr,
            )


def _outcome_file(config: DictConfig) -> Path | None:
    sweep_id = os.environ.get(SWEEP_ID_ENV)
    try:
        sweep_dir = config.hydra.sweep.dir
    except Exception:  # no hydra node (e.g. a composed config in a test)
        return None
    return Path(str(sweep_dir)) / ".sweeps" / f"{sweep_id}.jsonl" if sweep_id else None


def _first_line(text: str) -> str:
    lines = redact_text(text).strip().splitlines()
    return lines[0][:300] if lines else ""


def _redact_multirun_file(config: DictConfig) -> None:
    """Hydra writes the sweep's config (its overrides included) before the jobs start."""
    try:
        path = Path(str(config.hydra.sweep.dir)) / "multirun.yaml"
    except Exception:  # no hydra node (a composed config in a test)
        return
    if path.is_file():
        redact_file(path)


def job_failed(error: BaseException, hydra_cfg: Any) -> JobFailure:
    """A sweep job's reported error: the other jobs go on (the job counts as failed in the
    summary and the exit status, without the traceback Hydra prints for a raised error)."""
    if "BasicLauncher" not in str(hydra_cfg.launcher.get("_target_", "")):
        # Jobs in other processes (joblib, SLURM): the sweep callback there is not the one that
        # summarises, so let the launcher record the failure as Hydra does.
        raise error
    reason = redact_text(f"{type(error).__name__}: {error}")
    if isinstance(error, TrainingInterrupted):
        # Ctrl-C / SIGTERM stops the whole sweep, not just this job; re-running the sweep
        # resumes every job. SystemExit passes through Hydra, which would go on otherwise.
        if _active is not None:
            _active.record_interrupted(" ".join(hydra_cfg.overrides.task), reason)
        sys.exit(130)
    return JobFailure(reason)


def finish_sweep() -> int:
    """After Hydra returns (or raises): report a sweep Hydra ended without ``on_multirun_end``.

    Returns the sweep's exit status: 1 when any job failed or was killed, 0 otherwise (and 0 when
    no sweep ran in this process).
    """
    global _active
    sweep, _active = _active, None
    if sweep is None:
        return 0
    if not sweep.reported:
        sweep.ended_early = True
        sweep.on_multirun_end()
    return 1 if sweep.n_failed or sweep.ended_early else 0
