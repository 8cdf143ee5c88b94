"""``python -m gpt5_ablate``: one training run, or a sweep with ``-m``."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

import gpt5_ablate.data
import gpt5_ablate.model
import gpt5_ablate.optim  # noqa: F401  (registers optimizer)
from gpt5_ablate.config import register_configs
from gpt5_ablate.errors import ConfigError, InputError

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "conf"
EXPERIMENTS_DIR = REPO_ROOT / "experiments"

register_configs()
if not OmegaConf.has_resolver("gpt5_ablate_hash"):
    OmegaConf.register_new_resolver(
        "gpt5_ablate_hash", lambda text: hashlib.sha1(str(text).encode()).hexdigest()[:8]
    )


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def main(cfg: DictConfig) -> Any:
    """One run: its final eval metrics; in a sweep, a ``JobFailure`` for a reported error."""
    from gpt5_ablate.train.hydra_callbacks import (
        PARENT_RUN_ENV,
        SWEEP_ID_ENV,
        JobFailure,
        active_sweep,
    )
    from gpt5_ablate.train.loop import NonFiniteLossError, TrainingInterrupted, train

    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        result = train(
            cfg,
            run_dir,
            sweep_id=os.environ.get(SWEEP_ID_ENV) if multirun else None,
            parent_run_id=os.environ.get(PARENT_RUN_ENV) if multirun else None,
        )
    except (ConfigError, InputError, NonFiniteLossError, TrainingInterrupted) as error:
        print(f"\nerror: {error}", file=sys.stderr)
        code = 130 if isinstance(error, TrainingInterrupted) else 2
        if not multirun:
            sys.exit(code)
        if "BasicLauncher" not in str(hydra_cfg.launcher.get("_target_", "")):
            # Jobs in other processes (joblib, SLURM): the sweep callback there is not the one
            # that summarises, so let the launcher record the failure as Hydra does.
            raise
        reason = f"{type(error).__name__}: {error}"
        if isinstance(error, TrainingInterrupted):
            # Ctrl-C / SIGTERM stops the whole sweep, not just this job; re-running the sweep
            # resumes every job. SystemExit passes through Hydra, which would go on otherwise.
            sweep = active_sweep()
            if sweep is not None:
                sweep.record_interrupted(" ".join(hydra_cfg.overrides.task), reason)
            sys.exit(code)
        # The other jobs go on; the job counts as failed in the sweep summary and exit status,
        # without the traceback Hydra would print for a raised error.
        return JobFailure(reason)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 speaks for the run
        return result.final_eval
    print(
        f"\nDone: {result.steps} steps, {result.tokens:,} tokens in {result.elapsed_s:.0f}s. "
        f"val loss {result.first_eval.get('loss', float('nan')):.3f} -> {result.final_eval['loss']:.3f} "
        f"(unigram baseline {result.unigram_loss:.3f}), val ppl {result.final_eval['perplexity']:.1f}.\n"
        f"Checkpoint: {result.checkpoint}\n"
        + (
            f"MLflow run: {result.run_id} (mlflow ui --backend-store-uri {cfg.tracking.uri})\n"
            if result.run_id
            else ""
        ),
        file=sys.stderr,
    )
    return result.final_eval


def run() -> None:
    """Console entry point: adds ``experiments/`` to Hydra's search path for ``+experiment=``."""
    if EXPERIMENTS_DIR.is_dir() and not any(a.startswith("hydra.searchpath") for a in sys.argv):
        sys.argv.append(f"hydra.searchpath=[file://{EXPERIMENTS_DIR}]")
    from gpt5_ablate.train.hydra_callbacks import finish_sweep

    try:
        main()
    finally:
        status = finish_sweep()  # prints the sweep summary if Hydra did not
    if status:
        sys.exit(status)


if __name__ == "__main__":
    run()
