"""The training loop end to end, against a real SQLite MLflow store and a real Hydra entry point."""

from __future__ import annotations

import csv
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from gpt5_ablate.config import ModelConfig
from gpt5_ablate.generate import main as generate_main
from gpt5_ablate.model import GPT, ArchitectureConfig
from gpt5_ablate.model.attention.gqa import MHAConfig
from gpt5_ablate.model.ffn.swiglu import SwiGLUConfig
from gpt5_ablate.model.norms import QKRMSNormConfig
from gpt5_ablate.model.positions import RopeConfig
from gpt5_ablate.train import checkpoint as ckpt
from gpt5_ablate.train.checkpoint import Checkpointer
from gpt5_ablate.train.distributed import DistContext
from gpt5_ablate.train.evaluate import evaluate
from gpt5_ablate.train.loop import train
from gpt5_ablate.train.runtime import resolve_runtime
from gpt5_ablate.train.steps import accumulate_gradients
from tests.train_helpers import TINY_OVERRIDES, compose_config, run_cli


def search_runs(uri: str, experiment: str):
    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=[experiment])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path):
    """One real tiny run (in-process) tracked in a temp SQLite store."""
    root = tmp_path_factory.mktemp("run")
    uri = f"sqlite:///{root}/mlflow.db"
    cfg = compose_config(["tracking.experiment=e2e"], cache_dir, uri)
    result = train(cfg, root / "run_dir")
    return result, uri, cfg


def test_end_to_end_run_is_tracked(tiny_run) -> None:
    result, uri, _ = tiny_run
    runs = search_runs(uri, "e2e")
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["status"] == "FINISHED"
    assert run["run_id"] == result.run_id
    for factor, level in {
        "attention": "gqa",
        "optimizer": "muon_adamw",
        "norm": "qk_rmsnorm",
        "pos": "rope",
        "ffn": "swiglu",
        "model": "tiny",
    }.items():
        assert run[f"tags.{factor}"] == level
    assert len(run["tags.git_commit"]) > 0
    assert run["params.trainer.max_steps"] == "40"
    assert run["params.model.d_model"] == "64"
    assert int(run["params.n_params"]) > 0
    assert int(run["params.flops_per_token"]) > 6 * int(run["params.n_params_non_embedding"])
    assert int(run["params.kv_cache_bytes_per_token"]) > 0
    assert int(run["params.tokens_per_step"]) == 8 * 1 * 64

    client = MlflowClient(uri)
    val = client.get_metric_history(result.run_id, "val/loss")
    assert [m.step for m in val] == [0, 20, 40]
    assert val[-1].value < 0.9 * val[0].value  # it learned
    train_loss = client.get_metric_history(result.run_id, "train/loss")
    assert [m.step for m in train_loss] == list(range(5, 41, 5))
    for key in (
        "train/lr",
        "train/grad_norm",
        "train/tokens_per_s",
        "val/accuracy",
        "val/perplexity",
    ):
        assert client.get_metric_history(result.run_id, key), key
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"config.yaml", "samples.txt", "checkpoint"} <= artifacts
    checkpoint_files = {a.path for a in client.list_artifacts(result.run_id, "checkpoint")}
    assert {
        "checkpoint/model.safetensors",
        "checkpoint/config.yaml",
        "checkpoint/tokenizer",
    } <= checkpoint_files


def test_final_loss_beats_unigram_baseline(tiny_run) -> None:
    result, _, _ = tiny_run
    assert result.final_eval["loss"] < result.first_eval["loss"]
    assert result.final_eval["loss"] < result.unigram_loss


def test_checkpoint_reloads_to_same_val_loss(tiny_run) -> None:
    from gpt5_ablate.data import prepare_data
    from gpt5_ablate.generate import load_for_inference
    from gpt5_ablate.train.plan import make_plan

    result, _, cfg = tiny_run
    runtime = resolve_runtime("cpu", "fp32")
    model, _, saved_cfg = load_for_inference(result.checkpoint, runtime.device)
    plan = make_plan(cfg)
    prepared = prepare_data(
        plan.data,
        plan.tokenizer,
        seq_len=plan.seq_len,
        cache_dir=cfg.cache_dir,
        eval_tokens=plan.trainer.eval_tokens,
    )
    reloaded = evaluate(model, prepared.val_blocks, 32, runtime)
    assert reloaded.loss == pytest.approx(result.full_eval["loss"], abs=1e-5)
    assert saved_cfg.attention.name == "gqa"


def test_final_pass_scores_test_split_by_position(tiny_run) -> None:
    result, uri, cfg = tiny_run
    client = MlflowClient(uri)
    metrics = client.get_run(result.run_id).data.metrics
    params = client.get_run(result.run_id).data.params
    for key in ("final/val_loss", "final/test_loss", "final/test_perplexity", "final/test_tokens"):
        assert key in metrics, key
    assert metrics["final/test_loss"] == pytest.approx(result.full_eval["test_loss"])
    assert metrics["final/val_loss"] == pytest.approx(result.full_eval["loss"])
    assert metrics["final/test_loss"] != metrics["final/val_loss"]  # two different splits
    # seq_len 64 in 4 equal-width bins (hi exclusive).
    bins = [(0, 16), (16, 32), (32, 48), (48, 64)]
    assert sorted(k for k in metrics if k.startswith("final/test_loss_pos_")) == sorted(
        f"final/test_loss_pos_{lo}_{hi}" for lo, hi in bins
    )
    for key in ("n_docs_test", "n_test_tokens", "n_test_blocks", "test_train_overlap_32"):
        assert f"data.{key}" in params, key
    # The per-position table, logged with the eval artifacts, adds back up to the test loss.
    rows = list(csv.DictReader((result.run_dir / "eval" / "loss_by_position.csv").open()))
    assert [int(r["position"]) for r in rows] == list(range(64))
    tokens = np.array([int(r["tokens"]) for r in rows])
    assert tokens.sum() == metrics["final/test_tokens"]
    bin_tokens = [tokens[lo:hi].sum() for lo, hi in bins]
    bin_losses = [metrics[f"final/test_loss_pos_{lo}_{hi}"] for lo, hi in bins]
    weighted = float(np.dot(bin_tokens, bin_losses) / sum(bin_tokens))
    assert weighted == pytest.approx(metrics["final/test_loss"], abs=1e-5)
    # Later positions see more context: the last bin predicts better than the first.
    assert bin_losses[-1] < bin_losses[0]
    eval_files = {a.path for a in client.list_artifacts(result.run_id, "eval")}
    assert {
        "eval/per_document.csv",
        "eval/per_document_val.csv",
        "eval/loss_by_position.csv",
    } <= eval_files
    # per_document.csv reads the test split; per_document_val.csv the validation split.
    from gpt5_ablate.data import prepare_data
    from gpt5_ablate.train.plan import make_plan

    plan = make_plan(cfg)
    prepared = prepare_data(plan.data, plan.tokenizer, plan.seq_len, cfg.cache_dir)
    test_docs = [
        r["document"] for r in csv.DictReader((result.run_dir / "eval" / "per_document.csv").open())
    ]
    val_docs = [
        r["document"]
        for r in csv.DictReader((result.run_dir / "eval" / "per_document_val.csv").open())
    ]
    assert test_docs and set(test_docs) <= set(prepared.test_doc_names)
    assert val_docs and set(val_docs) <= set(prepared.val_doc_names)


def test_a_selection_run_never_scores_the_test_split(tmp_path: Path, cache_dir: Path) -> None:
    """phase=select chooses rates on validation; test stays unseen until the report runs."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = compose_config(["tracking.experiment=select", "phase=select"], cache_dir, uri)
    result = train(cfg, tmp_path / "run_dir")
    metrics = MlflowClient(uri).get_run(result.run_id).data.metrics
    assert "final/val_loss" in metrics
    assert not [k for k in metrics if k.startswith("final/test")]
    assert "test_loss" not in result.full_eval
    eval_dir = result.run_dir / "eval"
    assert (eval_dir / "per_document_val.csv").is_file()
    assert not (eval_dir / "per_document.csv").exists()


def test_generation_is_deterministic_under_a_seed(tiny_run, capsys: pytest.CaptureFixture) -> None:
    result, uri, _ = tiny_run
    args = [f"checkpoint={result.checkpoint}", "prompt=def ", "max_new_tokens=12", "seed=3"]
    assert generate_main(args) == 0
    first = capsys.readouterr().out
    assert generate_main(args) == 0
    assert capsys.readouterr().out == first
    assert generate_main([*args[:-1], "seed=4", "temperature=1.5"]) == 0
    assert capsys.readouterr().out != first
    # The same checkpoint, fetched from the MLflow run's artifacts by run id.
    assert generate_main([f"run_id={result.run_id}", f"tracking.uri={uri}", *args[1:]]) == 0
    assert capsys.readouterr().out == first


def test_generate_rejects_unknown_run_id(tiny_run, capsys: pytest.CaptureFixture) -> None:
    _, uri, _ = tiny_run
    assert generate_main(["run_id=0123456789abcdef", f"tracking.uri={uri}"]) == 2
    assert "run_id='0123456789abcdef' does not exist" in capsys.readouterr().err


def test_gradient_accumulation_matches_one_large_batch() -> None:
    torch.manual_seed(0)
    arch = ArchitectureConfig(
        ModelConfig(n_layers=2, d_model=32, n_heads=4, max_seq_len=16),
        MHAConfig(),
        QKRMSNormConfig(),
        RopeConfig(),
        SwiGLUConfig(),
    )
    model = GPT(arch, 50)
    runtime = resolve_runtime("cpu", "fp32")
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    tokens = torch.randint(0, 50, (8, 17))
    big = [(tokens[:, :-1], tokens[:, 1:])]
    small = [(tokens[i : i + 2, :-1], tokens[i : i + 2, 1:]) for i in range(0, 8, 2)]

    loss_big = accumulate_gradients(model, big, runtime, scaler)
    grads_big = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    loss_small = accumulate_gradients(model, small, runtime, scaler)
    grads_small = [p.grad.clone() for p in model.parameters()]

    assert loss_small.item() == pytest.approx(loss_big.item(), rel=1e-5)
    for g_big, g_small in zip(grads_big, grads_small, strict=True):
        torch.testing.assert_close(g_small, g_big, rtol=1e-4, atol=1e-6)


def test_checkpoint_write_is_atomic(tmp_path: Path, tiny_run) -> None:
    """A failure while writing leaves the previous "latest" intact and no temp dirs behind."""
    result, _, cfg = tiny_run
    root = tmp_path / "checkpoints"
    runtime = resolve_runtime("cpu", "fp32")
    from gpt5_ablate.generate import load_for_inference

    model, _, _ = load_for_inference(result.checkpoint, runtime.device)
    tokenizer_dir = result.checkpoint / ckpt.TOKENIZER
    checkpointer = Checkpointer(root, DistContext())
    config = OmegaConf.to_yaml(cfg)
    first = checkpointer.save(10, model, [], config, tokenizer_dir, {"step": 10})

    class Boom:
        """Not a value a checkpoint can hold: writing it fails half-way through."""

    with pytest.raises(TypeError):
        checkpointer.save(20, model, [], config, tokenizer_dir, {"bad": Boom()})
    assert ckpt.latest_checkpoint(root) == first
    assert checkpointer.resumable() == first
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_0000010"]


@pytest.mark.integration
def test_multirun_sweep_groups_four_finished_runs(tmp_path: Path, cache_dir: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = [
        "-m",
        "attention=gqa,mla",
        "optimizer=muon_adamw,adamw",
        *TINY_OVERRIDES,
        "trainer.max_steps=10",
        "trainer.eval_every=10",
        f"cache_dir={cache_dir}",
        f"tracking.uri={uri}",
        "tracking.experiment=sweep",
    ]
    proc = run_cli(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Sweep summary: 4/4 runs finished, 0 failed." in proc.stderr
    runs = search_runs(uri, "sweep")
    children = runs[runs["tags.sweep_parent"].isna()] if "tags.sweep_parent" in runs else runs
    assert len(children) == 4
    assert set(children["status"]) == {"FINISHED"}
    assert children["tags.sweep_id"].nunique() == 1
    assert set(zip(children["tags.attention"], children["tags.optimizer"], strict=True)) == {
        ("gqa", "muon_adamw"),
        ("gqa", "adamw"),
        ("mla", "muon_adamw"),
        ("mla", "adamw"),
    }
    parent = runs[runs["tags.sweep_parent"] == "true"]
    assert len(parent) == 1 and parent.iloc[0]["status"] == "FINISHED"
    assert set(children["tags.mlflow.parentRunId"]) == {parent.iloc[0]["run_id"]}
