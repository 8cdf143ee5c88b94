"""Hydra callback for sweeps: create the MLflow store once, group the runs, summarise failures.

Parallel jobs writing to one fresh SQLite store race on its schema creation, so the store and the
experiment are created here, before any job starts. Every job of the sweep gets the same
``sweep_id`` tag and is nested under a parent run, so the MLflow UI shows them together. Hydra
reports only the first failed job; ``on_multirun_end`` prints every job's outcome.
"""

from __future__ import annotations

import os
import sys
import uuid
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

SWEEP_ID_ENV = "GPT5_ABLATE_SWEEP_ID"
PARENT_RUN_ENV = "GPT5_ABLATE_PARENT_RUN_ID"


class SweepCallback(Callback):
    def __init__(self) -> None:
        self.outcomes: list[tuple[str, str, str]] = []  # (overrides, status, reason)
        self.parent_run_id: str | None = None
        self.uri: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_id = os.environ.get(SWEEP_ID_ENV) or uuid.uuid4().hex[:12]
        os.environ[SWEEP_ID_ENV] = sweep_id
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
            print(f"warning: could not prepare MLflow for the sweep: {error}", file=sys.stderr)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        overrides = " ".join(job_return.overrides or [])
        if job_return.status == JobStatus.COMPLETED:
            self.outcomes.append((overrides, "FINISHED", ""))
        else:
            error = job_return._return_value
            reason = f"{type(error).__name__}: {error}".splitlines()[0][:300]
            status = (
                "KILLED"
                if type(error).__name__ in ("TrainingInterrupted", "KeyboardInterrupt")
                else "FAILED"
            )
            self.outcomes.append((overrides, status, reason))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        failed = [o for o in self.outcomes if o[1] != "FINISHED"]
        if self.parent_run_id and self.uri:
            from mlflow.tracking import MlflowClient

            try:
                MlflowClient(self.uri).set_terminated(
                    self.parent_run_id, "FAILED" if failed else "FINISHED"
                )
            except Exception as error:
                print(f"warning: could not close the sweep's parent run: {error}", file=sys.stderr)
        if not self.outcomes:
            return
        lines = [
            f"\nSweep summary: {len(self.outcomes) - len(failed)}/{len(self.outcomes)} runs finished, {len(failed)} failed."
        ]
        for overrides, status, reason in self.outcomes:
            lines.append(
                f"  {status:8s} {overrides}" + (f"\n           -> {reason}" if reason else "")
            )
        print("\n".join(lines), file=sys.stderr)
