"""MLflow tracking for one training run.

Design points:
- Metrics are buffered and sent with ``log_batch`` (one request per ``flush_every`` values),
  never one call per value.
- A resumed run logs into the same MLflow run. Values for steps the run already holds are
  dropped, so the history has no repeats after a resume (the replayed steps are identical anyway
  on a deterministic run).
- Tracking must never cost a run its training: when the store is unreachable the tracker keeps
  the values in memory, warns once, retries at the first flush ``RETRY_AFTER_S`` later (so a
  store that hangs cannot stall training at every flush), and at the end says what it could not
  log. Every metric is also appended to ``metrics.jsonl`` in the run dir.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any

from gpt5_ablate.errors import InputError
from gpt5_ablate.files import write_atomic
from gpt5_ablate.secrets import redact_text, redact_uri, uri_without_userinfo

log = logging.getLogger("gpt5_ablate")

# Fail fast instead of retrying for minutes when a remote server is down.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

STATUSES = ("FINISHED", "FAILED", "KILLED")
# The run dir's MLflow run, written as soon as the run exists: a run killed before its first
# checkpoint is re-run into the same MLflow run instead of a duplicate.
RUN_ID_FILE = "mlflow_run.json"
RETRY_AFTER_S = 60.0  # after a failed call, send nothing until this much time has passed


def sqlite_file(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` store (None for any other kind). Opening a missing file
    would create an empty store, so readers check it exists first."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///")).expanduser()


def check_tracking_uri(uri: str) -> None:
    """Raise InputError now, before any training, if the store cannot be used."""
    path = sqlite_file(uri)
    if path is not None:
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.exists():
            raise InputError(
                f"tracking.uri={redact_uri(uri)!r} points at a SQLite file in {parent}, which does not exist; "
                "create the directory or use the default sqlite:///mlflow.db."
            )
        return
    if uri.startswith(("http://", "https://")):
        import urllib.error
        import urllib.request

        try:
            health = uri_without_userinfo(uri).rstrip("/") + "/health"  # /health needs no login
            with urllib.request.urlopen(health, timeout=5) as response:
                response.read()
        except (urllib.error.URLError, OSError, ValueError) as error:
            raise InputError(
                f"tracking.uri={redact_uri(uri)!r} is unreachable ({error}); start the server "
                "(`mlflow server --backend-store-uri sqlite:///mlflow.db --port 5000`) or use a "
                "local store such as sqlite:///mlflow.db."
            ) from error
        return
    if uri.startswith(("file:", "/", ".")) or "://" not in uri:
        warnings.warn(
            f"tracking.uri={redact_uri(uri)!r} is a file store, which MLflow 3 deprecates; prefer "
            "sqlite:///mlflow.db.",
            stacklevel=2,
        )


def ensure_experiment(uri: str, name: str) -> str:
    """Create (or find) the experiment; returns its id. Creating the SQLite schema here, once,
    avoids parallel jobs racing to create it."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    try:
        experiment = client.get_experiment_by_name(name)
    except MlflowException as error:
        if getattr(error, "error_code", "") in ("UNAUTHENTICATED", "PERMISSION_DENIED") or any(
            code in str(error) for code in ("401", "403")
        ):
            raise InputError(
                f"The tracking server {redact_uri(uri)} refused the credentials "
                f"({redact_text(str(error)).splitlines()[0][:200]}). Set MLFLOW_TRACKING_USERNAME "
                "and MLFLOW_TRACKING_PASSWORD (see docs/scaling.md) or check your permissions."
            ) from None
        raise
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:  # another process created it between our two calls
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


class Tracker:
    """Logs one run. ``run_id`` given = resume that run."""

    def __init__(
        self,
        uri: str,
        experiment: str,
        run_dir: Path,
        run_name: str,
        tags: dict[str, str],
        params: dict[str, Any],
        run_id: str | None = None,
        flush_every: int = 50,
        reuse_finished: bool = True,
    ) -> None:
        """``run_id``: resume that run, unless it no longer exists (the store was reset), belongs to
        another experiment, or is FINISHED while ``reuse_finished`` is false; a new run otherwise."""
        from mlflow.entities import Param, RunTag
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        self.uri = redact_uri(uri)  # for messages; the client keeps the real one
        self.flush_every = flush_every
        self.run_dir = run_dir
        self.local_log = (run_dir / "metrics.jsonl").open("a")
        self._pending: list[Any] = []
        self._warned = False
        self._retry_at = 0.0  # time.monotonic() before which no call is attempted
        self._lost: list[str] = []  # tags and artifacts that could not be logged
        self._already_logged: dict[str, int] = {}
        experiment_id = ensure_experiment(uri, experiment)
        if run_id is not None:
            run_id = self._resumable(run_id, experiment_id, reuse_finished)
        if run_id is None:
            run = self.client.create_run(
                experiment_id, run_name=run_name, tags={k: str(v) for k, v in tags.items()}
            )
            self.run_id = run.info.run_id
            items = [Param(k, str(v)[:6000]) for k, v in params.items()]
            for start in range(0, len(items), 100):  # MLflow caps params per batch at 100
                self.client.log_batch(self.run_id, params=items[start : start + 100])
        else:
            self.run_id = run_id
            self.client.update_run(run_id, status="RUNNING")
            self.client.log_batch(run_id, tags=[RunTag("resumed", "true")])
            run = self.client.get_run(run_id)
            for key in run.data.metrics:
                history = self.client.get_metric_history(run_id, key)
                self._already_logged[key] = max((m.step for m in history), default=-1)

    def _resumable(self, run_id: str, experiment_id: str, reuse_finished: bool) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException as error:
            if getattr(error, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
                raise
            warnings.warn(
                f"MLflow run {run_id} (recorded in the run dir) does not exist at {self.uri}; "
                "logging into a new run.",
                stacklevel=3,
            )
            return None
        if run.info.experiment_id != experiment_id:
            return None
        if run.info.status == "FINISHED" and not reuse_finished:
            return None
        return run_id

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        self.local_log.write(json.dumps({"step": step, **metrics}) + "\n")
        for key, value in metrics.items():
            if step <= self._already_logged.get(key, -1):
                continue  # logged before an interruption; the resumed run replays it
            self._pending.append(Metric(key, float(value), timestamp, step))
        if len(self._pending) >= self.flush_every:
            self.flush()

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        if not self._call(
            self.client.log_batch, self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()]
        ):
            self._lost.append(f"tags {', '.join(tags)}")

    def flush(self, force: bool = False) -> bool:
        self.local_log.flush()
        while self._pending:
            batch = self._pending[:1000]  # MLflow caps metrics per batch at 1000
            if not self._call(self.client.log_batch, self.run_id, metrics=batch, force=force):
                return False
            del self._pending[: len(batch)]
        return True

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> bool:
        log = self.client.log_artifacts if path.is_dir() else self.client.log_artifact
        if self._call(log, self.run_id, str(path), artifact_path):
            return True
        shown = path.relative_to(self.run_dir) if path.is_relative_to(self.run_dir) else path
        self._lost.append(f"artifact {shown}")
        return False

    def finish(self, status: str) -> list[str]:
        """End the run; returns what could not be logged (empty when all went through)."""
        assert status in STATUSES, status
        problems = []
        if self._lost:
            shown = "; ".join(self._lost[:5]) + (" ..." if len(self._lost) > 5 else "")
            problems.append(
                f"{len(self._lost)} item(s) could not be logged to {self.uri}: {shown} "
                f"(in {self.run_dir})"
            )
        # One last attempt even within the retry pause; if the metrics cannot go through, the
        # final status cannot either, so a store that hangs costs one timeout, not two.
        sent = self.flush(force=True)
        if not sent:
            problems.append(
                f"{len(self._pending)} metric values could not be sent to {self.uri} "
                f"(they are in {self.local_log.name})"
            )
        if not (sent and self._call(self.client.set_terminated, self.run_id, status, force=True)):
            problems.append(f"the run's final status {status} could not be recorded at {self.uri}")
        self.local_log.close()
        return problems

    def _call(self, fn: Any, *args: Any, force: bool = False, **kwargs: Any) -> bool:
        if not force and time.monotonic() < self._retry_at:
            return False  # the store failed moments ago: do not wait on it again yet
        try:
            fn(*args, **kwargs)
            return True
        except Exception as error:  # the store went away: keep training, say so once
            self._retry_at = time.monotonic() + RETRY_AFTER_S
            if not self._warned:
                warnings.warn(
                    f"MLflow tracking at {self.uri} failed "
                    f"({type(error).__name__}: {redact_text(str(error))}); "
                    "training continues, metrics stay buffered and are written to "
                    f"{self.local_log.name}.",
                    stacklevel=2,
                )
                self._warned = True
            return False


def git_commit() -> str:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return result.stdout.strip() if result.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def recorded_run_id(run_dir: Path, uri: str, experiment: str) -> str | None:
    """The MLflow run of an earlier attempt in this run dir, if it used the same store."""
    try:
        record = json.loads((run_dir / RUN_ID_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    if record.get("uri") != redact_uri(uri) or record.get("experiment") != experiment:
        return None
    return record.get("run_id")


def record_run_id(run_dir: Path, run_id: str, uri: str, experiment: str) -> None:
    record = {"run_id": run_id, "uri": redact_uri(uri), "experiment": experiment}
    (run_dir / RUN_ID_FILE).write_text(json.dumps(record))


def mark_failed(uri: str, run_id: str, reason: str) -> None:
    """Mark an earlier attempt's run FAILED with a reason (a resume that cannot start)."""
    from mlflow.entities import RunTag
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(tracking_uri=uri)
        client.log_batch(run_id, tags=[RunTag("failure_reason", reason[:5000])])
        client.set_terminated(run_id, "FAILED")
    except Exception as error:  # the run is gone or the store is down: the error still shows
        log.warning(redact_text(f"warning: could not mark MLflow run {run_id} FAILED: {error}"))


def trim_local_log(run_dir: Path, keep_through_step: int) -> None:
    """Drop ``metrics.jsonl`` rows after the step a run resumes from (all rows for a fresh start),
    so the file never repeats a step, whichever checkpoint the run went back to."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if int(json.loads(line)["step"]) <= keep_through_step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue  # a line cut by a crash mid-write
    write_atomic(path, "".join(f"{line}\n" for line in kept))
