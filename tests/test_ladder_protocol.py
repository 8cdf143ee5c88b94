"""The scale ladder's driver: per-size chains (Muon's rate, then its AdamW side, then report
seeds), the context set at the borrowed rates, refusals before training, and the fairness
settings both optimizers share."""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir

from gpt5_ablate.analysis.evidence import MIN_COMPUTE_SPAN
from gpt5_ablate.errors import ConfigError
from gpt5_ablate.ladder import Ladder, check_ladder, merge_overrides
from gpt5_ablate.protocol import (
    PROTOCOL_DIR,
    ProtocolArgs,
    Runner,
    apply_scale,
    load_protocol,
    run_ladder,
    run_protocol,
)

# The optimum each (size, rate key) is planted at: a different one per size, so a chain that
# mixed sizes up would pick the wrong rate.
OPTIMA = {
    ("ladder_s1", "muon_adamw", "optimizer.lr"): 0.02,
    ("ladder_s1", "muon_adamw", "optimizer.adamw_lr"): 0.048,
    ("ladder_s1", "adamw", "optimizer.lr"): 0.006,
    ("ladder_s1", "adamw", "optimizer.embed_lr"): 0.012,
    ("ladder_s2", "muon_adamw", "optimizer.lr"): 0.01,
    ("ladder_s2", "muon_adamw", "optimizer.adamw_lr"): 0.024,
    ("ladder_s2", "adamw", "optimizer.lr"): 0.003,
    ("ladder_s2", "adamw", "optimizer.embed_lr"): 0.024,
    ("ladder_s3", "muon_adamw", "optimizer.lr"): 0.005,
    ("ladder_s3", "muon_adamw", "optimizer.adamw_lr"): 0.006,  # two extensions down
    ("ladder_s3", "adamw", "optimizer.lr"): 0.00075,  # beyond the grid: one extension
    ("ladder_s3", "adamw", "optimizer.embed_lr"): 0.096,
    ("ladder_s4", "muon_adamw", "optimizer.lr"): 0.005,
    ("ladder_s4", "muon_adamw", "optimizer.adamw_lr"): 0.024,
    ("ladder_s4", "adamw", "optimizer.lr"): 0.000375,  # below its own centre: one extension
    ("ladder_s4", "adamw", "optimizer.embed_lr"): 0.012,
}
RATE_KEYS = {k.rsplit(".", 1)[-1]: k for _, _, k in OPTIMA}


def stage_key(stage: str) -> tuple[str, str, str]:
    """(size, optimizer, rate key) of a selection stage ``select-<size>-<opt>-<key>[-r<n>]``."""
    parts = stage.split("-")
    suffix = parts[3]
    return parts[1], parts[2], RATE_KEYS[suffix]


class FakeLadderRunner(Runner):
    """Records the sweeps instead of training; each grid's loss is a bowl in log2(rate)."""

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(load_protocol("cpu_ladder"), ProtocolArgs(out=str(tmp_path)), tmp_path)
        self.commands: list[tuple[str, dict[str, str]]] = []
        self.rates: dict[str, set[float]] = {}
        self.lock = threading.Lock()
        self.running = 0
        self.most_at_once = 0

    def sweep(self, stage: str, overrides: list[str], parallel: bool = True) -> None:
        assert not parallel, "ladder chains run one sweep each"
        values = dict(o.split("=", 1) for o in overrides)
        assert len(values) == len(overrides), f"a key given twice: {overrides}"
        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            self.commands.append((stage, values))
            self.log.append({"stage": stage, "command": " ".join(overrides), "wall_s": 0.01})
        threading.Event().wait(0.01)  # long enough for the other chains to start
        with self.lock:
            self.running -= 1
            if values.get("phase") == "select":
                key = stage_key(stage)[2]
                for rate in values[key].split(","):
                    self.rates.setdefault(stage, set()).add(float(rate))

    def final_losses(self, stage: str, key: str) -> dict[float, float]:
        size, optimizer, planted_key = stage_key(stage)
        assert key == planted_key
        optimum = OPTIMA[size, optimizer, key]
        return {r: 3.0 + 0.1 * math.log2(r / optimum) ** 2 for r in self.rates.get(stage, ())}


def test_every_size_selects_its_own_rates_then_reports_on_fresh_seeds(tmp_path: Path) -> None:
    runner = FakeLadderRunner(tmp_path)
    summary = Ladder(runner).run({"select", "compare", "context"})
    sizes = {s["name"]: s for s in summary["sizes"]}
    assert list(sizes) == ["ladder_s1", "ladder_s2", "ladder_s3", "ladder_s4"]
    for (size, optimizer, key), optimum in OPTIMA.items():
        assert sizes[size]["best_rates"][optimizer][key] == pytest.approx(optimum)
        selections = [
            s for s in sizes[size]["selections"] if s["optimizer"] == optimizer and s["key"] == key
        ]
        assert [s["round"] for s in selections] == [1, 2]  # selection_rounds in cpu_ladder.yaml
        assert all(s["interior"] is True for s in selections)
    # Each grid runs at the other rate's best so far: Muon's AdamW-side grid at the Muon rate its
    # own size chose; the second round's matrix-rate grid at the AdamW-side rate the first chose.
    side = [v for s, v in runner.commands if s == "select-ladder_s1-muon_adamw-adamw_lr"]
    assert side and all(v["optimizer.lr"] == "0.02" for v in side)
    second = [v for s, v in runner.commands if s == "select-ladder_s3-adamw-lr-r2"]
    assert second and all(v["optimizer.embed_lr"] == "0.096" for v in second)
    # Report seeds never include the selection seed, and run at the chosen rates.
    compare = [v for s, v in runner.commands if s.startswith("compare-")]
    assert len(compare) == 8
    for values in compare:
        assert 0 not in [int(x) for x in values["seed"].split(",")]
        assert "phase" not in values
    s3_adamw = next(
        v for s, v in runner.commands if s == "compare-ladder_s3" and v["optimizer"] == "adamw"
    )
    assert s3_adamw["optimizer.lr"] == "0.00075" and s3_adamw["optimizer.embed_lr"] == "0.096"
    # A size's own centres place its first grid: ladder_s4's AdamW matrix grid starts at 7.5e-4.
    first = [v for s, v in runner.commands if s == "select-ladder_s4-adamw-lr"]
    assert [float(r) for r in first[0]["optimizer.lr"].split(",")] == [0.000375, 0.00075, 0.0015]
    assert runner.most_at_once == 2  # parallel_runs in cpu_ladder.yaml


def test_the_context_set_runs_at_every_size_at_its_rates_and_tokens_per_step(
    tmp_path: Path,
) -> None:
    runner = FakeLadderRunner(tmp_path)
    summary = Ladder(runner).run({"select", "compare", "context"})
    sizes = {s["name"]: s for s in summary["sizes"]}
    recorded = {c["size"]: c for c in summary["contexts"]}
    assert list(recorded) == ["ladder_s1", "ladder_s2", "ladder_s3", "ladder_s4"]
    for size, spec in recorded.items():
        context = [v for s, v in runner.commands if s == f"context-{size}"]
        arms = {(v["window"], v["sinks"]) for v in context}
        assert arms == {("all_full", "none"), ("all_full", "learned"), ("alternate", "none"),
                        ("alternate", "learned")}  # fmt: skip
        rates = sizes[size]["best_rates"]["muon_adamw"]
        size_batch = int(next(o for o in sizes[size]["overrides"] if "micro_batch" in o)[-1])
        for values in context:
            assert values["model.name"] == size
            assert values["optimizer.lr"] == str(rates["optimizer.lr"])
            assert values["optimizer.adamw_lr"] == str(rates["optimizer.adamw_lr"])
            assert int(values["model.max_seq_len"]) >= 4 * int(values["window.size"])
            # The same tokens per step as the size's own runs (at 128 tokens each).
            assert int(values["trainer.micro_batch_size"]) * 512 == size_batch * 128
        assert spec["sweep_id"] == runner.sweep_id(f"context-{size}")
        assert spec["seq_len"] == 512 and spec["window"] == 128


def test_a_resumed_call_builds_on_the_protocol_json_of_its_stamp(tmp_path: Path) -> None:
    """On a machine with the MLflow store but no run dirs: the recorded rates are used without
    selecting again, a context sweep recorded as done is not rerun, and the log adds up."""
    first = FakeLadderRunner(tmp_path)
    summary = {**Ladder(first).run({"select", "compare", "context"}), "stamp": first.stamp,
               "stages": [{"stage": "compare-ladder_s1", "wall_s": 60.0}], "wall_s": 600.0}  # fmt: skip
    summary["contexts"] = [c for c in summary["contexts"] if c["size"] != "ladder_s2"]
    (tmp_path / "protocol.json").write_text(json.dumps(summary))
    again = FakeLadderRunner(tmp_path)
    again.args.stamp = again.stamp = first.stamp
    run_ladder(again, {"context"})
    assert {stage for stage, _ in again.commands} == {"context-ladder_s2"}
    rates = {s["name"]: s["best_rates"] for s in summary["sizes"]}["ladder_s2"]["muon_adamw"]
    assert {v["optimizer.lr"] for _, v in again.commands} == {str(rates["optimizer.lr"])}
    resumed = json.loads((tmp_path / "protocol.json").read_text())
    assert [c["size"] for c in resumed["contexts"]] == [
        "ladder_s1", "ladder_s2", "ladder_s3", "ladder_s4"]  # fmt: skip
    assert resumed["sizes"] == summary["sizes"]  # selections and sweeps kept as recorded
    assert resumed["calls"] == 2 and resumed["wall_s"] >= 600.0
    assert resumed["stages"][0] == {"stage": "compare-ladder_s1", "wall_s": 60.0}
    assert {s.get("call") for s in resumed["stages"][1:]} == {2}
    # A later call on one size keeps what the file records for the others.
    one = FakeLadderRunner(tmp_path)
    one.args.stamp = one.stamp = first.stamp
    one.protocol.sizes = [s for s in one.protocol.sizes if s.name == "ladder_s4"]
    run_ladder(one, {"compare"})
    assert {stage for stage, _ in one.commands} == {"compare-ladder_s4"}
    kept = json.loads((tmp_path / "protocol.json").read_text())
    assert [s["name"] for s in kept["sizes"]] == [
        "ladder_s1",
        "ladder_s2",
        "ladder_s3",
        "ladder_s4",
    ]
    assert len(kept["contexts"]) == 4 and kept["calls"] == 3
    # Another stamp's protocol.json is not built on: its context sweeps run again.
    other = FakeLadderRunner(tmp_path)
    other.args.stamp = other.stamp = "20000101-000000"
    run_ladder(other, {"context"})
    assert len({stage for stage, _ in other.commands}) == 4


def test_merge_overrides_keeps_one_value_per_key() -> None:
    merged = merge_overrides(["a=1", "b=2", "a=3"])
    assert merged == ["b=2", "a=3"]


def test_a_ladder_that_cannot_run_is_refused(tmp_path: Path) -> None:
    protocol = load_protocol("cpu_ladder")
    protocol.context.sizes = ["ladder_s1", "ladder_s9"]
    with pytest.raises(ConfigError, match=r"context.sizes names ladder_s9.*ladder_s1, ladder_s2"):
        check_ladder(protocol)
    protocol = load_protocol("cpu_ladder")
    protocol.context.size_overrides = {"ladder_s0": ["trainer.micro_batch_size=1"]}
    with pytest.raises(ConfigError, match=r"context.size_overrides names ladder_s0"):
        check_ladder(protocol)
    protocol = load_protocol("cpu_ladder")
    protocol.sizes[0].centers = {"adamw:optimizer.adamw_lr": 0.1}
    with pytest.raises(ConfigError, match=r"adamw:optimizer\.adamw_lr"):
        check_ladder(protocol)
    protocol = load_protocol("cpu_ladder")
    protocol.selection_rounds = 0
    with pytest.raises(ConfigError, match=r"selection_rounds=0 must be >= 1"):
        check_ladder(protocol)


@pytest.mark.parametrize("name", ["cpu_ladder", "gpu_ladder"])
def test_ladder_protocols_span_enough_compute(name: str) -> None:
    """At least 3 sizes, the report seeds apart from the selection seed, a context >= 4x the
    window (the issue's bar for a ladder whose measurements can decide)."""
    protocol = load_protocol(name)
    assert len(protocol.sizes) >= 3
    assert protocol.select_seed not in protocol.compare_seeds
    assert len(protocol.compare_seeds) >= 3
    assert (PROTOCOL_DIR / f"{name}.yaml").is_file()
    shape = dict(o.split("=", 1) for o in protocol.context.overrides)
    assert int(shape["model.max_seq_len"]) >= 4 * int(shape["window.size"])
    if name == "cpu_ladder":  # long-range factors replicated across the ladder's compute span
        assert protocol.context.sizes == [s.name for s in protocol.sizes]
    # The sizes span the compute the judgement rule asks before a measured effect counts, as the
    # trainer will count it (tokens x forward+backward FLOPs per token, on the meta device).
    flops = [planned_train_flops([*protocol.run_overrides, *s.overrides]) for s in protocol.sizes]
    assert flops == sorted(flops)
    assert flops[-1] / flops[0] >= MIN_COMPUTE_SPAN


def planned_train_flops(overrides: list[str]) -> float:
    import torch

    from gpt5_ablate.cli import CONFIG_DIR  # registers every group's schema
    from gpt5_ablate.model import GPT
    from gpt5_ablate.train.plan import make_plan

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=merge_overrides(overrides))
    plan = make_plan(cfg)
    with torch.device("meta"):
        model = GPT(plan.arch, vocab_size=cfg.tokenizer.vocab_size)
    return float(plan.total_steps * plan.tokens_per_step * model.flops_per_token(plan.seq_len))


def test_both_optimizers_decay_hidden_matrices_alike() -> None:
    """A stated choice: the same decoupled weight decay on the blocks' matrices under Muon and
    AdamW, so the comparison is of update rules, not regularisers."""
    from gpt5_ablate.cli import CONFIG_DIR  # registers every group's schema

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        muon = compose("config", overrides=["optimizer=muon_adamw"]).optimizer
        adamw = compose("config", overrides=["optimizer=adamw"]).optimizer
    assert muon.weight_decay == adamw.weight_decay == muon.adamw_weight_decay > 0


def dry_run_commands(capsys: pytest.CaptureFixture[str], tmp_path: Path, **scale: Any) -> str:
    run_protocol(ProtocolArgs(name="cpu_ladder", out=str(tmp_path), dry_run=True, **scale))
    return capsys.readouterr().out


def test_a_third_selection_round_from_the_command_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = dry_run_commands(capsys, tmp_path, sizes="ladder_s1", selection_rounds=3)
    stages = [line.split("]")[0] for line in out.splitlines() if line.startswith("[select")]
    assert (
        "[select-ladder_s1-adamw-lr-r3" in stages and "[select-ladder_s1-adamw-lr-r4" not in stages
    )
    recorded = json.loads((tmp_path / "protocol.dry_run.json").read_text())
    assert recorded["protocol"]["selection_rounds"] == 3


def test_sizes_and_budget_scale_from_the_command_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = dry_run_commands(capsys, tmp_path, sizes="ladder_s3,ladder_s4", tokens_per_param=20.0)
    commands = [line for line in out.splitlines() if line.startswith("[")]
    assert commands and all("trainer.tokens_per_param=20 " in c for c in commands)
    assert all("trainer.tokens_per_param=0.3" not in c for c in commands)
    assert {c.split("model.name=")[1].split()[0] for c in commands} == {"ladder_s3", "ladder_s4"}
    # The context set runs at the kept sizes of its own.
    assert {c.split("]")[0] for c in commands if c.startswith("[context")} == {
        "[context-ladder_s3",
        "[context-ladder_s4",
    }
    # A dry run records what it would run apart from protocol.json, which only real runs write.
    assert not (tmp_path / "protocol.json").exists()
    recorded = json.loads((tmp_path / "protocol.dry_run.json").read_text())
    assert [s["name"] for s in recorded["protocol"]["sizes"]] == ["ladder_s3", "ladder_s4"]
    assert recorded["protocol"]["context"]["sizes"] == ["ladder_s3", "ladder_s4"]


@pytest.mark.parametrize(
    ("name", "scale", "message"),
    [
        ("cpu_ladder", {"sizes": "ladder_s4,ladder_s9"}, r"ladder_s9 is not a size.*ladder_s1"),
        ("cpu_hour", {"sizes": "ladder_s1"}, r"not a ladder.*cpu_ladder, gpu_ladder"),
        ("cpu_ladder", {"tokens_per_param": 0.0}, r"tokens_per_param=0.0 is invalid"),
        ("cpu_ladder", {"selection_rounds": 0}, r"selection_rounds=0 is invalid"),
    ],
)
def test_bad_scale_settings_are_refused_before_anything_runs(
    tmp_path: Path, name: str, scale: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        run_protocol(ProtocolArgs(name=name, out=str(tmp_path / "out"), **scale))
    assert not (tmp_path / "out").exists()


def test_sizes_that_leave_out_every_context_size_leave_out_the_context_set(
    capsys: pytest.CaptureFixture[str],
) -> None:
    protocol = load_protocol("cpu_ladder")
    protocol.context.sizes = ["ladder_s3"]
    kept = apply_scale(protocol, ProtocolArgs(name="cpu_ladder", sizes="ladder_s1,ladder_s4"))
    assert kept.context is None and "this run has no context set" in capsys.readouterr().out
