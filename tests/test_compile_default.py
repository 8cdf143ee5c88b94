"""``trainer.compile`` defaults to ``auto`` in the composed config: compiled on CUDA, where it
pays, eager on CPU, where compiling costs more than it saves at the sizes a CPU trains."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from gpt5_ablate.cli import CONFIG_DIR
from gpt5_ablate.train.plan import make_plan
from gpt5_ablate.train.trainer import Trainer
from tests.train_helpers import compose_config


def test_the_composed_default_is_auto() -> None:
    """The YAML the user runs, not the dataclass behind it."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config")
    assert cfg.trainer.compile == "auto"


def train_two_steps(tmp_path: Path, cache_dir: Path, device: str) -> Trainer:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    overrides = [
        f"trainer.device={device}",
        "trainer.max_steps=2",
        "trainer.eval_every=2",
        "trainer.eval_tokens=1024",
        "trainer.num_samples=0",
        "tracking.log_checkpoint=false",
    ]
    trainer = Trainer(make_plan(compose_config(overrides, cache_dir, uri)), tmp_path / "run")
    result = trainer.train()
    params = MlflowClient(uri).get_run(result.run_id).data.params
    assert params["trainer.compile"] == "auto"
    assert params["compile"] == str(trainer.compiled)
    return trainer


@pytest.mark.slow
def test_auto_trains_eager_on_cpu(tmp_path: Path, cache_dir: Path) -> None:
    assert train_two_steps(tmp_path, cache_dir, "cpu").compiled is False


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_auto_trains_compiled_on_cuda(tmp_path: Path, cache_dir: Path) -> None:
    assert train_two_steps(tmp_path, cache_dir, "cuda").compiled is True
