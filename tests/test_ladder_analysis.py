"""The scale ladder's analysis on a real MLflow SQLite store of synthetic runs, logged with the
params, metrics, tags and artifacts the training loop and the ladder protocol write.

Planted truth: AdamW's test loss is ``5 − 0.3·log10(C / 1e12)``; Muon reaches at compute ``C``
the loss AdamW reaches at ``m(C)·C``, with ``m(C) = 2·(C / 1e12)^−0.1``, so the multiplier is
2, 1.59 and 1.26 at the three sizes and its trend is −0.1 log10(×) per decade of compute.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from gpt5_ablate.analysis.compute import saturating_fit, size_multipliers
from gpt5_ablate.analysis.evidence import load_evidence
from gpt5_ablate.analysis.judgement import Judgement, JudgementSettings, MeasuredSize, judgement
from gpt5_ablate.analysis.ladder import (
    FIRST_COLUMN,
    ladder_sizes,
    load_ladder,
    optimizer_multipliers,
    unsettled_selections,
    write_ladder_report,
)
from gpt5_ablate.analysis.ladder_report import _budget_line, _split_lines
from gpt5_ablate.errors import InputError

EXPERIMENT = "ladder_synthetic"
TOKENS_PER_STEP, STEPS = 1000, 100
SIZES = {"s1": (2, 1e12, 1e5), "s2": (4, 1e13, 4e5), "s3": (8, 1e14, 2e6)}  # layers, C, params
REPORT_SEEDS = (1, 2, 3)
CONTEXT_SEEDS = (1, 2, 3)  # cpu_ladder's context set
BEST = {"muon_adamw": {"optimizer.lr": 0.02, "optimizer.adamw_lr": 0.003},
        "adamw": {"optimizer.lr": 0.0015}}  # fmt: skip
NOISE = 0.004
BINS = ((0, 128), (128, 256), (256, 384), (384, 512))


def adamw_loss(flops: float) -> float:
    return 5.0 - 0.3 * math.log10(flops / 1e12)


def planted_multiplier(flops: float) -> float:
    return 2.0 * (flops / 1e12) ** -0.1


def _log(client: MlflowClient, experiment_id: str, tags: dict, params: dict, metrics: dict,
         artifact: Path | None = None) -> str:  # fmt: skip
    run = client.create_run(experiment_id, tags={k: str(v) for k, v in tags.items()})
    run_id = run.info.run_id
    at = STEPS
    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), 0, at) for k, v in metrics.items()]
        + [Metric("val/loss", float(metrics["final/val_loss"]), 0, at)],
        params=[Param(k, str(v)) for k, v in params.items()],
        tags=[RunTag("mlflow.source.name", "tests/test_ladder_analysis.py")],
    )
    if artifact is not None:
        client.log_artifact(run_id, str(artifact), "eval")
    client.set_terminated(run_id, "FINISHED")
    return run_id


def _params(optimizer: str, layers: int, flops: float, n_params: float, seq_len: int) -> dict:
    rates = BEST[optimizer]
    return {
        "optimizer.name": optimizer, "model.n_layers": layers, "model.d_model": 64,
        "model.max_seq_len": seq_len, "n_params": int(n_params * 1.5),
        "n_params_non_embedding": int(n_params),
        "flops_per_token": flops / (TOKENS_PER_STEP * STEPS), "tokens_per_step": TOKENS_PER_STEP,
        "total_steps": STEPS, "kv_cache_bytes_per_token": 1024,
        **{k: v for k, v in rates.items()},
    }  # fmt: skip


def _tags(optimizer: str, seed: int, sweep: str, phase: str = "report", **levels: str) -> dict:
    return {
        "optimizer": optimizer, "attention": "gqa", "norm": "qk_rmsnorm", "pos": "rope",
        "ffn": "swiglu", "window": levels.get("window", "all_full"),
        "sinks": levels.get("sinks", "none"), "model": "custom", "seed": seed,
        "lr_scale": 1.0, "phase": phase, "sweep_id": sweep,
    }  # fmt: skip


def _bins(losses: list[float]) -> dict[str, float]:
    return {f"final/test_loss_pos_{lo}_{hi}": v for (lo, hi), v in zip(BINS, losses, strict=True)}


def _log_size(client: MlflowClient, experiment_id: str, rng: np.random.Generator, name: str,
              layers: int, flops: float, n_params: float) -> dict:  # fmt: skip
    """One size's compare runs (report seeds at the best rates, one off-rate run), a selection
    run, and the size's entry in the protocol summary."""
    compare = f"ladder-{name}-compare"
    for optimizer in BEST:
        target = flops * (planted_multiplier(flops) if optimizer == "muon_adamw" else 1.0)
        params = _params(optimizer, layers, flops, n_params, 128)
        for seed in REPORT_SEEDS:
            test = adamw_loss(target) + rng.normal(0, NOISE)
            metrics = {"final/test_loss": test, "final/val_loss": test + 0.01}
            _log(client, experiment_id, _tags(optimizer, seed, compare), params, metrics)
        # A compare run off the best rate (left out), and a selection run (never reported).
        off_rate = {**params, "optimizer.lr": params["optimizer.lr"] * 2}
        bad = {"final/test_loss": 9.0, "final/val_loss": 9.0}
        _log(client, experiment_id, _tags(optimizer, 1, compare), off_rate, bad)
    _log(client, experiment_id, _tags("adamw", 0, compare, "select"), params, bad)
    return {
        "name": name, "overrides": [f"model.n_layers={layers}"],
        "sweeps": {"compare": compare, "select-adamw-lr": f"select-{name}"},
        "selections": [
            {"optimizer": "muon_adamw", "key": "optimizer.lr", "rates": [0.01, 0.02, 0.04],
             "losses": {"0.01": 5.1, "0.02": 5.0, "0.04": 5.2}, "best": 0.02,
             "interior": True},
            {"optimizer": "muon_adamw", "key": "optimizer.adamw_lr",
             "rates": [0.0015, 0.003, 0.006], "losses": {"0.0015": 5.1, "0.003": 5.0,
             "0.006": 5.05}, "best": 0.003, "interior": True},
            {"optimizer": "adamw", "key": "optimizer.lr", "rates": [0.00075, 0.0015, 0.003],
             "losses": {"0.00075": 5.3, "0.0015": 5.2, "0.003": 5.25}, "best": 0.0015,
             "interior": True},
        ],
        "best_rates": BEST,
    }  # fmt: skip


def _populate(root: Path) -> dict:
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment(EXPERIMENT, (root / "artifacts").as_uri())
    rng = np.random.default_rng(7)
    sizes = [_log_size(client, experiment_id, rng, name, *spec) for name, spec in SIZES.items()]
    # A context sweep at every size, 512 tokens, window 128: alternate windows lose 0.05 at the
    # late positions; learned sinks gain 0.02 everywhere.
    contexts = []
    for name, (layers, flops, n_params) in SIZES.items():
        sweep = f"ladder-context-{name}"
        for window in ("all_full", "alternate"):
            for sinks in ("none", "learned"):
                for seed in CONTEXT_SEEDS:
                    late = 0.05 if window == "alternate" else 0.0
                    gain = -0.02 if sinks == "learned" else 0.0
                    base = adamw_loss(flops)
                    bins = [base + 0.3 + gain + rng.normal(0, 0.003),
                            base + gain + rng.normal(0, 0.003),
                            base - 0.1 + gain + late, base - 0.15 + gain + late]  # fmt: skip
                    # Sinks also gain 0.1 more at the first 16 positions (per-position only).
                    per_position = np.repeat(bins, 128)
                    per_position[:16] -= 0.1 if sinks == "learned" else 0.0
                    csv = root / "loss_by_position.csv"
                    pd.DataFrame({"position": np.arange(512), "tokens": 10,
                                  "loss": per_position}).to_csv(csv, index=False)  # fmt: skip
                    params = {**_params("muon_adamw", layers, 1.2 * flops, n_params, 512),
                              "window.size": 128,
                              "kv_cache_bytes_at_max_seq_len": 512 * 1024 if window == "all_full"
                              else 320 * 1024}  # fmt: skip
                    metrics = {"final/test_loss": float(np.mean(bins)), "final/val_loss": 5.0,
                               **_bins(bins)}  # fmt: skip
                    tags = _tags("muon_adamw", seed, sweep, window=window, sinks=sinks)
                    _log(client, experiment_id, tags, params, metrics, csv)
        contexts.append({"size": name, "sweep_id": sweep, "window": 128, "seq_len": 512,
                         "overrides": ["model.max_seq_len=512", "window.size=128"]})  # fmt: skip
    return {
        "protocol": {"name": "test_ladder", "select_seed": 0}, "sizes": sizes,
        "contexts": contexts, "tracking_uri": uri, "experiment": EXPERIMENT, "stages": [],
        "wall_s": 600.0,
    }  # fmt: skip


@pytest.fixture(scope="module")
def summary(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return _populate(tmp_path_factory.mktemp("ladder"))


def test_reports_only_best_rate_report_runs_on_test_loss(summary: dict) -> None:
    data = load_ladder(summary)
    assert len(data.report) == len(SIZES) * len(BEST) * len(REPORT_SEEDS)
    assert (data.report["loss"] < 9).all()  # the selection and off-rate runs are left out
    assert (data.report["loss_source"] == "test").all()
    assert not data.notes


def test_planted_multiplier_and_trend_are_recovered(summary: dict) -> None:
    mult = optimizer_multipliers(load_ladder(summary), n_resamples=300)
    assert mult is not None and mult.no_trend is None
    for estimate, log_c in zip(mult.multipliers, mult.log_c, strict=True):
        truth = planted_multiplier(10**log_c)
        assert estimate.low < truth < estimate.high
        assert estimate.value == pytest.approx(truth, rel=0.1)
    assert mult.trend is not None and mult.trend.low < -0.1 < mult.trend.high
    # The loss difference (muon − adamw) shrinks toward zero: its slope is positive.
    assert mult.diff_trend is not None and mult.diff_trend.low > 0
    truth_1e24 = planted_multiplier(1e24)
    assert mult.extrapolated[1e24].low < truth_1e24 < mult.extrapolated[1e24].high


def test_no_trend_with_two_sizes_or_a_rising_loss(summary: dict) -> None:
    two = {**summary, "sizes": summary["sizes"][:2], "contexts": []}
    mult = optimizer_multipliers(load_ladder(two), n_resamples=100)
    assert mult is not None and mult.trend is None and "only 2 sizes" in (mult.no_trend or "")
    assert not mult.extrapolated
    rows = [{"size": f"s{i}", "optimizer": opt, "train_flops": 10.0**c, "loss": 4 + 0.1 * c + d}
            for i, c in enumerate((12, 13, 14)) for opt, d in (("muon_adamw", -0.1), ("adamw", 0))
            for _ in range(3)]  # fmt: skip
    rising = size_multipliers(pd.DataFrame(rows), "optimizer", "muon_adamw", "adamw",
                              n_resamples=50)  # fmt: skip
    assert rising is not None and rising.trend is None
    assert "does not fall with compute" in (rising.no_trend or "")
    one_seed = size_multipliers(pd.DataFrame(rows).drop_duplicates(), "optimizer", "muon_adamw",
                                "adamw", n_resamples=50)  # fmt: skip
    assert one_seed is not None and math.isnan(one_seed.multipliers[0].low)


def test_saturating_fit_only_where_determined() -> None:
    log_c = np.repeat(np.arange(12.0, 17.0), 3)
    loss = 2.0 + 3.0 * 10 ** (-0.3 * (log_c - 12)) + np.tile([-0.002, 0.0, 0.002], 5)
    fit = saturating_fit(log_c, loss)
    assert fit.reason is None and fit.e == pytest.approx(2.0, abs=0.05)
    assert fit.alpha == pytest.approx(0.3, rel=0.1)
    assert fit.log_c_at(float(loss[-1])) == pytest.approx(16.0, abs=0.05)
    assert "3 sizes" in (saturating_fit(log_c[:9], loss[:9]).reason or "")


def test_ladder_sizes_count_favoured_sizes(summary: dict) -> None:
    rows = ladder_sizes(summary)
    optimizer = [r for r in rows if r["factor"] == "optimizer"]
    assert [r["size"] for r in optimizer] == ["s1", "s2", "s3"]
    assert {r["favoured"] for r in optimizer} == {"muon_adamw"}
    assert {r["category"] for r in optimizer} == {"favoured"}
    assert [r["flops"] for r in optimizer] == pytest.approx([1e12, 1e13, 1e14])
    for factor, level in (("window", "all_full"), ("sinks", "learned")):
        mine = [r for r in rows if r["factor"] == factor]
        assert [r["size"] for r in mine] == ["s1", "s2", "s3"]  # one context sweep per size
        assert {(r["favoured"], r["category"]) for r in mine} == {(level, "favoured")}
        assert [r["flops"] for r in mine] == pytest.approx([1.2e12, 1.2e13, 1.2e14])
        assert {(r["context_len"], r["window_tokens"]) for r in mine} == {(512, 128)}


def test_a_one_size_context_entry_of_an_older_protocol_json_still_loads(summary: dict) -> None:
    old = {k: v for k, v in summary.items() if k != "contexts"}
    old["context"] = {"sweep_id": "ladder-context-s2", "size": "s2", "window": 128,
                      "seq_len": 512, "overrides": []}  # fmt: skip
    data = load_ladder(old)
    assert data.context is not None and set(data.context["size"]) == {"s2"}
    assert len(data.context) == 4 * len(CONTEXT_SEEDS)
    assert [r["size"] for r in ladder_sizes(old) if r["factor"] == "window"] == ["s2"]


def test_report_writes_tables_figures_and_context(summary: dict, tmp_path: Path) -> None:
    path = write_ladder_report(summary, tmp_path, n_resamples=100)
    text = path.read_text()
    assert path == tmp_path / "ladder" / "report.md"
    stems = ["loss_vs_compute", "multiplier_vs_compute"]
    stems += [f"loss_by_position_{size}" for size in SIZES]
    for stem in stems:
        for ext in ("png", "svg"):
            assert (tmp_path / "ladder" / "figures" / f"{stem}.{ext}").stat().st_size > 0
    assert "Extrapolation (NOT measured)" in text and "1e+24" in text
    assert "arXiv:2509.02046" in text and "arXiv:2502.16982" in text
    assert "tokens per non-embedding parameter" in text and "arXiv:2203.15556" in text
    assert "per-position artifacts" in text
    assert "muon_adamw favoured at 3 size(s) spanning 100× compute" in text
    diffs = pd.read_csv(tmp_path / "ladder" / "context_differences.csv")
    diffs = diffs[(diffs["arm"] == "alternate / none") & (diffs["size"] == "s2")]
    late = diffs[diffs["bin"] == "test_loss_pos_384_512"]
    early = diffs[diffs["bin"] == "test_loss_pos_0_128"]
    assert late["diff"].iloc[0] == pytest.approx(0.05, abs=1e-6)
    assert abs(early["diff"].iloc[0]) < 0.01
    arms = pd.read_csv(tmp_path / "ladder" / "context_arms.csv")
    arms = arms[arms["size"] == "s3"].set_index("arm")
    assert arms.loc["alternate / none", "kv_cache_bytes_at_context"] == 320 * 1024
    # The cross-size table: each factor's main effect per size, overall and at the late bin.
    effects = pd.read_csv(tmp_path / "ladder" / "context_effects.csv")
    window = effects[(effects["factor"] == "window") & (effects["level"] == "alternate")]
    assert list(window["size"].unique()) == ["s1", "s2", "s3"]
    assert window[window["bin"] == "loss"]["diff"].to_numpy() == pytest.approx(
        [0.025] * 3, abs=1e-3
    )
    assert window[window["bin"] == "test_loss_pos_384_512"]["diff"].to_numpy() == pytest.approx(
        [0.05] * 3
    )
    sinks = effects[(effects["factor"] == "sinks") & (effects["bin"] == "loss")]
    assert sinks["diff"].to_numpy() == pytest.approx([-0.02] * 3, abs=1e-3)
    # The first 16 of 512 positions (from the per-position artifacts) show the sinks' extra gain.
    first = effects[(effects["factor"] == "sinks") & (effects["bin"] == FIRST_COLUMN)]
    assert first["diff"].to_numpy() == pytest.approx([-0.12] * 3, abs=2e-3)
    assert "positions 0–15" in text.split("## Long context: windows and sinks", 1)[1]
    assert (
        "sinks learned − none at positions 0–15: below zero at 3 and above zero at 0 of 3 "
        "size(s), spanning 100× compute" in text
    )
    summary_table = text.split("## Long context: windows and sinks", 1)[1].split("## ", 1)[0]
    assert "| s3 | 1.2e+14 | window: alternate − all_full |" in summary_table
    assert "s3: all_full 524k, alternate 328k" in summary_table
    assert "### s1" in text.split("## Long context by size", 1)[1]
    json.dumps(summary)  # the summary stays plain JSON


def test_report_says_which_rates_were_tuned_and_flags_an_edge(
    summary: dict, tmp_path: Path
) -> None:
    """A choice still at its grid's edge in its last round is called a bound; an earlier round's
    edge that a later round resolved is not."""
    summary = json.loads(json.dumps(summary))
    selections = summary["sizes"][0]["selections"]
    selections[0] = {**selections[0], "round": 1, "interior": False}
    selections.append({**selections[0], "round": 2, "interior": True})
    selections[2] = {**selections[2], "interior": False, "best": 0.003}
    text = write_ladder_report(summary, tmp_path, n_resamples=100).read_text()
    assert (
        "Rates tuned: muon_adamw: `optimizer.lr`, `optimizer.adamw_lr`; adamw: `optimizer.lr`."
        in text
    )
    edge = next(line for line in text.splitlines() if "At a grid edge" in line)
    name = summary["sizes"][0]["name"]
    assert f"{name} adamw `optimizer.lr` = 0.003" in edge
    assert "muon_adamw `optimizer.lr`" not in edge


def test_a_rate_still_moving_in_the_last_round_is_flagged_with_its_gain(
    summary: dict, tmp_path: Path
) -> None:
    """Coordinate descent that moved a rate in its last round has not settled: the report names
    the move and what that round gained, beside the difference it bears on; a rate re-checked
    without moving is not flagged."""
    summary = json.loads(json.dumps(summary))
    selections = summary["sizes"][0]["selections"]
    adamw = selections[2]  # adamw optimizer.lr, best 0.0015 at 5.2
    muon = selections[0]  # muon_adamw optimizer.lr, best 0.02 at 5.0
    selections += [
        {**adamw, "round": 2, "best": 0.003, "losses": {"0.0015": 5.19, "0.003": 5.15}},
        {**muon, "round": 2, "losses": {"0.01": 5.1, "0.02": 4.99}},
    ]
    moved = unsettled_selections(summary["sizes"])
    assert moved[["size", "optimizer", "moved"]].values.tolist() == [
        ["s1", "adamw", "`optimizer.lr` 0.0015→0.003"]
    ]
    assert moved["gain"].iloc[0] == pytest.approx(5.2 - 5.15)  # best of round 1 - of round 2
    text = write_ladder_report(summary, tmp_path, n_resamples=100).read_text()
    note = next(line for line in text.splitlines() if "Rates still moving" in line)
    assert "s1 adamw (`optimizer.lr` 0.0015→0.003; that round lowered its best selection" in note
    assert "muon_adamw (" not in note


def _judged(text: str, factor: str) -> tuple[str, str]:
    """A factor's judgement line in the report's Judgement section, and the line after it."""
    lines = text.split("## Judgement", 1)[1].splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(f"- **{factor}**"))
    return lines[at], lines[at + 1]


def _expected(
    rows: list[dict], factor: str, tested: list[str], window: int | None = None
) -> Judgement:
    """What the judgement rule says given the ladder's rows, called directly."""
    sizes = [MeasuredSize(r["flops"], r["context_len"], r["favoured"], r["category"], r["size"])
             for r in rows if r["factor"] == factor]  # fmt: skip
    settings = JudgementSettings(window_tokens=window)
    return judgement(factor, load_evidence(), sizes, settings, tested)


def test_report_judges_each_measured_factor(summary: dict, tmp_path: Path) -> None:
    text = write_ladder_report(summary, tmp_path, n_resamples=50).read_text()
    section = text.split("## Judgement", 1)[1]
    assert section.count("Each lab votes once") == 1  # the rule, stated once
    assert (
        "Replication condition **met**: this ladder has 3 size(s) spanning 100× training compute"
        in section
    )
    rows = ladder_sizes(summary)
    optimizer = _expected(rows, "optimizer", ["adamw", "muon_adamw"])
    assert optimizer.measured_level == "muon_adamw"  # 3 sizes over 100×: the votes count
    window = _expected(rows, "window", ["all_full", "alternate"], window=128)
    sinks = _expected(rows, "sinks", ["learned", "none"], window=128)
    for factor, expected in (("optimizer", optimizer), ("window", window), ("sinks", sinks)):
        line, sensitivity = _judged(text, factor)
        assert expected.text in line
        assert sensitivity == f"  - Sensitivity: {expected.sensitivity}."
    # Window and sinks were run at all three sizes, 100x apart, at 4x the window: they count.
    assert window.measured_level == "all_full" and sinks.measured_level == "learned"
    assert "measured at 3 size(s): s1, s2, s3" in _judged(text, "window")[0]
    assert (
        "measured evidence adds 2 votes: learned favoured at 3 sizes" in _judged(text, "sinks")[0]
    )


def test_a_ladder_spanning_too_little_compute_does_not_count(summary: dict, tmp_path: Path) -> None:
    """Three sizes, Muon clearly ahead at each, but only 10× apart in compute."""
    client = MlflowClient(tracking_uri=summary["tracking_uri"])
    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    rng = np.random.default_rng(11)
    narrow = {"n1": (2, 1e12, 1e5), "n2": (3, 3e12, 2e5), "n3": (4, 1e13, 4e5)}
    sizes = [_log_size(client, experiment_id, rng, name, *spec) for name, spec in narrow.items()]
    ladder = {**summary, "sizes": sizes, "contexts": []}
    text = write_ladder_report(ladder, tmp_path, n_resamples=50).read_text()
    assert (
        "Replication condition **not met**: this ladder has 3 size(s) spanning 10× training compute"
        in text
    )
    rows = ladder_sizes(ladder)
    assert [r["favoured"] for r in rows] == ["muon_adamw"] * 3
    assert {r["category"] for r in rows} == {"favoured"}
    expected = _expected(rows, "optimizer", ["adamw", "muon_adamw"])
    assert expected.measured_level is None  # favoured everywhere, yet too narrow to count
    line, sensitivity = _judged(text, "optimizer")
    assert expected.text in line and sensitivity.startswith("  - Sensitivity: w_openai 1:")
    assert "- **window**" not in text  # no context set: nothing judged on it


def test_falls_back_to_validation_with_a_visible_note(summary: dict, tmp_path: Path) -> None:
    client = MlflowClient(tracking_uri=summary["tracking_uri"])
    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    for optimizer in BEST:
        for seed in REPORT_SEEDS:
            _log(
                client,
                experiment_id,
                _tags(optimizer, seed, "ladder-val-only"),
                _params(optimizer, 2, 1e12, 1e5, 128),
                {"final/val_loss": 5.0 + seed / 100},
            )
    only = {
        **summary,
        "contexts": [],
        "sizes": [{**summary["sizes"][0], "sweeps": {"compare": "ladder-val-only"}}],
    }
    data = load_ladder(only)
    assert (data.report["loss_source"] != "test").all()
    assert any("VALIDATION" in note for note in data.notes)
    text = write_ladder_report(only, tmp_path, n_resamples=50).read_text()
    assert "VALIDATION" in text and "No multiplier" in text


def test_bad_summary_is_refused_before_loading() -> None:
    with pytest.raises(InputError, match="sizes"):
        load_ladder({"sizes": [], "experiment": "x"}, "sqlite:///nowhere.db")


def test_budget_line_states_the_ratio_against_the_compute_optimal_one() -> None:
    same = pd.DataFrame({"tokens_per_param": [0.302, 0.302, 0.3]})
    assert "trains 0.3 tokens per non-embedding parameter, 0.015× the compute-optimal ~20" in (
        _budget_line(same)
    )
    growing = pd.DataFrame({"tokens_per_param": [10.0, 40.0]})
    assert "trains 10–40 tokens per non-embedding parameter, 0.5–2× the" in _budget_line(growing)


def test_split_line_reports_sizes_and_overlap_or_nothing_when_runs_disagree() -> None:
    runs = pd.DataFrame({
        "n_train_tokens": [3.5e6, 3.5e6], "n_val_tokens": [1.2e5, 1.2e5],
        "n_test_tokens": [2.4e5, 2.4e5], "n_docs_val": [40, 40], "n_docs_test": [40, 40],
        "val_train_overlap_32": [0.0043, 0.0043], "test_train_overlap_32": [0.039, 0.039],
        "test_val_overlap_32": [0.0008, 0.0008],
    })  # fmt: skip
    text = " ".join(_split_lines(runs))
    assert "test 240k tokens (40 documents)" in text
    assert "0.43% of validation's and 3.90% of test's occur verbatim in training" in text
    assert "0.08% of test's in validation" in text
    runs.loc[1, "n_test_tokens"] = 1.0  # two different splits: no single figure to state
    assert _split_lines(runs) == []
    assert _split_lines(runs.drop(columns="n_docs_test")) == []  # runs before the test split
