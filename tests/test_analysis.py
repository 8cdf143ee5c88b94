"""Analysis layer: loader, statistics, figures, report CLI, notebook and experiment configs.

MLflow data comes from real runs logged into a temporary SQLite store by
``tests/analysis_fixtures.py``, whose numbers make every expectation below hand-computable.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import yaml

from gpt5_ablate.analysis import plots, plots_arms, stats
from gpt5_ablate.analysis.load import HISTORY_COLUMNS, ExperimentData, load_experiment
from gpt5_ablate.analysis.markdown import write_report
from gpt5_ablate.analysis.pipeline import ReportSettings, analyse
from gpt5_ablate.errors import ConfigError, InputError
from gpt5_ablate.report import main as report_main
from gpt5_ablate.report import parse_args
from tests import analysis_fixtures as fx

REPO_ROOT = Path(__file__).resolve().parents[1]
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 10: 2.228, 30: 2.042}  # two-sided 95% table values


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite MLflow store holding the factorial experiment and the LR-sweep experiment."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    fx.log_factorial_runs(uri)
    fx.log_lr_sweep_runs(uri)
    return uri


@pytest.fixture(scope="module")
def data(store: str) -> ExperimentData:
    return load_experiment(fx.EXPERIMENT, store)


def _runs_frame(values: dict[tuple[str, str, int], float]) -> pd.DataFrame:
    """A hand-built run table: (attention, optimizer, seed) -> final_val_loss."""
    rows = [
        {
            "run_id": f"r{i}",
            "arm": f"{a} / {o}",
            "attention": a,
            "optimizer": o,
            "norm": "qk_rmsnorm",
            "model": "tiny",
            "seed": s,
            "lr_scale": 1.0,
            "final_val_loss": v,
        }
        for i, ((a, o, s), v) in enumerate(values.items())
    ]
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("df", sorted(T975))
def test_t_quantile_matches_table(df: int) -> None:
    assert stats.t_quantile(0.975, df) == pytest.approx(T975[df], abs=1e-3)
    assert stats.t_quantile(0.025, df) == pytest.approx(-T975[df], abs=1e-3)


def test_mean_ci_hand_computed() -> None:
    interval = stats.mean_ci([1.0, 2.0, 3.0])
    assert interval.mean == pytest.approx(2.0)
    assert interval.sd == pytest.approx(1.0)
    # t_{0.975,2} · 1/√3 = 4.303 · 0.577 = 2.484
    assert interval.half_width == pytest.approx(4.3027 / math.sqrt(3), abs=1e-3)
    assert interval.half_width == pytest.approx(2.484, abs=1e-3)
    assert (interval.low, interval.high) == pytest.approx((2 - 2.484, 2 + 2.484), abs=1e-3)
    assert not interval.excludes_zero  # [-0.484, 4.484]
    assert stats.mean_ci([1.0, 1.1, 0.9]).excludes_zero


def test_mean_ci_single_value_has_no_interval() -> None:
    interval = stats.mean_ci([3.5])
    assert interval.mean == 3.5
    assert not interval.has_ci
    assert not interval.excludes_zero
    assert "no CI" in interval.format()


def test_paired_differences_constructed_case() -> None:
    # (b − a) within each (optimizer, seed) block is 1, 2, 3 and 2: mean 2, sd √(2/3).
    runs = _runs_frame(
        {
            ("a", "x", 0): 10.0,
            ("b", "x", 0): 11.0,
            ("a", "x", 1): 10.0,
            ("b", "x", 1): 12.0,
            ("a", "y", 0): 20.0,
            ("b", "y", 0): 23.0,
            ("a", "y", 1): 20.0,
            ("b", "y", 1): 22.0,
        }
    )
    pairs = stats.paired_differences(runs, "attention", "b", "a")
    assert sorted(pairs["diff"]) == [1.0, 2.0, 2.0, 3.0]
    interval = stats.mean_ci(pairs["diff"].astype(float))
    assert interval.mean == pytest.approx(2.0)
    assert interval.half_width == pytest.approx(3.182 * math.sqrt(2 / 3) / 2, abs=1e-3)
    # Unpaired, the optimizer's 10-unit offset would swamp the effect; pairing removes it.
    unpaired = stats.welch_ci(
        runs.loc[runs.attention == "b", "final_val_loss"],
        runs.loc[runs.attention == "a", "final_val_loss"],
    )
    assert unpaired.half_width > 5 * interval.half_width


def test_arm_summary_needs_three_seeds_and_stays_positive() -> None:
    runs = _runs_frame(
        {("a", "x", 0): 5.0, ("a", "x", 1): 5.4, ("b", "x", 0): 0.5, ("b", "x", 1): 0.05}
    )
    runs = pd.concat([runs, runs.iloc[[2]].assign(seed=2, final_val_loss=0.02)])
    arms = stats.arm_summary(runs, "final_val_loss").set_index("arm")
    two = arms.loc["a / x"]
    assert two["n_seeds"] == 2 and math.isnan(two["loss_ci_low"])
    assert two["seed_values"] == "5.000, 5.400"
    three = arms.loc["b / x"]
    assert three["n_seeds"] == 3 and three["loss_ci_low"] == 0.0  # the t-interval is clipped
    assert three["perplexity_ci_low"] == pytest.approx(1.0)  # exp(0): never below 1


def test_select_best_lr_picks_each_arms_best_scale() -> None:
    rows = []
    for arm, best in (("mha", 1.0), ("gqa", 2.0)):
        for lr in (0.5, 1.0, 2.0):
            for seed in (0, 1):
                loss = 3.0 + abs(math.log2(lr / best)) * 0.1 + seed * 0.01
                rows.append(
                    {
                        "run_id": f"{arm}{lr}{seed}",
                        "arm": arm,
                        "attention": arm,
                        "lr_scale": lr,
                        "seed": seed,
                        "final_val_loss": loss,
                    }
                )
    selection = stats.select_best_lr(pd.DataFrame(rows))
    assert selection.swept
    chosen = selection.runs.groupby("arm")["lr_scale"].unique().to_dict()
    assert {k: list(v) for k, v in chosen.items()} == {"gqa": [2.0], "mha": [1.0]}
    assert len(selection.runs) == 4  # 2 arms × 2 seeds at the chosen scale
    assert selection.table["chosen"].sum() == 2


def test_select_best_lr_without_sweep_keeps_all_runs(data: ExperimentData) -> None:
    selection = stats.select_best_lr(data.runs)
    assert not selection.swept
    assert len(selection.runs) == len(data.runs)


# --------------------------------------------------------------------------------------------
# Loader
# --------------------------------------------------------------------------------------------


def test_loader_one_row_per_finished_run(data: ExperimentData) -> None:
    runs = data.runs
    assert len(runs) == 8
    assert runs["run_id"].is_unique
    assert set(runs["status"]) == {"FINISHED"}
    assert data.excluded == {"FAILED": 1}
    for column in (
        *stats.FACTORS,
        "phase",
        "data",
        "budget_tokens",
        "total_steps",
        "unigram_val_loss",
        "full_val_loss",
        "last_val_loss",
        "final_val_loss_source",
        "model",
        "seed",
        "lr_scale",
        "arm",
        "n_params",
        "n_params_non_embedding",
        "flops_per_token",
        "kv_cache_bytes_per_token",
        "tokens_per_step",
        "tokens_seen",
        "train_flops",
        "wall_time_s",
        "best_val_loss",
        "final_val_loss",
        "best_val_accuracy",
        "final_val_accuracy",
        "best_val_perplexity",
        "final_val_perplexity",
        "sweep_id",
        "experiment_name",
    ):
        assert column in runs.columns, column
    assert set(runs["arm"]) == {
        "mha / muon_adamw",
        "mha / adamw",
        "gqa / muon_adamw",
        "gqa / adamw",
    }
    assert runs["seed"].tolist().count(0) == 4
    assert runs["lr_scale"].eq(1.0).all()
    # Old runs: no window/sinks tags, no phase, no full-split metric, no total_steps param.
    assert set(runs["window"]) == {"all_full"} and set(runs["sinks"]) == {"none"}
    assert set(runs["phase"]) == {"report"}
    assert set(runs["final_val_loss_source"]) == {"last periodic eval"}
    assert runs["full_val_loss"].isna().all()
    assert (runs["budget_tokens"] == 30 * fx.TOKENS_PER_STEP).all()


def test_loader_best_and_final_metrics(data: ExperimentData) -> None:
    runs = data.runs.set_index(["attention", "optimizer", "seed"])
    for key, final in fx.FINAL_LOSS.items():
        row = runs.loc[key]
        assert row["final_val_loss"] == pytest.approx(final)
        assert row["final_val_perplexity"] == pytest.approx(math.exp(final))
        assert row["final_val_accuracy"] == pytest.approx(fx.val_accuracy(final))
    dipping = runs.loc[fx.DIPPING_RUN]
    assert dipping["best_val_loss"] == pytest.approx(3.10)
    assert dipping["final_val_loss"] == pytest.approx(3.26)
    assert dipping["best_val_accuracy"] == pytest.approx(fx.val_accuracy(3.10))
    assert dipping["best_val_perplexity"] == pytest.approx(math.exp(3.10))
    mha = runs.loc[("mha", "adamw", 0)]
    assert mha["n_params"] == 1_000_000
    assert mha["tokens_seen"] == 30 * fx.TOKENS_PER_STEP
    assert mha["train_flops"] == 30 * fx.TOKENS_PER_STEP * fx.FLOPS_PER_TOKEN["mha"]
    assert mha["wall_time_s"] == pytest.approx(30 * 0.10 + 0.01)  # last eval's elapsed time
    assert mha["kv_cache_bytes_per_token"] == 2048


def test_loader_can_include_unfinished_runs(store: str) -> None:
    everything = load_experiment(fx.EXPERIMENT, store, include_unfinished=True)
    assert len(everything.runs) == 9
    assert (everything.runs["status"] == "FAILED").sum() == 1
    assert everything.excluded == {}


def test_loader_skips_sweep_parent_and_untagged_runs(store: str) -> None:
    everything = load_experiment(fx.EXPERIMENT, store, include_unfinished=True)
    assert "sweep" not in set(everything.runs["run_name"])
    runs = everything.runs.assign(ffn=None)  # a factor missing on every run
    assert stats.varied_factors(runs) == ["attention", "optimizer"]
    from gpt5_ablate.analysis.load import arm_labels

    runs.loc[0, "attention"] = None  # one untagged run still gets a label
    assert arm_labels(runs).iloc[0].startswith("n/a / ")


def test_loader_unknown_experiment_is_a_clear_error(store: str) -> None:
    with pytest.raises(InputError, match="synthetic"):
        load_experiment("no_such_experiment", store)


def test_loader_reads_full_split_metrics(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    fx.log_runs(uri, "new", fx.full_sweep_specs(documents=0)[:2])
    runs = load_experiment("new", uri).runs.set_index("seed")
    assert runs.loc[0, "final_val_loss"] == pytest.approx(4.0)  # final/val_loss, not val/loss
    assert runs.loc[0, "last_val_loss"] == pytest.approx(4.01)
    assert runs.loc[0, "final_val_loss_source"] == "full split"
    assert runs.loc[0, "unigram_val_loss"] == pytest.approx(6.5)
    assert runs.loc[0, "budget_tokens"] == 40 * 512
    assert runs.loc[0, "data"] == "stdlib" and runs.loc[0, "sweep_id"] == "sweep-a"


def test_history_long_table(data: ExperimentData) -> None:
    history = data.history
    assert list(history.columns) == list(HISTORY_COLUMNS)
    counts = history.groupby("metric").size().to_dict()
    n_eval, n_train = len(fx.EVAL_STEPS), len(fx.TRAIN_LOG_STEPS)
    assert counts == {
        "val/loss": 8 * n_eval,
        "val/accuracy": 8 * n_eval,
        "val/perplexity": 8 * n_eval,
        "train/loss": 8 * n_train,
    }
    val = history[history["metric"] == "val/loss"]
    assert not val.duplicated(["run_id", "step"]).any()
    assert (val["tokens_seen"] == val["step"] * fx.TOKENS_PER_STEP).all()
    gqa = val[val["arm"] == "gqa / adamw"].sort_values(["seed", "step"])
    # Elapsed time at eval steps is the eval-time value (logged after the train-step value).
    np.testing.assert_allclose(gqa["elapsed_s"].iloc[:3], [0.81, 1.61, 2.41])
    np.testing.assert_allclose(gqa["value"].iloc[:3], fx.val_curve("gqa", "adamw", 0))


# --------------------------------------------------------------------------------------------
# Effects on the logged runs
# --------------------------------------------------------------------------------------------


def test_model_effects_on_logged_runs(data: ExperimentData) -> None:
    analysis = analyse(data, ReportSettings(per_document=False))
    assert analysis.response == "last_val_loss"  # these runs predate final/val_loss
    results = {r.factor: r for r in analysis.primary.verdicts.factors}
    attention = results["attention"]
    (effect,) = attention.pooled.comparisons
    # Balanced 2 × 2 × 2: the model's contrast is the mean of mha − gqa per (optimizer, seed),
    # −0.10, −0.12, −0.08, −0.06.
    assert attention.pooled.best == "mha"
    assert effect.estimate == pytest.approx(-0.09)
    assert attention.category == "favoured"
    assert results["optimizer"].pooled.comparisons[0].estimate == pytest.approx(-0.20)


# --------------------------------------------------------------------------------------------
# Figures and report
# --------------------------------------------------------------------------------------------


def test_every_plot_is_written(data: ExperimentData, tmp_path: Path) -> None:
    produced = [
        plots.plot_val_loss_curves(data.history, data.runs, tmp_path),
        plots_arms.plot_final_perplexity(data.runs, tmp_path),
        plots_arms.plot_main_effects(data.runs, tmp_path),
        plots_arms.plot_interactions(data.runs, tmp_path),
        plots.plot_efficiency(data.history, data.runs, tmp_path),
        plots_arms.plot_kv_cache(data.runs, tmp_path),
    ]
    for paths in produced:
        assert sorted(p.suffix for p in paths) == [".png", ".svg"]
        for path in paths:
            assert path.stat().st_size > 1000, path
    assert (tmp_path / "val_loss_vs_tokens.png").read_bytes()[:4] == b"\x89PNG"
    assert b"<svg" in (tmp_path / "main_effects.svg").read_bytes()[:2000]


def test_single_seed_plots_say_no_interval(data: ExperimentData, tmp_path: Path) -> None:
    one_seed = data.runs[data.runs["seed"] == 0]
    paths = plots_arms.plot_final_perplexity(one_seed, tmp_path)
    assert b"no CI" in paths[1].read_bytes()


def test_log_axes_when_values_span_decades() -> None:
    assert plots.spans_decades(pd.Series([1e3, 5e4]))
    assert not plots.spans_decades(pd.Series([1e3, 5e3]))
    assert not plots.spans_decades(pd.Series([0.0, 5e3]))  # zero is never on a log axis


def _verdict_rows(report: str) -> dict[str, list[str]]:
    section = report.split("## Verdict", 1)[1].split("\n\n", 2)[1]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    rows = [[c.strip() for c in line.strip("|").split(" | ")] for line in lines[2:]]
    return {row[0]: row for row in rows}


def test_report_cli_writes_verdict_and_figures(store: str, tmp_path: Path) -> None:
    out = tmp_path / "report"
    code = report_main([f"experiment={fx.EXPERIMENT}", f"tracking.uri={store}", f"out={out}"])
    assert code == 0
    report = (out / "report.md").read_text()
    rows = _verdict_rows(report)
    assert list(rows)[:2] == ["attention", "optimizer"]
    attention = rows["attention"]
    assert attention[1].startswith("**favoured mha**")
    assert "mha − gqa: -0.090" in attention[1]
    assert rows["optimizer"][1].startswith("**favoured muon_adamw**")
    assert rows["norm"][1].startswith("not varied here")
    assert "Most consistent with (judgement)" in report
    assert "last periodic `val/loss`" in report  # these runs predate final/val_loss
    assert "no unigram baseline was logged" in report
    for caveat in ("**Scale.**", "**Seeds.**", "**Compute.**", "not** compute-matched"):
        assert caveat in report
    for stem in (
        "val_loss_vs_tokens",
        "final_perplexity",
        "main_effects",
        "interactions",
        "efficiency",
        "kv_cache_vs_loss",
    ):
        assert f"]({stem}.png)" in report
        assert (out / f"{stem}.png").stat().st_size > 0
        assert (out / f"{stem}.svg").stat().st_size > 0
    assert len(pd.read_csv(out / "runs.csv")) == 8
    assert list(pd.read_csv(out / "verdict.csv").columns) == [
        "Factor",
        "Measured here",
        "Public evidence",
        "Judgement",
        "Sensitivity",
    ]


def test_report_uses_best_lr_per_arm(store: str, tmp_path: Path) -> None:
    data = load_experiment(fx.LR_EXPERIMENT, store)
    report = write_report(data, tmp_path, ReportSettings(per_document=False)).read_text()
    assert "## Learning-rate selection" in report
    assert "own best `lr_scale`" in report
    assert "- gqa: best lr_scale 2 (at the high edge; try 4 next)" in report
    assert "- mha: best lr_scale 1 (interior of 3 rates)" in report
    # Compared at their best scales, mha (3.11) beats gqa (3.16) by 0.05 in both seeds.
    attention = _verdict_rows(report)["attention"]
    assert "mha − gqa: -0.050" in attention[1]
    assert "LR tuned per arm" in attention[1]
    assert "Needs at least two varied factors" in report


def test_report_module_entry_point() -> None:
    """`python -m gpt5_ablate.report` is wired up: help text, and a bad argument exits with 2.

    (The full report path runs in-process above; a subprocess would re-pay MLflow's import.)
    """
    command = [sys.executable, "-m", "gpt5_ablate.report"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    run = {"capture_output": True, "text": True, "env": env, "cwd": REPO_ROOT, "check": False}
    helped = subprocess.run([*command, "--help"], **run)
    assert helped.returncode == 0 and "tracking.uri" in helped.stdout
    bad = subprocess.run([*command, "experimnt=x"], **run)
    assert bad.returncode == 2 and bad.stderr.startswith("error: Unknown key 'experimnt'")
    assert bad.stderr.count("\n") == 1


def test_parse_args_defaults_and_keys() -> None:
    args = parse_args([])
    assert (args.experiment, args.tracking_uri) == ("gpt5_ablate", "sqlite:///mlflow.db")
    assert args.out_dir == Path("reports/gpt5_ablate")
    args = parse_args(
        ["+experiment=quick", "tracking.uri=sqlite:///x.db", "include_unfinished=true"]
    )
    assert (args.experiment, args.tracking_uri, args.include_unfinished) == (
        "quick",
        "sqlite:///x.db",
        True,
    )
    assert args.out_dir == Path("reports/quick")
    assert (args.sweep, args.group_unlike, args.equivalence_margin) == ("latest", False, 0.02)
    args = parse_args(["sweep=all", "group_unlike=true", "equivalence_margin=0.05"])
    assert (args.sweep, args.group_unlike, args.equivalence_margin) == ("all", True, 0.05)
    with pytest.raises(ConfigError):
        parse_args(["metric=accuracy"])


# --------------------------------------------------------------------------------------------
# Notebook
# --------------------------------------------------------------------------------------------


def test_notebook_is_generated_and_has_no_outputs() -> None:
    sys.path.insert(0, str(REPO_ROOT / "notebooks"))
    try:
        import make_notebook
    finally:
        sys.path.remove(str(REPO_ROOT / "notebooks"))
    committed = nbformat.read(REPO_ROOT / "notebooks" / "compare_runs.ipynb", as_version=4)
    assert committed == make_notebook.build_notebook(), "run: python notebooks/make_notebook.py"
    for cell in committed.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


def test_notebook_executes_against_store(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jupyter_client.kernelspec import KernelSpecManager
    from nbclient import NotebookClient

    if "python3" not in KernelSpecManager().find_kernel_specs():
        # Fail loudly: an unexecuted notebook must not pass as a skipped test.
        pytest.fail("No 'python3' Jupyter kernel; run: python -m ipykernel install --user")
    monkeypatch.setenv("GPT5_ABLATE_TRACKING_URI", store)
    monkeypatch.setenv("GPT5_ABLATE_EXPERIMENT", fx.EXPERIMENT)
    monkeypatch.setenv("GPT5_ABLATE_NOTEBOOK_OUT", str(tmp_path))
    notebook = nbformat.read(REPO_ROOT / "notebooks" / "compare_runs.ipynb", as_version=4)
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=120,
        resources={"metadata": {"path": str(REPO_ROOT / "notebooks")}},
    )
    client.execute()
    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    images = [
        o for c in notebook.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})
    ]
    assert len(images) >= 6
    assert (tmp_path / "val_loss_vs_tokens.svg").is_file()
    text = "".join(
        str(o.get("data", {}).get("text/markdown", "")) + str(o.get("text", ""))
        for c in notebook.cells
        for o in c.get("outputs", [])
    )
    assert "Measured here" in text and "Public evidence" in text and "Judgement" in text


# --------------------------------------------------------------------------------------------
# Experiment configs
# --------------------------------------------------------------------------------------------

EXPERIMENTS = {
    "quick": ({"attention", "optimizer", "norm", "pos", "seed"}, 48),
    "full_factorial": ({"attention", "optimizer", "norm", "pos", "ffn", "seed"}, 144),
    "lr_sweep": ({"attention", "optimizer", "optimizer.lr_scale", "seed"}, 36),
}


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_experiment_config(name: str) -> None:
    path = REPO_ROOT / "conf" / "experiment" / f"{name}.yaml"
    text = path.read_text()
    assert text.startswith("# @package _global_")
    config = yaml.safe_load(text)
    assert {"override /model": "tiny"} in config["defaults"]
    assert config["experiment_name"] == name
    assert config["tracking"]["experiment"] == name
    assert config["trainer"]["max_tokens"] > 0
    assert config["hydra"]["mode"] == "MULTIRUN"
    params = config["hydra"]["sweeper"]["params"]
    keys, n_runs = EXPERIMENTS[name]
    assert set(params) == keys
    assert math.prod(len(str(v).split(",")) for v in params.values()) == n_runs


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_experiment_composes_with_hydra(name: str, tmp_path: Path) -> None:
    """Compose against a stub config tree holding a copy of conf/experiment."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    groups = {
        "attention": ["mha", "gqa", "mla"],
        "optimizer": ["muon_adamw", "adamw"],
        "norm": ["qk_rmsnorm", "none"],
        "pos": ["rope", "learned"],
        "ffn": ["swiglu", "gelu"],
        "model": ["tiny", "small"],
    }
    for group, options in groups.items():
        (tmp_path / group).mkdir()
        for option in options:
            (tmp_path / group / f"{option}.yaml").write_text(f"name: {option}\nlr_scale: 1.0\n")
    defaults = "\n".join(f"  - {g}: {opts[0]}" for g, opts in groups.items())
    (tmp_path / "config.yaml").write_text(
        f"defaults:\n{defaults}\n  - _self_\n"
        "seed: 0\nexperiment_name: null\ntracking:\n  experiment: gpt5_ablate\n"
        "trainer:\n  max_tokens: null\n  eval_every: 100\n"
    )
    shutil.copytree(REPO_ROOT / "conf" / "experiment", tmp_path / "experiment")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(tmp_path), version_base="1.3"):
        cfg = compose("config", overrides=[f"+experiment={name}"], return_hydra_config=True)
    assert cfg.model.name == "tiny"
    assert cfg.experiment_name == name and cfg.tracking.experiment == name
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert set(cfg.hydra.sweeper.params) == EXPERIMENTS[name][0]
