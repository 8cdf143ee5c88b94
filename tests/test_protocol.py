"""The experiment protocol: LR grids that extend until the optimum is interior, selection on one
seed and reporting on fresh ones, and the named protocols' configs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from gpt5_ablate.errors import ConfigError
from gpt5_ablate.protocol import (
    PROTOCOL_DIR,
    LrGrid,
    ProtocolArgs,
    Runner,
    load_protocol,
    next_rate,
    run_protocol,
    select_rate,
)


def bowl(optimum: float):
    """A loss that is quadratic in log2(rate) with its minimum at ``optimum``."""
    return lambda rate: 3.0 + 0.1 * math.log2(rate / optimum) ** 2


def test_next_rate_extends_past_an_edge_and_stops_inside() -> None:
    loss = bowl(0.16)
    grid = [0.005, 0.01, 0.02, 0.04, 0.08]
    assert next_rate({r: loss(r) for r in grid}, 2.0) == ("high", 0.16)
    assert next_rate({r: loss(r) for r in [*grid, 0.16]}, 2.0) == ("high", 0.32)
    assert next_rate({r: loss(r) for r in [*grid, 0.16, 0.32]}, 2.0) == (None, None)
    low = bowl(0.001)
    assert next_rate({r: low(r) for r in grid}, 2.0) == ("low", 0.0025)


class FakeRunner(Runner):
    """Records the sweeps instead of training; losses come from a known bowl."""

    def __init__(self, tmp_path: Path, optimum: float) -> None:
        super().__init__(load_protocol("cpu_hour"), ProtocolArgs(out=str(tmp_path)), tmp_path)
        self.loss, self.commands, self.rates = bowl(optimum), [], {}

    def sweep(self, stage: str, overrides: list[str]) -> None:
        self.commands.append((stage, overrides))
        key_values = dict(o.split("=", 1) for o in overrides)
        for rate in key_values.get("optimizer.lr", "").split(","):
            if rate and key_values.get("phase") == "select":
                self.rates.setdefault(stage, set()).add(float(rate))

    def final_losses(self, stage: str, key: str) -> dict[float, float]:
        return {r: self.loss(r) for r in self.rates.get(stage, ())}

    def report(self, stage: str, sweep_id: str | None = None) -> None:
        self.commands.append((f"report {stage}", []))


def test_an_edge_optimum_is_extended_until_interior(tmp_path: Path) -> None:
    runner = FakeRunner(tmp_path, optimum=0.16)
    chosen = select_rate(runner, LrGrid(optimizer="muon_adamw", center=0.02, max_extensions=2))
    assert chosen["best"] == 0.16 and chosen["interior"] is True
    assert chosen["rates"] == [0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32]
    assert len(runner.commands) == 3  # the grid, then one point at a time


def test_the_extension_limit_leaves_an_edge_flagged(tmp_path: Path) -> None:
    runner = FakeRunner(tmp_path, optimum=10.0)
    chosen = select_rate(runner, LrGrid(optimizer="adamw", center=3e-3, max_extensions=1))
    assert chosen["interior"] is False and chosen["best"] == 0.012 * 2


def test_selection_and_reporting_use_disjoint_seeds(tmp_path: Path, monkeypatch) -> None:
    runner = FakeRunner(tmp_path, optimum=0.02)
    monkeypatch.setattr("gpt5_ablate.protocol.Runner", lambda *a, **k: runner)
    run_protocol(ProtocolArgs(out=str(tmp_path)))
    protocol = load_protocol("cpu_hour")
    select_seeds, report_seeds = set(), set()
    for stage, overrides in runner.commands:
        values = dict(o.split("=", 1) for o in overrides)
        seeds = {int(s) for s in values.get("seed", "").split(",") if s}
        if stage.startswith("select"):
            assert values["phase"] == "select"
            select_seeds |= seeds
        elif stage in ("compare", "design"):
            assert "phase" not in values  # the default: report
            report_seeds |= seeds
    assert select_seeds == {protocol.select_seed}
    assert report_seeds and not select_seeds & report_seeds
    # Each optimizer is compared at its own best rate.
    compared = {
        dict(o.split("=", 1) for o in ov)["optimizer"]: dict(o.split("=", 1) for o in ov)[
            "optimizer.lr"
        ]
        for stage, ov in runner.commands
        if stage == "compare"
    }
    assert set(compared) == {"muon_adamw", "adamw"}
    assert (tmp_path / "protocol.md").is_file()


@pytest.mark.parametrize("name", sorted(p.stem for p in PROTOCOL_DIR.glob("*.yaml")))
def test_named_protocols_load(name: str) -> None:
    protocol = load_protocol(name)
    # A ladder brackets every size: 3 log2 points, extended while the best sits at an edge.
    least = 3 if protocol.sizes else 5
    assert all(len(g.rates()) >= least for g in protocol.lr_grids)


def test_unknown_protocol_names_the_choices() -> None:
    with pytest.raises(ConfigError, match="cpu_hour"):
        load_protocol("nope")


def test_tokens_per_param_sets_the_budget_from_the_model_size() -> None:
    from hydra import compose, initialize_config_dir

    from gpt5_ablate.cli import CONFIG_DIR
    from gpt5_ablate.train.plan import make_plan, non_embedding_params

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        for preset in ("tiny", "mini", "small"):
            cfg = compose("config", overrides=[f"model={preset}", "trainer.tokens_per_param=20"])
            plan = make_plan(cfg)
            wanted = 20 * non_embedding_params(plan.arch)
            assert wanted <= plan.total_tokens < wanted + plan.tokens_per_step


def test_the_preset_ladder_spans_30x_non_embedding_parameters() -> None:
    from hydra import compose, initialize_config_dir

    from gpt5_ablate.cli import CONFIG_DIR
    from gpt5_ablate.train.plan import make_plan, non_embedding_params

    sizes = {}
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        for preset in ("tiny", "mini", "small", "gpt2_124m"):
            sizes[preset] = non_embedding_params(
                make_plan(compose("config", [f"model={preset}"])).arch
            )
    assert sizes["tiny"] < sizes["mini"] < sizes["small"] < sizes["gpt2_124m"]
    assert sizes["gpt2_124m"] / sizes["tiny"] >= 30


def test_the_report_recognises_rates_chosen_by_a_selection_grid() -> None:
    import pandas as pd

    from gpt5_ablate.analysis.pipeline import selected_rates

    def run(phase: str, lr: float, loss: float) -> dict:
        return {"phase": phase, "optimizer": "adamw", "model": "tiny", "budget_tokens": 1000,
                "lr": lr, "final_val_loss": loss}  # fmt: skip

    grid = [run("select", lr, loss) for lr, loss in [(1e-3, 5.0), (2e-3, 4.8), (4e-3, 4.9)]]
    at_best = pd.DataFrame([run("report", 2e-3, 4.7), run("report", 2e-3, 4.75)])
    everything = pd.DataFrame([*grid, *at_best.to_dict("records")])
    assert "adamw at 0.002, the best of 3 rates" in selected_rates(everything, at_best)
    elsewhere = pd.DataFrame([run("report", 4e-3, 4.7)])
    assert selected_rates(pd.DataFrame(grid + elsewhere.to_dict("records")), elsewhere) == ""
