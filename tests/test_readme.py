"""Every command README.md shows, run as written, in order, as a new user would.

The commands are read from the README's ``bash`` blocks, so the README cannot drift from the
code. Each runs through a shell (quotes, colons and trailing spaces arrive as a user's shell
passes them) in a fresh working directory that holds the repository's ``notebooks/``, with
budgets shrunk by overrides APPENDED to the command (the command as written comes first; later
overrides win in Hydra). Placeholders (``<mlflow run id>``, ``<run dir>``) are filled with what
the earlier commands produced. A few commands cannot run here and are skipped with their reason:
installing (CI runs that very line), the test suite itself, multi-GPU/cluster launches and a
PostgreSQL-backed server.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from gpt5_ablate.cli import REPO_ROOT
from tests.test_reliability import cli_env

README = REPO_ROOT / "README.md"
# Appended to training commands: seconds, not minutes, per run.
TRAIN_SHRINK = "+debug=tiny trainer.max_steps=6 trainer.eval_every=3 trainer.checkpoint_every=3"
EXPERIMENT_SHRINK = "trainer.max_tokens=3072 " + " ".join(  # one arm, one seed
    f"++hydra.sweeper.params.{key}={value}"
    for key, value in {
        "seed": 0,
        "attention": "gqa",
        "optimizer": "muon_adamw",
        "norm": "qk_rmsnorm",
        "pos": "rope",
        "ffn": "swiglu",
        "window": "all_full",
        "sinks": "none",
    }.items()
)
SKIPPED = {  # command prefix -> why it is not run here
    "python -m venv": "installing: .ci/run runs this very line on a fresh machine",
    "pip install": "installing: .ci/run runs this very line on a fresh machine",
    "python -m pytest": "the test suite itself",
    "torchrun": "needs several GPUs",
    "srun": "needs a SLURM cluster",
    "sbatch": "needs a SLURM cluster",
    "mlflow server --backend-store-uri postgresql": "needs a PostgreSQL server",
    "mlflow server --app-name basic-auth": "tested in tests/test_auth_server.py",
    "python -m gpt5_ablate -m launcher=submitit_slurm": "needs a SLURM cluster",
    "export": "environment for the commands that follow",
}


def readme_commands(text: str) -> list[str]:
    """Commands of the ```bash blocks, continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            line = re.sub(r"\s+#(?![^\"']*[\"']\s*$).*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def skip_reason(command: str) -> str | None:
    for prefix, reason in SKIPPED.items():
        if command.startswith(prefix):
            return reason
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def shrink(command: str, cache_dir: Path) -> str:
    if command.startswith("python -m gpt5_ablate.bench"):
        return f"{command} +bench=ci bench.arms=[[attention=gqa]] bench.repeats=1"
    if command.startswith("python -m gpt5_ablate.protocol"):
        return f"{command} dry_run=true"
    if command.startswith("python -m gpt5_ablate ") or command == "python -m gpt5_ablate":
        extra = f"{TRAIN_SHRINK} cache_dir={cache_dir}"
        if "+experiment=" in command:
            extra += f" {EXPERIMENT_SHRINK}"
        return f"{command} {extra}"
    return command


def fill_placeholders(command: str, cwd: Path) -> str:
    if "<mlflow run id>" in command:
        from mlflow.tracking import MlflowClient

        client = MlflowClient("sqlite:///" + str(cwd / "mlflow.db"))
        experiment = client.get_experiment_by_name("gpt5_ablate")
        runs = client.search_runs(
            [experiment.experiment_id], filter_string="attributes.status = 'FINISHED'"
        )
        run_id = next(r.info.run_id for r in runs if "sweep_parent" not in r.data.tags)
        command = command.replace("<mlflow run id>", run_id)
    if "<run dir>" in command:
        run_dir = next((cwd / "outputs" / "gpt5_ablate").glob("*/checkpoints")).parent
        command = command.replace("outputs/gpt5_ablate/<run dir>", str(run_dir))
    return command


def serve_briefly(command: str, cwd: Path) -> None:
    """``mlflow ui``: start it, wait until it answers, stop it."""
    port = free_port()
    proc = subprocess.Popen(
        f"{command} --port {port}", shell=True, cwd=cwd, env=cli_env(), start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    assert r.status == 200
                    return
            except OSError:
                assert proc.poll() is None, f"{command} exited with {proc.returncode}"
                assert time.monotonic() < deadline, f"{command} did not answer in 90 s"
                time.sleep(0.5)
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


def test_readme_lists_the_user_journey() -> None:
    commands = readme_commands(README.read_text())
    starts = [c.split("=")[0] for c in commands]
    for expected in (
        "python -m gpt5_ablate",
        "mlflow ui --backend-store-uri sqlite:///mlflow.db",
        "python -m gpt5_ablate.report",
        "python -m gpt5_ablate.generate run_id",
    ):
        assert any(s.startswith(expected) for s in starts), expected


@pytest.mark.slow
@pytest.mark.integration
def test_every_readme_command_runs_as_written(tmp_path: Path, cache_dir: Path) -> None:
    (tmp_path / "notebooks").symlink_to(REPO_ROOT / "notebooks")
    ran, skipped = [], []
    for command in readme_commands(README.read_text()):
        reason = skip_reason(command)
        if reason:
            skipped.append((command, reason))
            continue
        if command.startswith("mlflow ui"):
            serve_briefly(command, tmp_path)
            ran.append(command)
            continue
        full = shrink(fill_placeholders(command, tmp_path), cache_dir)
        done = subprocess.run(
            ["bash", "-c", full], cwd=tmp_path, env=cli_env(), text=True, capture_output=True,
            timeout=900,
        )  # fmt: skip
        assert done.returncode == 0, (
            f"{full}\n--- stdout\n{done.stdout[-2000:]}\n--- stderr\n{done.stderr[-3000:]}"
        )
        ran.append(command)
    assert len(ran) >= 8, ran
    assert all(shlex.split(c) for c, _ in skipped)


def test_readme_results_match_the_committed_run() -> None:
    """The results section is written from docs/results/cpu_hour by a command, never by hand."""
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "experiments" / "update_readme.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, "README.md is stale: run python experiments/update_readme.py"
