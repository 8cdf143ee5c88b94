"""What a user meets when things go wrong: damaged checkpoints, a dangling ``latest``, logs, bad
configs, and the training core's own contracts (no per-step host sync, compile=auto).

In-process runs use the real ``train()`` on the tiny debug config; the CLI cases run the real
entry point in a subprocess, as a user would.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from mlflow.tracking import MlflowClient

from gpt5_ablate.errors import CheckpointError, InputError, NonFiniteLossError
from gpt5_ablate.train import checkpoint as ckpt
from gpt5_ablate.train import trainer as trainer_module
from gpt5_ablate.train.finished import FINISHED_FILE
from gpt5_ablate.train.loop import train
from gpt5_ablate.train.steps import NonFiniteWatch, use_compile
from tests.test_reliability import (
    cli_env,
    finish,
    latest_step,
    logged_steps,
    only_run_dir,
    start_cli,
    stderr_of,
    wait_until,
)
from tests.train_helpers import TINY_OVERRIDES, compose_config

pytestmark = pytest.mark.slow  # trains and resumes real runs

STEPS = 20
OVERRIDES = [
    f"trainer.max_steps={STEPS}",
    "trainer.checkpoint_every=10",
    "trainer.keep_checkpoints=3",
    "trainer.eval_every=10",
    "trainer.log_every=5",
    "trainer.eval_tokens=1024",
    "trainer.num_samples=0",
    "trainer.num_threads=1",
    "tracking.log_checkpoint=false",
]


def run_tiny(tmp_path: Path, cache_dir: Path, *extra: str, run_dir: str = "run") -> Any:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    return train(compose_config([*OVERRIDES, *extra], cache_dir, uri), tmp_path / run_dir)


def metric_steps(run_dir: Path, key: str) -> list[int]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [row["step"] for row in rows if key in row]


@pytest.fixture
def finished(tmp_path: Path, cache_dir: Path) -> tuple[Path, Any]:
    """A finished 20-step run with checkpoints at steps 10 and 20."""
    result = run_tiny(tmp_path, cache_dir)
    return tmp_path / "run", result


def test_truncated_weights_fall_back_to_the_previous_checkpoint(
    tmp_path: Path, cache_dir: Path, finished: tuple[Path, Any], caplog: pytest.LogCaptureFixture
) -> None:
    run_dir, first = finished
    damaged = run_dir / "checkpoints" / "step_0000020"
    weights = damaged / ckpt.WEIGHTS
    weights.write_bytes(weights.read_bytes()[:1000])  # a crash mid-copy, a full disk
    with caplog.at_level(logging.WARNING, logger="gpt5_ablate"):
        again = run_tiny(tmp_path, cache_dir)
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert str(damaged) in warning and "step_0000010" in warning
    assert f"moved it aside to {damaged}.damaged" in warning
    assert ckpt.quick_damage(damaged.with_name("step_0000020.damaged"))  # kept for inspection
    # Steps 11-20 were trained again from the intact checkpoint: the same result, bit for bit.
    assert again.final_eval["loss"] == first.final_eval["loss"]
    assert ckpt.damage(run_dir / "checkpoints" / "step_0000020") == []
    for key in ("train/loss", "val/loss"):
        steps = metric_steps(run_dir, key)
        assert len(steps) == len(set(steps)), f"{key} repeats a step in metrics.jsonl: {steps}"


@pytest.mark.integration
def test_a_damaged_checkpoint_is_moved_aside_and_never_costs_the_intact_one(
    tmp_path: Path, cache_dir: Path
) -> None:
    """A stop signal leaves a checkpoint between the regular ones; it is then damaged. The rerun
    resumes from the intact one, is killed between steps, and runs again to the end: the damaged
    checkpoint is moved aside at once, and never counts toward keep_checkpoints=2."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = [
        *TINY_OVERRIDES,
        "trainer.max_steps=40",
        "trainer.checkpoint_every=10",
        "trainer.keep_checkpoints=2",
        "trainer.eval_every=40",
        "trainer.log_every=1",
        "trainer.eval_tokens=1024",
        "trainer.num_samples=0",
        "tracking.flush_every=1",
        "tracking.log_checkpoint=false",
        f"cache_dir={cache_dir}",
        f"tracking.uri={uri}",
    ]

    def run_dir() -> Path | None:
        return only_run_dir(tmp_path, "gpt5_ablate")

    def trained_past(step: int, name: str) -> bool:
        d = run_dir()
        resumed = name == "first" or "Resuming from" in stderr_of(tmp_path, name)
        return d is not None and resumed and max(logged_steps(d, "train/loss"), default=0) > step

    proc = start_cli(args, tmp_path, "first")
    wait_until(lambda: latest_step(run_dir()) == 10 and trained_past(10, "first"), proc, tmp_path)
    proc.send_signal(signal.SIGINT)
    finish(proc, tmp_path, "first")
    assert proc.returncode == 130
    root = run_dir() / "checkpoints"  # type: ignore[operator]
    stopped = ckpt.latest_checkpoint(root)
    assert stopped is not None and 10 < latest_step(run_dir()) < 20, stopped
    intact = root / "step_0000010"
    weights = stopped / ckpt.WEIGHTS
    weights.write_bytes(weights.read_bytes()[:1000])  # a full disk while it was copied

    proc = start_cli(args, tmp_path, "killed")
    wait_until(lambda: trained_past(10, "killed"), proc, tmp_path, "killed")
    proc.send_signal(signal.SIGKILL)  # between two steps, before the next checkpoint
    proc.wait(timeout=60)
    err = stderr_of(tmp_path, "killed")
    assert f"Resuming from {intact}" in err
    assert f"moved it aside to {stopped}.damaged" in err
    assert not stopped.exists() and stopped.with_name(f"{stopped.name}.damaged").is_dir()
    assert ckpt.damage(intact) == []  # the newest intact checkpoint survives

    proc = start_cli(args, tmp_path, "final")
    err = finish(proc, tmp_path, "final")
    assert proc.returncode == 0, err[-3000:]
    kept = ckpt.step_dirs(root)
    assert [p.name for p in kept] == ["step_0000030", "step_0000040"]  # two intact, as asked
    assert all(ckpt.damage(p) == [] for p in kept)
    assert stopped.with_name(f"{stopped.name}.damaged").is_dir()  # kept for inspection


def test_checkpoint_files_follow_the_umask(tmp_path: Path, cache_dir: Path) -> None:
    """Teammates on a shared filesystem read the weights as they read every other file."""
    before = os.umask(0o027)
    try:
        result = run_tiny(tmp_path, cache_dir, "trainer.max_steps=2", "trainer.eval_every=2")
    finally:
        os.umask(before)
    checkpoint = result.checkpoint
    assert checkpoint.stat().st_mode & 0o777 == 0o750
    assert (checkpoint / ckpt.WEIGHTS).stat().st_mode & 0o777 == 0o640
    assert (checkpoint / ckpt.TOKENIZER).stat().st_mode & 0o777 == 0o750
    for path in (checkpoint / ckpt.TOKENIZER).rglob("*"):
        assert path.stat().st_mode & 0o777 == (0o750 if path.is_dir() else 0o640), path


def test_latest_naming_a_deleted_checkpoint_falls_back(
    tmp_path: Path, cache_dir: Path, finished: tuple[Path, Any], caplog: pytest.LogCaptureFixture
) -> None:
    run_dir, first = finished
    shutil.rmtree(run_dir / "checkpoints" / "step_0000020")
    with caplog.at_level(logging.WARNING, logger="gpt5_ablate"):
        again = run_tiny(tmp_path, cache_dir)
    assert "resuming from" in caplog.text and "step_0000010" in caplog.text
    assert again.final_eval["loss"] == first.final_eval["loss"]
    assert metric_steps(run_dir, "val/loss") == [0, 10, 20]


def test_every_checkpoint_damaged_refuses_and_marks_the_run_failed(
    tmp_path: Path, cache_dir: Path, finished: tuple[Path, Any]
) -> None:
    run_dir, first = finished
    for step_dir in (run_dir / "checkpoints").glob("step_*"):
        (step_dir / ckpt.WEIGHTS).write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError) as caught:
        run_tiny(tmp_path, cache_dir)
    message = str(caught.value)
    assert "step_0000010" in message and "step_0000020" in message
    assert "trainer.resume=false" in message
    run = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(first.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["failure_reason"] == message


def cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gpt5_ablate", *args],
        cwd=cwd,
        env=cli_env(),
        text=True,
        capture_output=True,
        timeout=600,
    )


def test_every_checkpoint_damaged_exits_2_through_the_cli(tmp_path: Path, cache_dir: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = [*TINY_OVERRIDES, *OVERRIDES, f"cache_dir={cache_dir}", f"tracking.uri={uri}"]
    first = cli(args, tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    run_dir = only_run_dir(tmp_path, "gpt5_ablate")
    assert run_dir is not None
    for step_dir in (run_dir / "checkpoints").glob("step_*"):
        (step_dir / ckpt.WEIGHTS).unlink()
    again = cli(args, tmp_path)
    assert again.returncode == 2
    assert "error: No intact checkpoint" in again.stderr
    assert "Traceback" not in again.stderr
    (run,) = MlflowClient(uri).search_runs(
        [MlflowClient(uri).get_experiment_by_name("gpt5_ablate").experiment_id]
    )
    assert run.info.status == "FAILED"
    assert "No intact checkpoint" in run.data.tags["failure_reason"]


def test_a_pickled_trainer_state_is_refused_unless_trusted(
    tmp_path: Path, cache_dir: Path, finished: tuple[Path, Any]
) -> None:
    """A checkpoint in the old pickled format (or one planted by someone else) does not run
    code on resume; with trainer.trust_checkpoint=true it resumes."""
    from gpt5_ablate.train.state_io import load_state

    run_dir, first = finished
    checkpoint = run_dir / "checkpoints" / "step_0000020"
    state = load_state(checkpoint, ckpt.STATE_STEM)
    torch.save(state, checkpoint / ckpt.LEGACY_STATE)
    for name in (ckpt.MANIFEST, f"{ckpt.STATE_STEM}.json", f"{ckpt.STATE_STEM}.safetensors"):
        (checkpoint / name).unlink()
    (run_dir / FINISHED_FILE).unlink()  # the harness that wrote pickles recorded no finish
    with pytest.raises(InputError, match=r"trainer\.trust_checkpoint=true"):
        run_tiny(tmp_path, cache_dir)
    again = run_tiny(tmp_path, cache_dir, "trainer.trust_checkpoint=true")
    assert again.final_eval["loss"] == first.final_eval["loss"]


def test_nan_stops_at_the_exact_step_without_a_per_step_sync(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = trainer_module.accumulate_gradients
    calls = {"n": 0}

    def nan_at_step_3(*args: Any, **kwargs: Any) -> torch.Tensor:
        loss = original(*args, **kwargs)
        calls["n"] += 1
        return torch.full_like(loss, math.nan) if calls["n"] == 3 else loss

    checks = {"n": 0}
    real_check = NonFiniteWatch.check

    def counted_check(self: NonFiniteWatch, last: Path | None) -> None:
        checks["n"] += 1
        real_check(self, last)

    monkeypatch.setattr(trainer_module, "accumulate_gradients", nan_at_step_3)
    monkeypatch.setattr(NonFiniteWatch, "check", counted_check)
    with pytest.raises(NonFiniteLossError, match="non-finite at step 3 "):
        run_tiny(tmp_path, cache_dir, "trainer.log_every=5", "trainer.checkpoint_every=0")
    # Read at the first log step (5), not at steps 1-4: detected later, named exactly.
    assert calls["n"] == 5 and checks["n"] == 1
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_recording_a_non_finite_step_reads_nothing_back_from_the_device(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    watch = NonFiniteWatch(torch.device("cpu"))
    loss, norm = torch.tensor(float("nan")), torch.tensor(1.0)
    bad = ~(torch.isfinite(loss) & torch.isfinite(norm))

    def sync(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a host sync while recording")

    with monkeypatch.context() as patch:
        for name in ("item", "tolist", "__bool__"):
            patch.setattr(torch.Tensor, name, sync)
        watch.record(bad, 7, loss, norm)
        watch.record(bad, 9, loss, norm)
    with pytest.raises(NonFiniteLossError, match="at step 7 "):
        watch.check(None)


def test_compile_auto_is_eager_on_cpu_and_compiled_on_cuda() -> None:
    assert use_compile("auto", torch.device("cpu")) is False
    assert use_compile("auto", torch.device("cuda")) is True
    assert use_compile("false", torch.device("cuda")) is False
    assert use_compile("True", torch.device("cpu")) is True


@pytest.mark.integration
def test_log_file_holds_the_done_line_and_the_sigint_message(
    tmp_path: Path, cache_dir: Path
) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = [
        *TINY_OVERRIDES,
        "trainer.max_steps=400",
        "trainer.eval_every=50",
        "trainer.checkpoint_every=0",
        "trainer.num_samples=0",
        f"cache_dir={cache_dir}",
        f"tracking.uri={uri}",
    ]
    proc = start_cli(args, tmp_path)
    wait_until(
        lambda: (
            (d := only_run_dir(tmp_path, "gpt5_ablate")) is not None
            and (d / "metrics.jsonl").is_file()
            and "train/loss" in (d / "metrics.jsonl").read_text()
        ),
        proc,
        tmp_path,
    )
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    run_dir = only_run_dir(tmp_path, "gpt5_ablate")
    assert run_dir is not None
    log_text = (run_dir / "cli.log").read_text()
    assert "Stopped by SIGINT at step" in log_text
    assert "Re-run the same command to resume" in log_text

    done = subprocess.run(
        [sys.executable, "-m", "gpt5_ablate", *args],
        cwd=tmp_path, env=cli_env(), text=True, capture_output=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.lstrip().startswith("Done:")  # the summary goes to stdout
    log_text = (run_dir / "cli.log").read_text()
    assert "Resuming from" in log_text and "Done:" in log_text


def test_a_bad_config_leaves_no_run_dir(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gpt5_ablate", "trainer.max_steps=-1", "model.n_heads=3"],
        cwd=tmp_path, env=cli_env(), text=True, capture_output=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "error: " in proc.stderr and "Traceback" not in proc.stderr
    assert not any((tmp_path / "outputs").rglob("*")) if (tmp_path / "outputs").exists() else True


def test_cfg_job_works_after_overrides(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gpt5_ablate", "attention=mla", "--cfg", "job"],
        cwd=tmp_path, env=cli_env(), text=True, capture_output=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "attention:\n  name: mla" in proc.stdout
    assert not (tmp_path / "outputs").exists()
