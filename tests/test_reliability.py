"""Reliability: kill and resume, stop signals, non-finite losses, one failing job in a sweep.

The subprocess tests run the real entry point (``python -m gpt5_ablate``) and interrupt it the
way a user or a scheduler would: SIGKILL (no chance to clean up), SIGINT (Ctrl-C), SIGTERM. The
resumed run's MLflow history must equal an uninterrupted run's, value for value: on CPU in fp32
the loop is deterministic, and a resume restores every piece of state that feeds the loss.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file

from gpt5_ablate.cli import REPO_ROOT
from gpt5_ablate.errors import NonFiniteLossError
from gpt5_ablate.train import checkpoint as ckpt
from gpt5_ablate.train import trainer as trainer_module
from gpt5_ablate.train.loop import train
from gpt5_ablate.train.records import TrainResult
from gpt5_ablate.train.tracking import RUN_ID_FILE
from tests.train_helpers import TINY_OVERRIDES, compose_config

pytestmark = pytest.mark.slow  # trains, kills and resumes real runs

TOTAL_STEPS = 40
# Checkpoints every 10 steps, val/loss every 10, train/loss (the mean over the steps since the
# last one) every 7: a checkpoint falls mid-interval, so a resume must restore the partial mean.
# Every train log is flushed to MLflow at once, so a kill leaves steps past the last checkpoint
# in the store, which the resumed run replays and must not log twice.
TRAIN_LOG_STEPS = [*range(7, TOTAL_STEPS, 7), TOTAL_STEPS]
RESUME_OVERRIDES = [
    f"trainer.max_steps={TOTAL_STEPS}",
    "trainer.log_every=7",
    "trainer.checkpoint_every=10",
    "trainer.eval_every=10",
    "trainer.eval_tokens=2048",
    "tracking.flush_every=6",
    "tracking.log_checkpoint=false",
]
COMPARED_KEYS = ("train/loss", "val/loss")
# Torch picks its kernels' blocking by thread count; the subprocesses and the in-process
# reference run use one thread each, so their float sums match bit for bit (and one thread per
# process is also the fastest on a small shared CI machine).
THREADS = 1


# ----------------------------------------------------------------------------------------------
# Helpers (also used by test_tracking_server.py)


def cli_env() -> dict[str, str]:
    # The interpreter running the tests first on PATH, so that a README's bare `python` and
    # `mlflow` are this environment's even when pytest was started as .venv/bin/python.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {
        **os.environ, "PATH": path, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": str(THREADS)
    }  # fmt: skip


def start_cli(args: list[str], cwd: Path, name: str = "cli") -> subprocess.Popen:
    """Start ``python -m gpt5_ablate`` with stdout/stderr going to files in ``cwd`` (a pipe that
    nobody reads could fill up and block the run)."""
    cwd.mkdir(parents=True, exist_ok=True)
    with (cwd / f"{name}.out").open("w") as out, (cwd / f"{name}.err").open("w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "gpt5_ablate", *args],
            cwd=cwd,
            stdout=out,
            stderr=err,
            env=cli_env(),
        )


def finish(proc: subprocess.Popen, cwd: Path, name: str = "cli", timeout: float = 300) -> str:
    """Wait for the process; return its stderr."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"{name} did not finish in {timeout}s:\n{stderr_of(cwd, name)[-3000:]}")
    return stderr_of(cwd, name)


def stderr_of(cwd: Path, name: str = "cli") -> str:
    return (cwd / f"{name}.err").read_text()


def wait_until(
    condition: Callable[[], bool],
    proc: subprocess.Popen,
    cwd: Path,
    name: str = "cli",
    timeout: float = 180,
) -> None:
    """Poll ``condition`` until it holds; fail if the process ends first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(
                f"the run ended (exit {proc.returncode}) before the test could interrupt it:\n"
                + stderr_of(cwd, name)[-3000:]
            )
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"timed out waiting for the run:\n{stderr_of(cwd, name)[-3000:]}")
        time.sleep(0.02)


def only_run_dir(cwd: Path, experiment: str) -> Path | None:
    dirs = [p for p in (cwd / "outputs" / experiment).glob("*") if p.is_dir()]
    assert len(dirs) <= 1, dirs
    return dirs[0] if dirs else None


def latest_step(run_dir: Path | None) -> int:
    if run_dir is None:
        return 0
    latest = ckpt.latest_checkpoint(run_dir / "checkpoints")
    return int(latest.name.removeprefix("step_")) if latest else 0


def logged_steps(run_dir: Path | None, key: str) -> list[int]:
    """Steps of the ``key`` values flushed to metrics.jsonl so far."""
    if run_dir is None or not (run_dir / "metrics.jsonl").exists():
        return []
    steps = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # a line being written
            continue
        if key in record:
            steps.append(record["step"])
    return steps


def experiment_runs(uri: str, experiment: str) -> list[Run]:
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return client.search_runs([found.experiment_id])


def histories(uri: str, run_id: str) -> dict[str, list[tuple[int, float]]]:
    client = MlflowClient(uri)
    return {
        key: [(m.step, m.value) for m in client.get_metric_history(run_id, key)]
        for key in COMPARED_KEYS
    }


def assert_same_history(got: dict[str, Any], expected: dict[str, Any]) -> None:
    for key in COMPARED_KEYS:
        steps = [s for s, _ in got[key]]
        assert len(steps) == len(set(steps)), f"{key}: a step was logged twice: {steps}"
        assert [s for s, _ in got[key]] == [s for s, _ in expected[key]], key
        # Exact equality: the resumed run must be bit-identical, not merely close.
        assert got[key] == expected[key], key


# ----------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def reference(
    tmp_path_factory: pytest.TempPathFactory, cache_dir: Path
) -> dict[str, list[tuple[int, float]]]:
    """An uninterrupted run of the resume tests' config (in-process, its own store); also fills
    the shared tokenized cache once for every test of this module."""
    root = tmp_path_factory.mktemp("reference")
    uri = f"sqlite:///{root}/mlflow.db"
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        result = train(compose_config(RESUME_OVERRIDES, cache_dir, uri), root / "run")
    finally:
        torch.set_num_threads(before)
    expected = histories(uri, result.run_id)
    assert [s for s, _ in expected["train/loss"]] == TRAIN_LOG_STEPS
    assert [s for s, _ in expected["val/loss"]] == list(range(0, TOTAL_STEPS + 1, 10))
    return expected


def resume_args(cache_dir: Path, uri: str, experiment: str) -> list[str]:
    return [
        *TINY_OVERRIDES,
        *RESUME_OVERRIDES,
        f"cache_dir={cache_dir}",
        f"tracking.uri={uri}",
        f"tracking.experiment={experiment}",
    ]


# ----------------------------------------------------------------------------------------------
# Resume after SIGKILL


@pytest.mark.integration
def test_sigkill_then_rerun_resumes_into_the_same_run_bit_identically(
    tmp_path: Path, cache_dir: Path, reference: dict[str, Any]
) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = resume_args(cache_dir, uri, "killed")
    proc = start_cli(args, tmp_path)

    def past_a_checkpoint() -> bool:
        # A checkpoint exists and a later train/loss is already in MLflow: the kill loses
        # in-memory state and the resumed run replays steps the store already holds.
        run_dir = only_run_dir(tmp_path, "killed")
        if run_dir is None or latest_step(run_dir) == 0:
            return False
        run_id = json.loads((run_dir / RUN_ID_FILE).read_text())["run_id"]
        in_store = MlflowClient(uri).get_metric_history(run_id, "train/loss")
        return max((m.step for m in in_store), default=0) > latest_step(run_dir)

    wait_until(past_a_checkpoint, proc, tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    run_dir = only_run_dir(tmp_path, "killed")
    killed_at = latest_step(run_dir)
    assert 0 < killed_at < TOTAL_STEPS
    (killed,) = experiment_runs(uri, "killed")
    assert killed.info.status == "RUNNING"  # nobody could close it
    # Past the checkpoint the store already holds values the resumed run will produce again.
    already = [s for s, _ in histories(uri, killed.info.run_id)["train/loss"]]
    assert max(already) > killed_at

    proc = start_cli(args, tmp_path)
    err = finish(proc, tmp_path)
    assert proc.returncode == 0, err[-3000:]
    assert f"Resuming from {run_dir / 'checkpoints' / f'step_{killed_at:07d}'}" in err

    runs = experiment_runs(uri, "killed")
    assert len(runs) == 1, "the re-run must log into the killed run, not a new one"
    (resumed,) = runs
    assert resumed.info.run_id == killed.info.run_id
    assert resumed.info.status == "FINISHED"
    assert resumed.data.tags.get("resumed") == "true"
    assert_same_history(histories(uri, resumed.info.run_id), reference)


# ----------------------------------------------------------------------------------------------
# Ctrl-C and SIGTERM


@pytest.mark.integration
def test_sigint_and_sigterm_checkpoint_mark_killed_and_resume(
    tmp_path: Path, cache_dir: Path, reference: dict[str, Any]
) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = resume_args(cache_dir, uri, "signals")
    run_id = None
    stopped_at = 0
    for attempt, sig in enumerate((signal.SIGINT, signal.SIGTERM)):
        name = f"attempt{attempt}"
        proc = start_cli(args, tmp_path, name)
        after = stopped_at

        def training(after: int = after) -> bool:
            # In the loop, past the step where the last attempt stopped (so the signal finds the
            # loop's handler, not Python's default one), just after an evaluation: the stop
            # falls between two train/loss logs (every 7 steps), not on one.
            run_dir = only_run_dir(tmp_path, "signals")
            return max(logged_steps(run_dir, "val/loss"), default=0) > after

        wait_until(training, proc, tmp_path, name)
        proc.send_signal(sig)
        err = finish(proc, tmp_path, name)
        assert proc.returncode == 130, err[-3000:]
        assert f"Stopped by {sig.name} at step " in err
        assert "Re-run the same command to resume" in err
        assert "Traceback" not in err

        run_dir = only_run_dir(tmp_path, "signals")
        assert run_dir is not None
        stopped_at = latest_step(run_dir)  # the checkpoint the signal saved
        assert f"at step {stopped_at}/{TOTAL_STEPS}" in err
        assert after < stopped_at < TOTAL_STEPS
        runs = experiment_runs(uri, "signals")
        assert len(runs) == 1
        assert runs[0].info.status == "KILLED"
        assert run_id in (None, runs[0].info.run_id)
        run_id = runs[0].info.run_id

    proc = start_cli(args, tmp_path, "final")
    err = finish(proc, tmp_path, "final")
    assert proc.returncode == 0, err[-3000:]
    runs = experiment_runs(uri, "signals")
    assert [(r.info.run_id, r.info.status) for r in runs] == [(run_id, "FINISHED")]
    # Stopped mid-interval twice (most likely between two train/loss logs): the partial
    # interval travels with the checkpoint, so the logged means are unchanged.
    assert_same_history(histories(uri, run_id), reference)


# ----------------------------------------------------------------------------------------------
# NaN / Inf


NAN_OVERRIDES = [
    "trainer.max_steps=10",
    "trainer.eval_every=10",
    "trainer.eval_tokens=1024",
    "trainer.checkpoint_every=1",
    "trainer.num_samples=0",
    "tracking.log_checkpoint=false",
]


def nan_losses_at(monkeypatch: pytest.MonkeyPatch, steps: set[int]) -> None:
    """Make the training loss NaN at the given (1-based) steps, gradients untouched."""
    original = trainer_module.accumulate_gradients
    calls = {"n": 0}

    def patched(*args: Any, **kwargs: Any) -> torch.Tensor:
        loss = original(*args, **kwargs)
        calls["n"] += 1
        return torch.full_like(loss, math.nan) if calls["n"] in steps else loss

    monkeypatch.setattr(trainer_module, "accumulate_gradients", patched)


def assert_checkpoint_is_finite(checkpoint: Path) -> None:
    weights = load_file(str(checkpoint / ckpt.WEIGHTS))
    assert all(bool(torch.isfinite(t).all()) for t in weights.values())


def test_nan_loss_stops_marks_failed_and_keeps_last_good_checkpoint(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None
) -> None:
    nan_losses_at(monkeypatch, {4})
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = compose_config([*NAN_OVERRIDES, "tracking.experiment=nan"], cache_dir, uri)
    run_dir = tmp_path / "run"
    with pytest.raises(NonFiniteLossError) as caught:
        train(cfg, run_dir)
    message = str(caught.value)
    assert "The loss became non-finite at step 4" in message
    assert "loss=nan" in message
    last_good = run_dir / "checkpoints" / "step_0000003"
    assert f"the last good checkpoint is {last_good}" in message
    assert "trainer.on_nonfinite=skip" in message
    assert ckpt.latest_checkpoint(run_dir / "checkpoints") == last_good
    assert_checkpoint_is_finite(last_good)

    (run,) = experiment_runs(uri, "nan")
    assert run.info.status == "FAILED"
    assert run.data.tags["failure_reason"] == message
    logged = histories(uri, run.info.run_id)
    assert all(step < 4 for step, _ in logged["train/loss"] + logged["val/loss"])


def test_diverging_run_stops_on_a_non_finite_gradient(
    tmp_path: Path, cache_dir: Path, one_thread: None
) -> None:
    """A real divergence, no patching: AdamW at lr=1e6 without clipping."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = compose_config(
        [
            *NAN_OVERRIDES,
            "optimizer=adamw",
            "optimizer.lr=1e6",
            "trainer.grad_clip=0",
            "tracking.experiment=diverge",
        ],
        cache_dir,
        uri,
    )
    run_dir = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match=r"The (loss|gradient norm) became non-finite at"):
        train(cfg, run_dir)
    (run,) = experiment_runs(uri, "diverge")
    assert run.info.status == "FAILED"
    assert "non-finite at step" in run.data.tags["failure_reason"]
    latest = ckpt.latest_checkpoint(run_dir / "checkpoints")
    if latest is not None:  # diverged after step 1: the checkpoints before it are intact
        assert_checkpoint_is_finite(latest)


def test_skip_policy_skips_non_finite_steps_and_counts_them(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None
) -> None:
    # Step 5 is a train/loss log step and step 10 the last one (eval + final checkpoint): a
    # skipped step must not skip the bookkeeping that falls on it.
    nan_losses_at(monkeypatch, {3, 5, 10})
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = compose_config(
        [*NAN_OVERRIDES, "trainer.on_nonfinite=skip", "tracking.experiment=skip"], cache_dir, uri
    )
    result: TrainResult = train(cfg, tmp_path / "run")
    assert result.skipped_steps == 3
    assert result.checkpoint.name == "step_0000010"
    (run,) = experiment_runs(uri, "skip")
    assert run.info.status == "FINISHED"
    client = MlflowClient(uri)
    skipped = [
        (m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train/skipped_steps")
    ]
    assert skipped == [(3, 1.0), (5, 2.0), (10, 3.0)]
    logged = histories(uri, run.info.run_id)
    assert [s for s, _ in logged["val/loss"]] == [0, 10]
    # Logged at 5 (the mean of steps 1, 2, 4) and at 10 (steps 6-9), though both were skipped.
    assert [s for s, _ in logged["train/loss"]] == [5, 10]
    assert all(math.isfinite(v) for _, v in logged["train/loss"] + logged["val/loss"])


# ----------------------------------------------------------------------------------------------
# Sweep isolation


@pytest.mark.integration
def test_a_failing_sweep_job_does_not_stop_the_others(tmp_path: Path, cache_dir: Path) -> None:
    """Four jobs: one trains, one diverges (an MLflow run marked FAILED), two have an invalid
    head count (rejected before any MLflow run exists)."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = [
        "-m",
        *TINY_OVERRIDES,
        "trainer.max_steps=6",
        "trainer.eval_every=6",
        "trainer.eval_tokens=1024",
        "trainer.log_every=2",
        "trainer.checkpoint_every=0",
        "trainer.num_samples=0",
        "tracking.log_checkpoint=false",
        "optimizer=adamw",
        "trainer.grad_clip=0",
        "optimizer.lr=1e-3,1e6",
        "attention.n_kv_heads=2,3",
        f"cache_dir={cache_dir}",
        f"tracking.uri={uri}",
        "tracking.experiment=isolation",
    ]
    proc = start_cli(args, tmp_path)
    err = finish(proc, tmp_path)
    assert proc.returncode == 1, err[-3000:]
    assert "Sweep summary: 1/4 runs finished, 3 failed." in err
    summary = err[err.index("Sweep summary") :]
    assert summary.count("  FINISHED ") == 1
    assert summary.count("  FAILED ") == 3
    assert (
        summary.count("-> NonFiniteLossError: The gradient norm became non-finite")
        + (summary.count("-> NonFiniteLossError: The loss became non-finite"))
        == 1
    )
    assert (
        summary.count("-> ConfigError: model.n_heads=4 is not divisible by attention.n_kv_heads=3")
        == 2
    )
    assert "Traceback" not in err  # reported errors, not crashes

    runs = experiment_runs(uri, "isolation")
    parents = [r for r in runs if r.data.tags.get("sweep_parent") == "true"]
    children = [r for r in runs if r.data.tags.get("sweep_parent") != "true"]
    assert len(parents) == 1 and parents[0].info.status == "FAILED"
    # The invalid jobs created no run at all (nothing half-written, nothing left RUNNING).
    assert sorted(
        (r.data.params["optimizer.lr"], r.data.params["attention.n_kv_heads"], r.info.status)
        for r in children
    ) == [("0.001", "2", "FINISHED"), ("1000000.0", "2", "FAILED")]
    failed = next(r for r in children if r.info.status == "FAILED")
    assert "non-finite at step" in failed.data.tags["failure_reason"]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
