"""A run is identified by what changes its result: the same configuration finds the same run dir
however it is launched, and a finished run is reported, not trained again.

The unit tests compose the real Hydra config; the integration test runs the real CLI as a user
would: a single run, then a sweep that contains it, then the single command again.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from gpt5_ablate.cli import CONFIG_DIR
from gpt5_ablate.generate import main as generate_main
from gpt5_ablate.run_identity import ADDED_LATER, COSMETIC_KEYS, is_cosmetic, run_hash, run_identity
from gpt5_ablate.train.finished import FINISHED_FILE
from tests.test_reliability import experiment_runs
from tests.train_helpers import TINY_OVERRIDES, run_cli


def composed(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def test_restated_defaults_and_cosmetic_keys_keep_the_identity() -> None:
    default = run_hash(composed())
    assert run_hash(composed("attention=gqa", "optimizer=muon_adamw")) == default
    assert (
        run_hash(
            composed(
                "trainer.progress=false",
                "tracking.uri=https://alice:secret@mlflow.example.org",
                "tracking.experiment=elsewhere",
                "launcher=joblib",
                "cache_dir=/somewhere/else",
                "trainer.resume=false",
                "hydra.run.dir=/tmp/x",
            )
        )
        == default
    )


@pytest.mark.parametrize(
    "override",
    [
        "seed=1",
        "attention=mla",
        "trainer.eval_every=25",  # changes the logged curve, not the final model: still kept
        "trainer.num_threads=1",  # can change the float reduction order
        "trainer.log_every=5",
        "optimizer.lr=0.01",
        "phase=select",
    ],
)
def test_what_can_change_a_result_changes_the_identity(override: str) -> None:
    assert run_hash(composed(override)) != run_hash(composed())


def test_a_setting_added_later_keeps_older_runs_identity_at_its_default() -> None:
    """optimizer.embed_lr came after runs were recorded: at its default (one rate) the identity
    is the one those runs had; set, it is a different run."""
    adamw = composed("optimizer=adamw")
    assert adamw.optimizer.embed_lr is None
    before = run_identity(adamw)
    assert "embed_lr" not in before["optimizer"]
    assert run_hash(composed("optimizer=adamw", "optimizer.embed_lr=0.01")) != run_hash(adamw)
    for key in ADDED_LATER:
        assert OmegaConf.select(adamw, key, default="missing") != "missing", key


def test_cosmetic_keys_exist_and_nothing_else_is_left_out() -> None:
    cfg = composed()
    for key in COSMETIC_KEYS:
        assert cfg.get(key.split(".")[0]) is not None or key == "cache_dir", key
    identity = run_identity(cfg)
    assert "hydra" not in identity and "tracking" not in identity
    assert "progress" not in identity["trainer"] and "eval_every" in identity["trainer"]
    assert is_cosmetic("tracking.uri") and not is_cosmetic("trainer.max_steps")
    assert not is_cosmetic("trackingx")


RUN = [
    *TINY_OVERRIDES,
    "trainer.max_steps=6",
    "trainer.eval_every=6",
    "trainer.checkpoint_every=0",
    "trainer.eval_tokens=1024",
    "trainer.num_samples=0",
    "trainer.num_threads=1",
    "tracking.log_checkpoint=false",
]


def run_dirs(cwd: Path) -> list[Path]:
    return sorted(p for p in (cwd / "outputs" / "gpt5_ablate").glob("*-s0-*") if p.is_dir())


def train_single(args: list[str], cwd: Path, uri: str) -> tuple[Path, Any, list[Any]]:
    """One single run: its run dir, its MLflow run and its val/loss history."""
    single = run_cli(args, cwd)
    assert single.returncode == 0, single.stderr[-3000:]
    (run_dir,) = run_dirs(cwd)
    (first,) = experiment_runs(uri, "gpt5_ablate")
    return run_dir, first, MlflowClient(uri).get_metric_history(first.info.run_id, "val/loss")


@pytest.mark.integration
def test_a_sweep_finds_the_single_run_and_a_rerun_reports_it(
    tmp_path: Path, cache_dir: Path
) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = [*RUN, f"cache_dir={cache_dir}", f"tracking.uri={uri}"]

    run_dir, first, history = train_single(args, tmp_path, uri)

    # The sweep restates the defaults (gqa, muon_adamw): that job is the single run.
    sweep = run_cli(["-m", *args, "attention=gqa,mla", "trainer.progress=true"], tmp_path)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    assert "Sweep summary: 2/2 runs finished (1 had finished before: not trained again)" in (
        sweep.stderr
    )
    assert f"already finished, not trained again: {run_dir.name}" in sweep.stderr
    assert len(run_dirs(tmp_path)) == 2  # the gqa job used the single run's dir
    runs = experiment_runs(uri, "gpt5_ablate")
    trained = [r for r in runs if r.data.tags.get("sweep_parent") != "true"]
    assert sorted(r.data.tags["attention"] for r in trained) == ["gqa", "mla"]
    gqa = next(r for r in trained if r.data.tags["attention"] == "gqa")
    mla = next(r for r in trained if r.data.tags["attention"] == "mla")
    assert gqa.info.run_id == first.info.run_id
    # It belonged to no sweep, so it joins this one: the sweep's report counts all four arms.
    assert gqa.data.tags["sweep_id"] == mla.data.tags["sweep_id"]
    assert MlflowClient(uri).get_metric_history(first.info.run_id, "val/loss") == history

    # The same single command again: reported, nothing trained or logged, no new MLflow run.
    metrics_before = (run_dir / "metrics.jsonl").read_text()
    again = run_cli(args, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.lstrip().startswith(f"Already finished in {run_dir}")
    assert f"MLflow run: {first.info.run_id}" in again.stdout
    assert f"-> {first.data.metrics['val/loss']:.3f}" in again.stdout
    assert "Resuming" not in again.stderr and "Done:" not in again.stdout
    assert (run_dir / "metrics.jsonl").read_text() == metrics_before
    assert len(experiment_runs(uri, "gpt5_ablate")) == len(runs)
    assert MlflowClient(uri).get_metric_history(first.info.run_id, "val/loss") == history

    # A sweep whose every job finished before leaves no empty parent run behind.
    sweep_again = run_cli(["-m", *args, "attention=gqa,mla"], tmp_path)
    assert sweep_again.returncode == 0, sweep_again.stderr[-3000:]
    assert "(2 had finished before: not trained again)" in sweep_again.stderr
    assert len(experiment_runs(uri, "gpt5_ablate")) == len(runs)

    # trainer.resume=false trains it again, in the same dir, as a new MLflow run.
    retrain = run_cli([*args, "trainer.resume=false"], tmp_path)
    assert retrain.returncode == 0, retrain.stderr[-3000:]
    assert retrain.stdout.lstrip().startswith("Done:")
    assert len(run_dirs(tmp_path)) == 2
    assert len(experiment_runs(uri, "gpt5_ablate")) == len(runs) + 1
    assert (run_dir / FINISHED_FILE).is_file()

    # Run dirs are read by path, whatever their name: one named the old way still generates.
    old_style = run_dir.with_name(run_dir.name.rsplit("-", 1)[0] + "-1e6548e1")
    run_dir.rename(old_style)
    assert generate_main([f"checkpoint={old_style}", "prompt=def ", "max_new_tokens=4"]) == 0


@pytest.mark.integration
def test_a_run_whose_run_dir_is_gone_is_found_in_the_store(tmp_path: Path, cache_dir: Path) -> None:
    """A purged scratch disk, or a fresh clone of committed results: the store's record of the
    same identity stands, so nothing trains twice; another store, or resume=false, trains."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = [*RUN, f"cache_dir={cache_dir}", f"tracking.uri={uri}"]
    run_dir, first, history = train_single(args, tmp_path, uri)

    shutil.rmtree(run_dir)
    again = run_cli(args, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.lstrip().startswith(f"Already finished, as recorded in {uri}")
    assert f"MLflow run: {first.info.run_id}" in again.stdout
    assert f"-> {first.data.metrics['val/loss']:.3f}" in again.stdout
    assert f"loss {first.data.metrics['final/val_loss']:.3f}" in again.stdout
    assert f"Checkpoint: none in {run_dir}" in again.stdout
    assert len(experiment_runs(uri, "gpt5_ablate")) == 1
    assert MlflowClient(uri).get_metric_history(first.info.run_id, "val/loss") == history
    assert not (run_dir / FINISHED_FILE).exists()

    # A sweep that contains it finds it too, and counts it: the run joins the sweep.
    sweep = run_cli(["-m", *args, "attention=gqa,mla"], tmp_path)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    assert "(1 had finished before: not trained again)" in sweep.stderr
    runs = [r for r in experiment_runs(uri, "gpt5_ablate") if "sweep_parent" not in r.data.tags]
    assert len(runs) == 2
    mla = next(r for r in runs if r.data.tags["attention"] == "mla")
    found = MlflowClient(uri).get_run(first.info.run_id)
    assert found.data.tags["sweep_id"] == mla.data.tags["sweep_id"]

    # Another store never recorded it: it trains there.
    elsewhere = f"sqlite:///{tmp_path}/other.db"
    other = run_cli([*RUN, f"cache_dir={cache_dir}", f"tracking.uri={elsewhere}"], tmp_path)
    assert other.returncode == 0, other.stderr[-3000:]
    assert other.stdout.lstrip().startswith("Done:")

    # resume=false trains it again in the first store, as a new MLflow run.
    shutil.rmtree(run_dir)
    retrain = run_cli([*args, "trainer.resume=false"], tmp_path)
    assert retrain.returncode == 0, retrain.stderr[-3000:]
    assert retrain.stdout.lstrip().startswith("Done:")
    assert len(experiment_runs(uri, "gpt5_ablate")) == 4  # single, mla, sweep parent, retrain
