"""The analysis layer on a tiny REAL sweep: 2 x 2 arms x 2 seeds trained through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpt5_ablate.analysis import load_experiment
from gpt5_ablate.analysis.markdown import write_report
from tests.train_helpers import TINY_OVERRIDES, run_cli

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def real_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    root = tmp_path_factory.mktemp("real_sweep")
    uri = f"sqlite:///{root}/mlflow.db"
    proc = run_cli(
        [
            "-m",
            "attention=gqa,mla",
            "optimizer=muon_adamw,adamw",
            "seed=0,1",
            *TINY_OVERRIDES,
            "trainer.max_steps=6",
            "trainer.warmup_steps=2",
            "trainer.eval_every=3",
            "trainer.log_every=3",
            "trainer.checkpoint_every=0",
            "trainer.num_samples=0",
            "tracking.log_checkpoint=false",
            f"cache_dir={root}/cache",
            f"tracking.uri={uri}",
            "tracking.experiment=real",
        ],
        cwd=root,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return uri, root


def test_loader_reads_the_real_sweep(real_sweep: tuple[str, Path]) -> None:
    uri, _ = real_sweep
    data = load_experiment("real", uri)
    runs = data.runs
    assert len(runs) == 8  # the sweep's parent run is not an arm
    assert set(zip(runs["attention"], runs["optimizer"], strict=True)) == {
        ("gqa", "muon_adamw"),
        ("gqa", "adamw"),
        ("mla", "muon_adamw"),
        ("mla", "adamw"),
    }
    assert sorted(runs["seed"].astype(int).tolist()) == [0, 0, 0, 0, 1, 1, 1, 1]
    assert (runs["tokens_seen"] == 6 * 8 * 64).all()
    # best and last are both periodic evaluations; the final loss may be the full split's.
    assert (runs["best_val_loss"] <= runs["last_val_loss"] + 1e-12).all()
    assert runs["n_params"].nunique() == 2  # MLA and GQA differ in size; optimizers do not
    val = data.history[data.history["metric"] == "val/loss"]
    steps_per_run = val.groupby("run_id")["step"].apply(lambda s: tuple(sorted(s)))
    assert len(steps_per_run) == 8
    assert set(steps_per_run) == {(0, 3, 6)}


def test_report_on_the_real_sweep(real_sweep: tuple[str, Path], tmp_path: Path) -> None:
    uri, _ = real_sweep
    report = write_report(load_experiment("real", uri), tmp_path)
    text = report.read_text()
    verdict = text.split("## Verdict")[1].split("\n## ")[0]
    assert "| Factor | Measured here | Public evidence | Judgement |" in verdict
    for factor in ("attention", "optimizer", "norm", "window", "sinks"):
        assert f"| {factor} |" in verdict
    assert "| norm | not varied here (every run: qk_rmsnorm)" in verdict
    assert "## Baselines" in text and "unigram loss" in text
    # New runs log a held-out test split: the report compares on it and says so.
    assert "`final/test_loss`: one pass over the entire held-out TEST split" in text
    for png in tmp_path.glob("*.png"):
        assert png.stat().st_size > 1000
    assert len(list(tmp_path.glob("*.png"))) >= 5
