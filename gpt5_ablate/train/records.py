"""What a run records: its MLflow run (name, tags, params, metrics, artifacts), ``metrics.jsonl``,
``config.yaml``, ``samples.txt`` and the final full-split evaluation.

Only rank 0 records; on other ranks every method is a no-op apart from the collective parts of
the final evaluation and sampling.
"""

from __future__ import annotations

import csv
import itertools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from omegaconf import OmegaConf

from gpt5_ablate.config import flatten
from gpt5_ablate.secrets import redact_uri
from gpt5_ablate.train import tracking as tr
from gpt5_ablate.train.evaluate import EvalResult, evaluate
from gpt5_ablate.train.samples import samples_file_text

if TYPE_CHECKING:
    from gpt5_ablate.train.trainer import Trainer

log = logging.getLogger("gpt5_ablate")
PER_DOCUMENT_FILE = "per_document.csv"  # the TEST split's per-document losses
PER_DOCUMENT_VAL_FILE = "per_document_val.csv"
LOSS_BY_POSITION_FILE = "loss_by_position.csv"  # test loss per position in the sequence
POSITION_BINS = 4  # equal-width position bins logged as final/test_loss_pos_{lo}_{hi}
# PreparedData.stats entries recorded as params (data quality facts the analysis reports).
DATA_STATS = (
    "val_train_overlap_32",
    "n_train_tokens",
    "n_val_tokens",
    "n_docs_val",
    "test_train_overlap_32",
    "test_val_overlap_32",
    "n_test_tokens",
    "n_docs_test",
    "n_test_blocks",
)


@dataclass
class TrainResult:
    run_dir: Path
    checkpoint: Path
    run_id: str | None
    steps: int
    tokens: int
    elapsed_s: float
    final_eval: dict[str, float]  # the last periodic eval (the fixed eval sample)
    first_eval: dict[str, float]
    unigram_loss: float
    # The entire validation split (loss, ...) and the entire test split (test_loss, ...).
    full_eval: dict[str, float] = field(default_factory=dict)
    skipped_steps: int = 0
    tracking_problems: list[str] = field(default_factory=list)


class RunRecorder:
    def __init__(self, trainer: Trainer, sweep_id: str | None, parent_run_id: str | None) -> None:
        self.trainer, self.sweep_id, self.parent_run_id = trainer, sweep_id, parent_run_id
        self.tracker: tr.Tracker | None = None
        self.problems: list[str] = []
        self._interval_t0, self._interval_step = time.perf_counter(), 0

    @property
    def _enabled(self) -> bool:
        t = self.trainer
        return t.plan.tracking.enabled and t.dist.is_main

    # --- opening ------------------------------------------------------------------------------

    def open(self, from_checkpoint: bool) -> None:
        t = self.trainer
        self._interval_step = t.state.step
        if t.dist.is_main:
            (t.run_dir / "config.yaml").write_text(OmegaConf.to_yaml(t.recorded_config))
        if not self._enabled:
            return
        tracking = t.plan.tracking
        run_id = t.state.run_id
        if run_id is None and t.config.resume:
            run_id = tr.recorded_run_id(t.run_dir, tracking.uri, tracking.experiment)
        tr.trim_local_log(t.run_dir, t.state.step if from_checkpoint else -1)
        self.tracker = tr.Tracker(
            tracking.uri,
            tracking.experiment,
            t.run_dir,
            t.plan.run_name(self.sweep_id),
            self.tags(),
            self.params(),
            run_id=run_id,
            flush_every=tracking.flush_every,
            # Without a checkpoint, a FINISHED run means its checkpoints were deleted: start anew.
            reuse_finished=from_checkpoint,
        )
        t.state.run_id = self.tracker.run_id
        tr.record_run_id(t.run_dir, self.tracker.run_id, tracking.uri, tracking.experiment)
        log.info(
            f"MLflow run {self.tracker.run_id} in experiment {tracking.experiment!r} at "
            f"{redact_uri(tracking.uri)}"
        )

    def tags(self) -> dict[str, str]:
        t, cfg = self.trainer, self.trainer.plan.cfg
        tags = {
            **t.plan.factors(),
            "model": t.plan.arch.model.name,
            "seed": str(t.plan.seed),
            "lr_scale": str(float(t.plan.optimizer.lr_scale)),
            "phase": str(cfg.get("phase", "report")),
            "git_commit": tr.git_commit(),
            "run_dir": str(t.run_dir.resolve()),
        }
        if self.sweep_id:
            tags["sweep_id"] = self.sweep_id
        if self.parent_run_id:
            tags["mlflow.parentRunId"] = self.parent_run_id  # nests the run under its sweep
        if cfg.get("experiment_name"):
            tags["experiment_name"] = str(cfg.experiment_name)
        return tags

    def params(self) -> dict[str, Any]:
        t = self.trainer
        model, stats = t.model, t.prepared.stats
        return {
            **flatten(t.recorded_config),
            **model_accounting(model, t.plan.seq_len),
            "tokens_per_step": t.plan.tokens_per_step,
            "total_steps": t.plan.total_steps,
            "vocab_size": t.prepared.vocab_size,
            "device": str(t.runtime.device),
            "precision": t.runtime.precision,
            "compile": t.compiled,
            "unigram_val_loss": round(t.unigram_loss, 5),
            **{f"data.{k}": stats[k] for k in DATA_STATS if k in stats},
            **t.dist.params(),
        }

    def fail_earlier_attempt(self, reason: str) -> None:
        """A resume that cannot start: the run dir's MLflow run is marked FAILED with why."""
        t, tracking = self.trainer, self.trainer.plan.tracking
        if not self._enabled:
            return
        run_id = tr.recorded_run_id(t.run_dir, tracking.uri, tracking.experiment)
        if run_id is not None:
            tr.mark_failed(tracking.uri, run_id, reason)

    # --- during training ----------------------------------------------------------------------

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.tracker is not None:
            self.tracker.log_metrics(metrics, step)

    def log_train_interval(self) -> None:
        """train/* over the steps since the last log: the one host sync per interval."""
        t, state = self.trainer, self.trainer.state
        done, now = state.step, time.perf_counter()
        mean_loss = (state.interval_loss / state.interval_steps).item()
        tokens_per_s = (
            (done - self._interval_step) * t.plan.tokens_per_step / (now - self._interval_t0)
        )
        metrics = {
            "train/loss": mean_loss,
            "train/lr": t.optimizers[0].param_groups[0]["lr"],
            "train/grad_norm": t.grad_norm.item(),
            "train/tokens_per_s": tokens_per_s,
            "train/tokens_seen": done * t.plan.tokens_per_step,
            "time/elapsed_s": t.elapsed(),
        }
        aux = getattr(t.model, "aux_metrics", dict)()  # e.g. a mixture of experts' balance loss
        metrics.update({k: float(v) for k, v in aux.items()})
        self.log(metrics, done)
        t.progress.update(done - t.progress.n)
        t.progress.set_postfix(loss=f"{mean_loss:.3f}", tok_s=f"{tokens_per_s:,.0f}")
        state.interval_loss.zero_()
        state.interval_steps = 0
        self._interval_t0, self._interval_step = time.perf_counter(), done

    def flush(self) -> None:
        if self.tracker is not None:
            self.tracker.flush()

    def tag_failure(self, error: BaseException) -> None:
        if self.tracker is not None:
            reason = str(error) if _is_reported(error) else f"{type(error).__name__}: {error}"
            self.tracker.set_tags({"failure_reason": reason[:5000]})

    # --- the end ------------------------------------------------------------------------------

    def final_pass(self) -> dict[str, float]:
        """One pass over the entire validation split and, unless this is an LR-selection run,
        one over the entire test split: ``final/val_*`` and ``final/test_*`` metrics, the
        per-document losses the analysis bootstraps over, and the test loss by position.
        Returns the validation metrics plus the test ones prefixed ``test_``."""
        t, data = self.trainer, self.trainer.prepared
        val = evaluate(
            t.model,
            data.val_blocks,
            t.config.eval_batch_size,
            t.runtime,
            t.dist,
            doc_ids=data.val_block_doc_ids,
            n_docs=len(data.val_doc_names),
        )
        val_full = {**val.metrics(), "tokens": float(val.tokens)}
        metrics = {f"final/val_{k}": v for k, v in val_full.items()}
        # Selection runs (phase=select) never look at test: rates are chosen on validation and
        # reported on a split no choice has seen (and selection runs finish sooner).
        test = None
        if str(t.plan.cfg.get("phase", "report")) != "select":
            test = evaluate(
                t.model,
                data.test_blocks,
                t.config.eval_batch_size,
                t.runtime,
                t.dist,
                doc_ids=data.test_block_doc_ids,
                n_docs=len(data.test_doc_names),
                by_position=True,
            )
            assert test.pos_loss_sum is not None and test.pos_tokens is not None
            test_full = {**test.metrics(), "tokens": float(test.tokens)}
            metrics |= {f"final/test_{k}": v for k, v in test_full.items()}
            metrics |= position_bins(test.pos_loss_sum, test.pos_tokens, POSITION_BINS)
        self.log(metrics, t.plan.total_steps)
        scored = f"final pass: validation loss {val.loss:.4f} ({val.tokens:,} tokens)"
        log.info(scored if test is None else f"{scored}, test loss {test.loss:.4f} "
                 f"({test.tokens:,} tokens)")  # fmt: skip
        if t.dist.is_main:
            out = t.run_dir / "eval"
            out.mkdir(exist_ok=True)
            _write_per_document(out / PER_DOCUMENT_VAL_FILE, data.val_doc_names, val)
            if test is not None:
                # Reported numbers read the test split, which no choice (early stopping, picking
                # arms by validation loss) has seen; validation's file is kept for comparison.
                _write_per_document(out / PER_DOCUMENT_FILE, data.test_doc_names, test)
                _write_loss_by_position(out / LOSS_BY_POSITION_FILE, test)
        if test is None:
            return val_full
        test_full = {**test.metrics(), "tokens": float(test.tokens)}
        return val_full | {f"test_{k}": v for k, v in test_full.items()}

    def finish(self, full_eval: dict[str, float]) -> TrainResult:
        t = self.trainer
        elapsed = t.elapsed()
        samples = samples_file_text(
            t.model, t.prepared.tokenizer, t.config.num_samples, t.config.sample_tokens, t.plan.seed
        )
        if t.dist.is_main:  # every rank samples (FSDP's forward is collective); rank 0 writes
            (t.run_dir / "samples.txt").write_text(samples)
        assert t.last_checkpoint is not None
        if self.tracker is not None:
            self._log_artifacts(elapsed, t.last_checkpoint)
            self.close("FINISHED")
        return TrainResult(
            run_dir=t.run_dir,
            checkpoint=t.last_checkpoint,
            run_id=t.state.run_id,
            steps=t.plan.total_steps,
            tokens=t.plan.total_tokens,
            elapsed_s=elapsed,
            final_eval=t.final_eval,
            first_eval=t.state.first_eval,
            unigram_loss=t.unigram_loss,
            full_eval=full_eval,
            skipped_steps=t.state.skipped_steps,
            tracking_problems=self.problems,
        )

    def _log_artifacts(self, elapsed: float, checkpoint: Path) -> None:
        from gpt5_ablate.train import checkpoint as ckpt

        tracker, t = self.tracker, self.trainer
        assert tracker is not None
        tracker.log_metrics({"final/elapsed_s": elapsed}, t.plan.total_steps)
        tracker.log_artifact(t.run_dir / "config.yaml")
        tracker.log_artifact(t.run_dir / "samples.txt")
        if (t.run_dir / "eval").is_dir():
            tracker.log_artifact(t.run_dir / "eval", "eval")
        if t.plan.tracking.log_checkpoint:
            for item in (ckpt.WEIGHTS, ckpt.CONFIG, ckpt.TOKENIZER):
                where = "checkpoint" if item != ckpt.TOKENIZER else "checkpoint/tokenizer"
                tracker.log_artifact(checkpoint / item, where)

    def close(self, status: str) -> None:
        """End the MLflow run (once); say what could not be logged (the run is never lost)."""
        if self.tracker is None:
            return
        tracker, self.tracker = self.tracker, None
        self.problems = tracker.finish(status)
        for problem in self.problems:
            log.warning(f"warning: {problem}")


def _write_per_document(path: Path, names: list[str], result: EvalResult) -> None:
    assert result.doc_tokens is not None and result.doc_loss_sum is not None
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["document", "tokens", "loss_sum"])
        for name, n, total in zip(names, result.doc_tokens, result.doc_loss_sum, strict=True):
            if n > 0:
                writer.writerow([name, int(n), f"{total:.6f}"])


def _write_loss_by_position(path: Path, result: EvalResult) -> None:
    assert result.pos_loss_sum is not None and result.pos_tokens is not None
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["position", "tokens", "loss"])
        for position, (n, total) in enumerate(
            zip(result.pos_tokens, result.pos_loss_sum, strict=True)
        ):
            writer.writerow([position, int(n), f"{total / max(n, 1):.6f}"])


def position_bins(loss_sum: np.ndarray, tokens: np.ndarray, n_bins: int) -> dict[str, float]:
    """Mean test loss over ``n_bins`` equal-width position ranges: ``final/test_loss_pos_{lo}_{hi}``
    (``hi`` exclusive). Token-weighted, the bins average back to ``final/test_loss``."""
    edges = np.linspace(0, len(loss_sum), n_bins + 1).round().astype(int)
    return {
        f"final/test_loss_pos_{lo}_{hi}": float(loss_sum[lo:hi].sum() / max(tokens[lo:hi].sum(), 1))
        for lo, hi in itertools.pairwise(edges.tolist())
        if hi > lo
    }


def model_accounting(model: torch.nn.Module, seq_len: int) -> dict[str, int]:
    """Size and cost figures the analysis compares arms by."""
    return {
        "n_params": model.n_params(),
        "n_params_non_embedding": model.n_params(non_embedding=True),
        # A mixture of experts uses only its routed experts per token: "active" counts those.
        "n_params_active": model.n_params(active=True),
        "n_params_non_embedding_active": model.n_params(non_embedding=True, active=True),
        "flops_per_token": model.flops_per_token(seq_len),  # active FLOPs: what training costs
        "flops_per_token_all_experts": model.flops_per_token(seq_len, active=False),
        "ffn_hidden_dim": model.ffn_hidden_dim(),
        "kv_cache_bytes_per_token": model.kv_cache_bytes_per_token(torch.bfloat16),
        # What a full-length context caches: sliding-window layers keep only their window.
        "kv_cache_bytes_at_max_seq_len": model.kv_cache_bytes(
            model.arch.model.max_seq_len, torch.bfloat16
        ),
    }


def _is_reported(error: BaseException) -> bool:
    from gpt5_ablate.errors import REPORTED_ERRORS

    return isinstance(error, REPORTED_ERRORS)
