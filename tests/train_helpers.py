"""Shared helpers for tests that train: compose the real Hydra config with tiny settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import gpt5_ablate.cli  # noqa: F401  (registers every schema and the hash resolver)
from gpt5_ablate.cli import CONFIG_DIR, REPO_ROOT

# Small enough for seconds per run on 2 CPU cores, big enough to learn something.
TINY_OVERRIDES = [
    "data.max_docs=120",
    "tokenizer.vocab_size=512",
    "model.n_layers=2",
    "model.d_model=64",
    "model.max_seq_len=64",
    "trainer.micro_batch_size=8",
    "trainer.max_steps=40",
    "trainer.warmup_steps=5",
    "trainer.eval_every=20",
    "trainer.eval_tokens=4096",
    "trainer.log_every=5",
    "trainer.checkpoint_every=20",
    "trainer.num_samples=1",
    "trainer.sample_tokens=8",
    "trainer.progress=false",
]


def compose_config(overrides: list[str], cache_dir: Path, tracking_uri: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(
            "config",
            overrides=[
                *TINY_OVERRIDES,
                f"cache_dir={cache_dir}",
                f"tracking.uri={tracking_uri}",
                *overrides,
            ],
        )


def run_cli(
    args: list[str], cwd: Path, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``python -m gpt5_ablate`` (the real entry point) in a subprocess."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "gpt5_ablate", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )
