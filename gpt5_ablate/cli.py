"""``python -m gpt5_ablate``: one training run, or a sweep with ``-m``."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

import gpt5_ablate.data
import gpt5_ablate.model
import gpt5_ablate.optim  # noqa: F401  (registers every component and its schema)
from gpt5_ablate.config import register_configs
from gpt5_ablate.config_errors import (
    composition_done,
    raise_composition_errors,
    report_composition_error,
)
from gpt5_ablate.errors import REPORTED_ERRORS, TrainingInterrupted, exit_status
from gpt5_ablate.factors import arm_name
from gpt5_ablate.run_identity import run_hash
from gpt5_ablate.secrets import (
    install_record_redaction,
    install_warning_redaction,
    redact_file,
    redact_text,
    register_secrets_in,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "conf"
log = logging.getLogger("gpt5_ablate")

register_configs()
if not OmegaConf.has_resolver("gpt5_ablate_run_hash"):
    # The run dir's suffix: a hash of what can change the run's result (gpt5_ablate.run_identity).
    OmegaConf.register_new_resolver("gpt5_ablate_run_hash", lambda *, _root_: run_hash(_root_))
if not OmegaConf.has_resolver("gpt5_ablate_hash"):
    # Run dirs named before run_hash hashed the override string: their saved hydra.yaml names it.
    OmegaConf.register_new_resolver(
        "gpt5_ablate_hash", lambda text: hashlib.sha1(str(text).encode()).hexdigest()[:8]
    )
if not OmegaConf.has_resolver("gpt5_ablate_arm"):
    # The run dir's name: every factor's level, in gpt5_ablate.factors.FACTORS order.
    OmegaConf.register_new_resolver("gpt5_ablate_arm", lambda *, _root_: arm_name(_root_))


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def main(cfg: DictConfig) -> Any:
    """One run: its final eval metrics; in a sweep, a ``JobFailure`` for a reported error."""
    from gpt5_ablate.train.finished import AlreadyFinished
    from gpt5_ablate.train.hydra_callbacks import (
        PARENT_RUN_ENV,
        SWEEP_ID_ENV,
        JobAlreadyFinished,
        job_failed,
    )
    from gpt5_ablate.train.plan import make_plan
    from gpt5_ablate.train.trainer import Trainer

    composition_done()  # the config composed: Hydra reports errors its own way from here
    logging.captureWarnings(True)  # warnings reach the run's log file too
    register_secrets_in(str(cfg.tracking.uri))  # its password is never printed, even alone
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    run_dir = Path(hydra_cfg.runtime.output_dir)
    _redact_hydra_files(run_dir)
    try:
        plan = make_plan(cfg)  # a bad value fails here, before anything is allocated
        trainer = Trainer(
            plan,
            run_dir,
            sweep_id=os.environ.get(SWEEP_ID_ENV) if multirun else None,
            parent_run_id=os.environ.get(PARENT_RUN_ENV) if multirun else None,
        )
        result = trainer.train()
    except REPORTED_ERRORS as error:
        log.error(redact_text(f"\nerror: {error}"))
        _remove_if_empty(run_dir)
        if not multirun:
            sys.exit(exit_status(error))
        return job_failed(error, hydra_cfg)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, rank 0 speaks for the run
        _summary(result, cfg)
    if multirun and isinstance(result, AlreadyFinished):
        # The sweep summary counts it as finished, and says it was not trained again.
        return JobAlreadyFinished(result.final_eval, f"{run_dir.name}, MLflow run {result.run_id}")
    return result.final_eval


def _summary(result: Any, cfg: DictConfig) -> None:
    """The run's outcome, on stdout and in the run's log file."""
    from gpt5_ablate.train.finished import AlreadyFinished

    full = result.full_eval
    checkpoint = f"Checkpoint: {result.checkpoint}"
    if isinstance(result, AlreadyFinished) and result.recorded_in:
        headline = (
            f"Already finished, as recorded in {result.recorded_in}: nothing was trained or "
            f"logged again (to train it again from step 0, add trainer.resume=false). It trained "
        )
        checkpoint = (
            f"Checkpoint: none in {result.run_dir} (its run dir was emptied or made elsewhere); "
            "the weights are in the store only if tracking.log_checkpoint was on."
        )
    elif isinstance(result, AlreadyFinished):
        headline = (
            f"Already finished in {result.run_dir}: nothing was trained or logged again (to "
            "train it again from step 0, add trainer.resume=false). It trained "
        )
    else:
        headline = "Done: "
    lines = [
        f"{headline}{result.steps} steps, {result.tokens:,} tokens in {result.elapsed_s:.0f}s. "
        f"val loss {result.first_eval.get('loss', float('nan')):.3f} -> "
        f"{result.final_eval['loss']:.3f} (unigram baseline {result.unigram_loss:.3f}); "
        f"full validation split: loss {full.get('loss', float('nan')):.3f}, "
        f"ppl {full.get('perplexity', float('nan')):.1f}.",
        checkpoint,
    ]
    if result.run_id:
        from gpt5_ablate.secrets import redact_uri

        lines.append(
            f"MLflow run: {result.run_id} "
            f"(mlflow ui --backend-store-uri {redact_uri(str(cfg.tracking.uri))})"
        )
    text = "\n".join(lines)
    print(f"\n{text}", flush=True)
    _to_log_files(text)


def _to_log_files(text: str) -> None:
    """Write a line to the run's log file(s) only (it is on the console already)."""
    record = logging.LogRecord("gpt5_ablate", logging.INFO, __file__, 0, text, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def _redact_hydra_files(run_dir: Path) -> None:
    """Hydra wrote the composed config and the overrides before the job started: a URI with
    credentials in them is redacted there as everywhere else."""
    hydra_dir = run_dir / ".hydra"
    for path in hydra_dir.glob("*.yaml") if hydra_dir.is_dir() else ():
        redact_file(path)


def _remove_if_empty(run_dir: Path) -> None:
    """A run that failed before doing anything leaves no run dir behind: one holding only
    Hydra's files and the log goes (a dir with checkpoints or metrics never does)."""
    if not run_dir.is_dir():
        return
    for item in run_dir.iterdir():
        if item.name != ".hydra" and not item.name.endswith(".log"):
            return
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.close()
    shutil.rmtree(run_dir, ignore_errors=True)
    for parent in list(run_dir.parents)[:2]:  # outputs/<experiment>/ and outputs/, when empty
        try:
            parent.rmdir()
        except OSError:
            break


def run() -> None:
    """Console entry point: runs Hydra, then reports a sweep Hydra ended early."""
    from gpt5_ablate.train.hydra_callbacks import finish_sweep

    # Credentials never reach a log line, a warning, or MLflow's own "View run at <URL>" print.
    install_record_redaction()
    install_warning_redaction()
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    raise_composition_errors()  # a mistyped key gets "did you mean", not Hydra's "+key" hint
    try:
        main()
    except HydraException as error:  # raised only while composing (see config_errors)
        composition_done()
        sys.exit(report_composition_error(error, sys.argv[1:]))
    except TrainingInterrupted:  # a sweep stopped by a signal (single runs exit in main)
        sys.exit(130)
    finally:
        status = finish_sweep()  # prints the sweep summary if Hydra did not
    if status:
        sys.exit(status)


if __name__ == "__main__":
    run()
