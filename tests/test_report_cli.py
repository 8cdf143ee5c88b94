"""``python -m gpt5_ablate.report`` on real MLflow SQLite stores written like the training loop.

The runs are logged with ``MlflowClient`` by ``tests/analysis_fixtures.py`` (full-split final
metrics, per-document artifacts, unigram baseline, sweeps, phases, budgets), so the report is
exercised end to end in seconds.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from gpt5_ablate.analysis.judgement import JudgementSettings
from gpt5_ablate.analysis.load import load_experiment
from gpt5_ablate.analysis.pipeline import ReportSettings, analyse
from gpt5_ablate.analysis.verdict_table import verdict_frame
from gpt5_ablate.report import main as report_main
from tests import analysis_fixtures as fx

NOW = int(time.time() * 1000)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    uri = f"sqlite:///{tmp_path_factory.mktemp('report_cli') / 'mlflow.db'}"
    fx.log_runs(uri, "full", fx.full_sweep_specs())
    # A 200-step default run (no sweep) before a 40-step 2 × 2 sweep.
    fx.log_runs(
        uri,
        "mixed",
        [fx.RunSpec({}, 0, 3.9, sweep=None, total_steps=200, start_ms=NOW - 600_000, documents=0)],
    )
    fx.log_runs(uri, "mixed", fx.full_sweep_specs(sweep="s40", start_ms=NOW, documents=0))
    fx.log_runs(
        uri, "one_arm", [fx.RunSpec({}, seed, 4.0 + seed / 100, documents=0) for seed in range(3)]
    )
    MlflowClient(tracking_uri=uri).create_experiment("no_runs")
    # mla/adamw never leaves the unigram plateau (6.3 vs 6.5).
    stuck = {"attention": "mla", "optimizer": "adamw"}
    plateau = [
        fx.RunSpec(s.levels, s.seed, 6.3 if dict(s.levels) == stuck else s.loss, documents=0)
        for s in fx.full_sweep_specs()
    ]
    fx.log_runs(uri, "plateau", plateau)
    # LR selection on seed 0 (phase=select), then the report runs on fresh seeds 1-3.
    phases = [
        fx.RunSpec(
            {"attention": a},
            0,
            4.0 + abs(lr - 1.0) / 10 + (a == "mla") * 0.05,
            phase="select",
            lr_scale=lr,
        )
        for a in ("gqa", "mla")
        for lr in (0.5, 1.0, 2.0)
    ] + [
        fx.RunSpec(
            {"attention": a},
            seed,
            4.0 + (a == "mla") * 0.05 + seed / 1000,
            phase="report",
            documents=0,
        )
        for a in ("gqa", "mla")
        for seed in (1, 2, 3)
    ]
    fx.log_runs(uri, "phases", phases)
    # Three sizes spanning 100× compute; gqa better by 0.05 at each.
    sizes = [
        fx.RunSpec(
            {"attention": a},
            seed,
            4.5 - 0.3 * i + (a == "mla") * 0.05 + 0.004 * seed,
            model=model,
            n_params=1_000_000 * 10**i,
            documents=0,
        )
        for i, model in enumerate(("tiny", "small", "medium"))
        for a in ("gqa", "mla")
        for seed in range(3)
    ]
    fx.log_runs(uri, "sizes", sizes)
    return uri


def run(store: str, tmp_path: Path, *args: str) -> tuple[int, str]:
    out = tmp_path / "report"
    code = report_main([f"tracking.uri={store}", f"out={out}", *args])
    text = (out / "report.md").read_text() if (out / "report.md").is_file() else ""
    return code, text


def verdict_table(report: str) -> pd.DataFrame:
    section = report.split("## Verdict", 1)[1].split("\n\n")[1]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split(" | ")]
    rows = [[c.strip() for c in re.split(r"(?<!\\)\|", line.strip("|"))] for line in lines[2:]]
    return pd.DataFrame(rows, columns=header).set_index("Factor")


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if " INFO " not in line and line.strip()]


# --------------------------------------------------------------------------------------------
# The full report on a 2 × 2 × 2-seed sweep
# --------------------------------------------------------------------------------------------


def test_report_has_three_columns_baseline_corrections_and_power(
    store: str, tmp_path: Path
) -> None:
    code, report = run(store, tmp_path, "experiment=full", "bootstrap_samples=300")
    assert code == 0
    verdict = verdict_table(report)
    assert list(verdict.columns) == ["Measured here", "Public evidence", "Judgement"]
    assert {"attention", "optimizer", "norm", "pos", "ffn", "window", "sinks"} <= set(verdict.index)
    attention = verdict.loc["attention"]
    assert attention["Measured here"].startswith("**favoured gqa**")
    assert "gqa − mla: -0.055" in attention["Measured here"]
    assert (
        "Holm p=" in attention["Measured here"] and "doc-bootstrap [" in attention["Measured here"]
    )
    assert "measured at tiny" in attention["Measured here"]
    assert "LR untuned" in attention["Measured here"]
    assert "mla: Kimi K2 [6], DeepSeek-V3 [4]" in attention["Public evidence"]
    assert attention["Judgement"].startswith("most consistent with gqa (posterior 0.79)")
    assert "measured evidence not counted: gqa favoured at 1 size(s)" in attention["Judgement"]
    assert "- window: w_openai 1: undetermined, leans all_full (0.55)" in report
    assert verdict.loc["norm", "Measured here"].startswith("not varied here")
    assert "GPT-5 uses" not in report
    # Baseline, corrections, power, unit of replication, evidence sources.
    assert "unigram loss (a model that ignores context) 6.500" in report
    assert "Holm family: 4 tests" in report
    assert "80% power to detect |effect|" in report and "seeds per arm" in report
    assert "**Unit of replication.**" in report
    assert "**Judgement rule.**" in report
    assert "https://arxiv.org/abs/2412.19437" in report
    assert "`final/val_loss`: one pass over the entire VALIDATION split" in report
    svg = (tmp_path / "report" / "val_loss_vs_tokens.svg").read_text()
    assert "unigram baseline 6.50" in svg
    comparisons = pd.read_csv(tmp_path / "report" / "comparisons.csv")
    assert comparisons["doc_ci_low"].notna().all()
    assert (comparisons["doc_ci_low"] < comparisons["effect"]).all()


def test_arm_table_shows_seed_values_below_three_seeds(store: str, tmp_path: Path) -> None:
    _, report = run(store, tmp_path, "experiment=full", "bootstrap_samples=0")
    arms = report.split("## Arms", 1)[1]
    assert "4.005 (seeds: 4.000, 4.010; no CI below 3 seeds)" in arms
    assert "[" not in arms.split("\n\n")[2].split("|")[10]  # no interval in the loss column


# --------------------------------------------------------------------------------------------
# Run selection
# --------------------------------------------------------------------------------------------


def test_latest_sweep_is_chosen_and_the_other_run_is_named(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = run(store, tmp_path, "experiment=mixed", "bootstrap_samples=0")
    err = capsys.readouterr().err
    assert code == 0
    assert "warning: Analysing sweep s40; left out 1 run(s)" in err
    assert "gqa-muon_adamw-qk_rmsnorm-rope-swiglu-tiny-200st-s0" in err
    assert "8 run(s) in 4 arm(s)" in report and "> **Warning.**" in report


def test_sweep_all_never_pairs_unlike_budgets(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = run(store, tmp_path, "experiment=mixed", "sweep=all", "bootstrap_samples=0")
    err = capsys.readouterr().err
    assert code == 0
    assert "differ from the majority (tiny, 20.5k tokens, data stdlib)" in err
    assert "200st-s0 (tiny, 102k tokens, data stdlib)" in err
    assert "8 run(s) in 4 arm(s)" in report
    grouped = analyse(
        load_experiment("mixed", store),
        ReportSettings(sweep="all", group_unlike=True, per_document=False),
    )
    assert len(grouped.groups) == 1  # the 200-step group has one arm: nothing to compare in it
    assert any("group_unlike=true" in note for note in grouped.selection.notes)


def test_unknown_sweep_lists_the_sweeps(store: str, tmp_path: Path, capsys) -> None:
    code, _ = run(store, tmp_path, "experiment=mixed", "sweep=nope")
    (line,) = error_lines(capsys.readouterr().err)
    assert code == 2 and line.startswith("error: sweep='nope' matches no sweep") and "s40" in line


def test_arm_at_the_unigram_plateau_is_kept_out(store: str) -> None:
    data = load_experiment("plateau", store)
    analysis = analyse(data, ReportSettings(per_document=False))
    group = analysis.primary
    assert group.plateau == ["mla / adamw"]
    assert "mla / adamw" not in set(group.verdict_runs["arm"])
    assert len(group.verdict_runs) == 6
    assert any("not past the unigram plateau" in note for note in group.notes)
    assert "attention × optimizer (not every level combination was run)" in group.fit.omitted


def test_a_level_lost_to_the_plateau_gets_no_verdict(store: str) -> None:
    data = load_experiment("plateau", store)
    adamw = data.runs["optimizer"] == "adamw"
    data.runs.loc[adamw, ["full_val_loss", "final_val_loss"]] = 6.2
    analysis = analyse(data, ReportSettings(per_document=False))
    verdict = verdict_frame(analysis).set_index("Factor")
    assert verdict.loc["optimizer", "Measured here"] == (
        "no verdict: every adamw arm is within 0.5 nats of the unigram loss (not past the "
        "plateau), leaving only muon_adamw"
    )
    assert verdict.loc["attention", "Measured here"].startswith("**")


def test_select_phase_runs_are_never_compared(store: str, tmp_path: Path) -> None:
    data = load_experiment("phases", store)
    analysis = analyse(data, ReportSettings(per_document=False))
    compared = analysis.primary.verdict_runs
    assert set(compared["phase"]) == {"report"} and len(compared) == 6
    assert analysis.tuned_lr
    assert any("LR-selection run(s) (phase=select)" in note for note in analysis.selection.notes)
    _, report = run(store, tmp_path, "experiment=phases", "bootstrap_samples=0")
    lr = report.split("## Learning-rate selection", 1)[1]
    assert "- gqa: 1 (interior of 3 rates)" in lr


def test_sign_at_three_sizes_decides_and_gives_a_compute_multiplier(store: str) -> None:
    data = load_experiment("sizes", store)
    analysis = analyse(
        data, ReportSettings(group_unlike=True, per_document=False, bootstrap_samples=200)
    )
    assert len(analysis.groups) == 3
    verdict = verdict_frame(analysis).set_index("Factor")
    judged = verdict.loc["attention", "Judgement"]
    assert judged.startswith("most consistent with gqa (posterior 0.79)")
    # The three sizes span just under the rule's 100× compute, so they do not count ...
    assert "gqa favoured at 3 size(s) spanning 97.6× compute; the rule needs" in judged
    # ... until the span the rule asks for is lowered (a report key: min_compute_span).
    analysis.settings.judgement = JudgementSettings(min_compute_span=50)
    judged = verdict_frame(analysis).set_index("Factor").loc["attention", "Judgement"]
    assert "measured evidence adds 2 votes: gqa favoured at 3 sizes spanning 97.6×" in judged
    assert judged.startswith("most consistent with gqa (posterior 0.81)")
    assert "gqa favoured at 3/3 sizes" in verdict.loc["attention", "Measured here"]
    (multiplier,) = analysis.multipliers
    assert multiplier.better == "gqa" and multiplier.worse == "mla"
    # loss = 4.5 − 0.3·log10(C / C0): 0.05 nats cost 10 ** (0.05 / 0.3) ≈ 1.47× compute.
    assert multiplier.multiplier == pytest.approx(10 ** (0.05 / 0.3), rel=0.1)


# --------------------------------------------------------------------------------------------
# Bad arguments
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["experiment=nowhere"], "error: No MLflow experiment named 'nowhere'"),
        (["experiment=no_runs"], "error: Experiment 'no_runs' at "),
        (["experiment=one_arm"], "error: Experiment 'one_arm' (sweep-a) has only one arm"),
        (["experimnt=full"], "error: Unknown key 'experimnt'"),
        (["alpha=2"], "error: alpha=2.0 must be between 0 and 1."),
        (["metric=accuracy"], "error: metric='accuracy' is invalid"),
        (["w_openai=-1"], "error: w_openai=-1.0 and measured_votes=2.0 must be >= 0."),
        (["posterior_threshold=1.5"], "error: posterior_threshold=1.5 must be in (0, 1]"),
        (["source=/nonexistent"], "error: source=/nonexistent: no export.json there."),
    ],
)
def test_bad_arguments_end_with_one_error_line(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, _ = run(store, tmp_path, *args)
    (line,) = error_lines(capsys.readouterr().err)
    assert code == 2
    assert line.startswith(message), line


def test_empty_or_missing_store_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = f"sqlite:///{tmp_path / 'missing.db'}"
    assert report_main([f"tracking.uri={missing}"]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert line.startswith("error: There is no MLflow store at")
    assert not (tmp_path / "missing.db").exists()  # and none was created
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    MlflowClient(tracking_uri=empty).search_experiments()  # creates the schema only
    assert report_main([f"tracking.uri={empty}", "experiment=quick"]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert line.startswith("error: No MLflow experiment named 'quick'")
    assert "Experiments there: Default" in line


def test_judgement_settings_are_report_keys(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert report_main(["--help"]) == 0
    listed = capsys.readouterr().out
    for key in ("w_openai", "posterior_threshold", "measured_votes", "min_sizes", "source"):
        assert key in listed
    code, report = run(store, tmp_path, "experiment=full", "bootstrap_samples=0", "w_openai=8")
    assert code == 0
    assert "gpt-oss weighs w_openai = 8" in report
    window = verdict_table(report).loc["window", "Judgement"]
    assert window.startswith("most consistent with alternate (posterior 0.61)")


def test_the_test_split_is_compared_when_every_run_has_it() -> None:
    from gpt5_ablate.analysis.pipeline import resolve_response

    both = pd.DataFrame({"full_val_loss": [5.0, 5.1], "full_test_loss": [5.2, 5.3]})
    column, note = resolve_response(both, "final_loss")
    assert column == "full_test_loss" and "held-out TEST split" in note
    assert resolve_response(both, "final_val_loss")[0] == "full_val_loss"
    older = both.assign(full_test_loss=[5.2, None])
    column, note = resolve_response(older, "final_loss")
    assert column == "full_val_loss" and "1 of 2 runs predate the test split" in note
