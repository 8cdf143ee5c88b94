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

# conf/debug/tiny.yaml: seconds per run on 2 CPU cores, big enough to learn something.
TINY_OVERRIDES = ["+debug=tiny"]


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
