"""gpt-oss's choices through the real CLI: a 2x2x2 sweep of window x sinks x ffn finishes with
eight FINISHED MLflow runs, each tagged with its levels and its active/total accounting."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.train_helpers import TINY_OVERRIDES, run_cli


@pytest.mark.slow
@pytest.mark.integration
def test_window_sinks_moe_sweep_finishes(tmp_path: Path, cache_dir: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = run_cli(
        [
            "-m",
            "window=all_full,alternate",
            "sinks=none,learned",
            "ffn=swiglu,moe",
            *TINY_OVERRIDES,
            "window.size=16",
            "trainer.max_steps=6",
            "trainer.eval_every=6",
            "trainer.checkpoint_every=0",
            "trainer.num_threads=1",
            f"cache_dir={cache_dir}",
            f"tracking.uri={uri}",
            "tracking.experiment=oss",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(uri)
    runs = [
        r
        for r in client.search_runs([client.get_experiment_by_name("oss").experiment_id])
        if "sweep_parent" not in r.data.tags
    ]
    assert len(runs) == 8 and {r.info.status for r in runs} == {"FINISHED"}
    levels = {(r.data.tags["window"], r.data.tags["sinks"], r.data.tags["ffn"]) for r in runs}
    assert len(levels) == 8
    for run in runs:
        params = run.data.params
        moe = run.data.tags["ffn"] == "moe"
        assert (int(params["n_params_active"]) < int(params["n_params"])) == moe
        if moe:
            assert "moe/aux_loss" in run.data.metrics
        sliding = run.data.tags["window"] == "alternate"
        per_token, at_max = (
            int(params["kv_cache_bytes_per_token"]),
            int(params["kv_cache_bytes_at_max_seq_len"]),
        )
        # A sliding layer caches at most its window: less than full length x per token.
        assert (at_max < per_token * 64) == sliding
