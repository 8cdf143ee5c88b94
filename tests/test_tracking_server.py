"""Tracking against a real ``mlflow server`` (HTTP), including one that dies mid-run.

The server is a real subprocess with a SQLite backend and proxied artifacts, as a team would run
it; the runs are checked through its REST API, as any client would see them.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gpt5_ablate.data import prepare_data
from gpt5_ablate.train.plan import make_plan
from gpt5_ablate.train.tracking import RUN_ID_FILE
from tests.mlflow_server import ServerProcess
from tests.test_reliability import finish, only_run_dir, start_cli, wait_until
from tests.train_helpers import TINY_OVERRIDES, compose_config

pytestmark = pytest.mark.integration


class MlflowServer(ServerProcess):
    """A plain server with a REST client for the checks."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, db="srv.db")

    # --- the REST API ---------------------------------------------------------------------------

    def get(self, endpoint: str, **params: str) -> dict[str, Any]:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.uri}/api/2.0/mlflow/{endpoint}?{query}") as response:
            return json.load(response)

    def post(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.uri}/api/2.0/mlflow/{endpoint}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request) as response:
            return json.load(response)


@pytest.fixture(scope="module")
def mlflow_server(
    tmp_path_factory: pytest.TempPathFactory, cache_dir: Path
) -> Iterator[Callable[[], MlflowServer]]:
    """A running server, shared by the tests; a test that killed it gets a new one next time."""
    servers = [MlflowServer(tmp_path_factory.mktemp("mlflow_server"))]
    # While the server starts (seconds of imports and schema migrations), tokenize the corpus
    # the runs share, so that no job does it.
    plan = make_plan(compose_config([], cache_dir, "sqlite:///unused.db"))
    prepare_data(plan.data, plan.tokenizer, seq_len=plan.seq_len, cache_dir=cache_dir)

    def running() -> MlflowServer:
        if not servers[-1].alive():
            servers.append(MlflowServer(tmp_path_factory.mktemp("mlflow_server")))
        return servers[-1].wait()

    yield running
    for server in servers:
        server.stop()


def tags_of(run: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def test_sweep_logs_to_a_tracking_server(
    mlflow_server: Callable[[], MlflowServer], cache_dir: Path, tmp_path: Path
) -> None:
    server = mlflow_server()
    args = [
        "-m",
        *TINY_OVERRIDES,
        "trainer.max_steps=6",
        "trainer.eval_every=6",
        "trainer.eval_tokens=1024",
        "trainer.log_every=2",
        "trainer.checkpoint_every=0",
        "trainer.sample_tokens=4",
        "attention=gqa,mha",
        f"cache_dir={cache_dir}",
        f"tracking.uri={server.uri}",
        "tracking.experiment=server_sweep",
    ]
    proc = start_cli(args, tmp_path)
    err = finish(proc, tmp_path)
    assert proc.returncode == 0, err[-3000:]
    assert "Sweep summary: 2/2 runs finished, 0 failed." in err
    assert "warning:" not in err

    experiment = server.get("experiments/get-by-name", experiment_name="server_sweep")
    experiment_id = experiment["experiment"]["experiment_id"]
    runs = server.post("runs/search", {"experiment_ids": [experiment_id], "max_results": 100})
    runs = runs["runs"]
    parents = [r for r in runs if tags_of(r).get("sweep_parent") == "true"]
    children = [r for r in runs if tags_of(r).get("sweep_parent") != "true"]
    assert len(parents) == 1 and parents[0]["info"]["status"] == "FINISHED"
    assert sorted(tags_of(r)["attention"] for r in children) == ["gqa", "mha"]
    for run in children:
        run_id = run["info"]["run_id"]
        assert run["info"]["status"] == "FINISHED"
        assert tags_of(run)["mlflow.parentRunId"] == parents[0]["info"]["run_id"]
        history = server.get("metrics/get-history", run_id=run_id, metric_key="val/loss")
        assert [m["step"] for m in history["metrics"]] == [0, 6]
        train_loss = server.get("metrics/get-history", run_id=run_id, metric_key="train/loss")
        assert [m["step"] for m in train_loss["metrics"]] == [2, 4, 6]
        # Artifacts go through the server's proxy into --artifacts-destination.
        listed = server.get("artifacts/list", run_id=run_id, path="checkpoint")
        assert "checkpoint/model.safetensors" in {f["path"] for f in listed["files"]}
    assert len(list((server.root / "artifacts").rglob("model.safetensors"))) == 2


def test_run_survives_its_tracking_server_going_away(
    mlflow_server: Callable[[], MlflowServer], cache_dir: Path, tmp_path: Path
) -> None:
    server = mlflow_server()
    total = 30
    args = [
        *TINY_OVERRIDES,
        f"trainer.max_steps={total}",
        "trainer.eval_every=10",
        "trainer.eval_tokens=1024",
        "trainer.checkpoint_every=10",
        "trainer.sample_tokens=4",
        "tracking.flush_every=6",
        f"cache_dir={cache_dir}",
        f"tracking.uri={server.uri}",
        "tracking.experiment=server_gone",
    ]
    proc = start_cli(args, tmp_path)

    def run_created() -> bool:
        run_dir = only_run_dir(tmp_path, "server_gone")
        return run_dir is not None and (run_dir / RUN_ID_FILE).exists()

    wait_until(run_created, proc, tmp_path)
    server.stop(signal.SIGKILL)  # gone at once, mid-run, without saying goodbye
    killed_at = time.monotonic()
    err = finish(proc, tmp_path, timeout=300)
    assert proc.returncode == 0, err[-3000:]
    # Failed calls are not retried at every flush, so a dead server costs seconds, not minutes.
    assert time.monotonic() - killed_at < 90

    run_dir = only_run_dir(tmp_path, "server_gone")
    assert run_dir is not None
    assert (run_dir / "checkpoints" / f"step_{total:07d}" / "model.safetensors").exists()
    assert "\nDone: 30 steps" in (tmp_path / "cli.out").read_text()  # the summary: stdout
    # Warned once while training, then told what was not logged, and where the metrics are.
    assert err.count(f"MLflow tracking at {server.uri} failed") == 1
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert any(
        "metric values could not be sent" in w and str(run_dir / "metrics.jsonl") in w
        for w in warnings
    ), err[-3000:]
    assert any("final status FINISHED could not be recorded" in w for w in warnings), warnings
    assert any("could not be logged" in w and "artifact" in w for w in warnings), warnings
    # Nothing was lost locally: every train/loss step is in metrics.jsonl.
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "train/loss" in r] == list(range(5, total + 1, 5))
