"""The concurrency benchmark: what it trains, the refusals before anything trains, and one real
end-to-end measurement (two runs, one then two at a time, on a shared fresh store)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpt5_ablate.bench_concurrent import (
    EXPERIMENT,
    SEED_BASE,
    ConcurrentArgs,
    main,
    make_plan,
    run_command,
)
from gpt5_ablate.errors import ConfigError


def test_the_plan_trains_one_ladder_size_at_its_grid_centres() -> None:
    plan = make_plan(ConcurrentArgs(size="ladder_s2", runs=4, concurrency="2,1"), 2, False)
    assert plan.levels == [1, 2]
    assert plan.threads == {1: 2, 2: 1}  # every level uses both cores
    command = run_command(plan, SEED_BASE, 2, "u")
    assert [o for o in command if o.startswith("trainer.num_threads=")] == ["trainer.num_threads=2"]
    assert "model.name=ladder_s2" in plan.base
    assert "optimizer=muon_adamw" in plan.base
    assert f"tracking.experiment={EXPERIMENT}" in plan.base
    assert any(o.startswith("optimizer.lr=") for o in plan.base)
    keys = [o.split("=", 1)[0] for o in plan.base]
    assert len(keys) == len(set(keys)), "one value per key"
    command = run_command(plan, SEED_BASE + 3, 1, "sqlite:///x.db")
    assert f"seed={SEED_BASE + 3}" in command and "trainer.num_threads=1" in command


def test_on_a_gpu_the_protocols_threads_are_kept() -> None:
    plan = make_plan(ConcurrentArgs(protocol="gpu_ladder", runs=8, concurrency="1,8"), 16, True)
    assert plan.threads == {1: None, 8: None}
    threads = [o for o in run_command(plan, 1, None, "u") if o.startswith("trainer.num_threads=")]
    assert threads == ["trainer.num_threads=2"]  # gpu_ladder's own: data loading, not compute


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (ConcurrentArgs(protocol="cpu_hour"), "lists no ladder sizes"),
        (ConcurrentArgs(size="ladder_s9"), "ladder_s9"),
        (ConcurrentArgs(concurrency="1,0"), "concurrency='1,0'"),
        (ConcurrentArgs(concurrency="two"), "concurrency='two'"),
        (ConcurrentArgs(runs=2, concurrency="1,4"), "runs=2"),
        (ConcurrentArgs(threads_per_run="many"), "threads_per_run='many'"),
        (ConcurrentArgs(tokens_per_param=0.0), "tokens_per_param=0"),
    ],
)
def test_bad_settings_are_refused_before_anything_trains(args: ConcurrentArgs, named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace("[", r"\[")):
        make_plan(args, 2, False)


def test_a_bad_setting_exits_with_its_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["size=ladder_s9"]) != 0
    err = capsys.readouterr().err
    assert "ladder_s9" in err and "ladder_s1" in err


@pytest.mark.integration
def test_two_runs_at_once_are_timed_and_written(tmp_path: Path) -> None:
    out = tmp_path / "out"
    overrides = f"data.max_docs=60 cache_dir={tmp_path / 'cache'}"
    code = main(
        [
            "size=ladder_s1",
            "runs=2",
            "concurrency=1,2",
            "tokens_per_param=0.003",
            f"overrides={overrides}",
            f"out={out}",
        ]
    )
    assert code == 0
    [record_file] = out.glob("concurrent-*.json")
    record = json.loads(record_file.read_text())
    rows = record["rows"]
    assert [r["concurrency"] for r in rows] == [1, 2]
    assert rows[0]["speedup"] == 1.0
    for row in rows:
        assert row["runs"] == 2 and row["wall_s"] > 0
        assert row["tokens_per_s"] > 0, "both runs' tokens were read back from their store"
    assert record["environment"]["cpu_count"] >= 1
    assert (out / record_file.name.replace(".json", ".md")).read_text().count("|") > 10
