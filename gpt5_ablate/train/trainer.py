"""The Trainer: one training recipe for every variant, made of small steps.

    already finished?            report the earlier result, train nothing (finished.py)
    setup()                      data, model, optimizers, resume, MLflow run
    while step < total_steps:
        train_step()             accumulate gradients, clip, step, schedule
        maybe_log()              train/* every log_every steps
        maybe_eval()             val/* on the fixed eval sample every eval_every steps
        maybe_checkpoint()       every checkpoint_every steps, at the end, and on a stop signal
    finish()                     full validation pass, samples, artifacts, close the run

It builds every component from its registry and never asks which attention, optimizer, norm or
position encoding it trains. The only host syncs are at log, eval and checkpoint steps: the
non-finite check records the first bad step on the device and is read there.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from gpt5_ablate.data import BlockLoader, prepare_data, unigram_cross_entropy
from gpt5_ablate.errors import CheckpointError, TrainingInterrupted
from gpt5_ablate.model import GPT
from gpt5_ablate.optim import OPTIMIZER, lr_multiplier
from gpt5_ablate.secrets import redact_config
from gpt5_ablate.train import distributed
from gpt5_ablate.train import tracking as tr
from gpt5_ablate.train.checkpoint import (
    Checkpointer,
    latest_checkpoint,
    rng_state,
    set_rng_state,
)
from gpt5_ablate.train.checkpoint_files import step_dirs
from gpt5_ablate.train.evaluate import evaluate
from gpt5_ablate.train.finished import (
    AlreadyFinished,
    forget_finished,
    join_sweep,
    read_finished,
    record_finished,
    recorded_finished,
)
from gpt5_ablate.train.plan import TrainPlan
from gpt5_ablate.train.records import RunRecorder, TrainResult
from gpt5_ablate.train.runtime import resolve_runtime, seed_everything
from gpt5_ablate.train.signals import stop_on_signals
from gpt5_ablate.train.state import TrainState
from gpt5_ablate.train.steps import NonFiniteWatch, PhaseTimer, accumulate_gradients, use_compile

log = logging.getLogger("gpt5_ablate")


class Trainer:
    """Trains one run of a plan in ``run_dir``; ``train()`` reads as the recipe above."""

    def __init__(
        self,
        plan: TrainPlan,
        run_dir: Path,
        sweep_id: str | None = None,
        parent_run_id: str | None = None,
        timer: PhaseTimer | None = None,
    ) -> None:
        self.plan, self.config = plan, plan.trainer
        runtime = resolve_runtime(
            self.config.device, self.config.precision, self.config.num_threads
        )
        self.dist, self.runtime = distributed.setup(self.config.parallel, runtime)
        self.run_dir = distributed.agree_on_run_dir(self.dist, run_dir)
        self.checkpointer = Checkpointer(
            self.run_dir / "checkpoints",
            self.dist,
            keep=self.config.keep_checkpoints,
            trusted=self.config.trust_checkpoint,
        )
        # What the run records of its config: credentials in URIs are replaced by ***.
        self.recorded_config = redact_config(OmegaConf.to_container(plan.cfg, resolve=True))
        self.recorder = RunRecorder(self, sweep_id, parent_run_id)
        self.timer = timer or PhaseTimer()
        self.state = TrainState()
        self.final_eval: dict[str, float] = {}
        self.last_checkpoint: Path | None = None

    # --- the recipe ---------------------------------------------------------------------------

    def train(self) -> TrainResult:
        finished = self.already_finished()
        if finished is not None:
            return finished
        resume_from = self.setup()
        self.last_checkpoint = resume_from
        status = "FAILED"
        try:  # from here on the MLflow run exists: every way out closes it
            with stop_on_signals() as stop_requested:
                if self.state.step == 0:
                    self.state.first_eval = self.run_eval(0)
                while self.state.step < self.plan.total_steps:
                    self.train_step()
                    self.maybe_log()
                    self.maybe_eval()
                    self.maybe_checkpoint(stop_requested)
            result = self.finish()
            status = "FINISHED"
            return result
        except (KeyboardInterrupt, TrainingInterrupted):
            status = "KILLED"
            raise
        except Exception as error:
            self.recorder.tag_failure(error)
            raise
        finally:
            self.recorder.close(status)

    def already_finished(self) -> AlreadyFinished | None:
        """The earlier result when this run already finished: from its run dir, or, when the run
        dir holds no checkpoint, from the tracking store's record (finished.py). Nothing is
        trained, evaluated or logged again; ``trainer.resume=false`` trains it again.

        Otherwise the run is about to train, so a bad or unreachable store is one clear error
        here, before the store is first asked (not after MLflow's retries) or any data is read."""
        sweep_id, tracking = self.recorder.sweep_id, self.plan.tracking
        finished = (
            read_finished(self.run_dir, self.plan.total_steps) if self.config.resume else None
        )
        if finished is not None:
            self.checkpointer.check_config(finished.checkpoint, self.recorded_config)
        elif tracking.enabled:
            tr.check_tracking_uri(tracking.uri)
            if self.config.resume and not step_dirs(self.checkpointer.root):
                # Nothing here to go on (a purged disk, a fresh clone of committed results): the
                # store may have recorded this run finishing, under a run dir of the same name.
                finished = recorded_finished(
                    self.run_dir, self.plan.total_steps, tracking.uri, tracking.experiment
                )
        if finished is None:
            return None
        if sweep_id and finished.run_id and tracking.enabled and self.dist.is_main:
            join_sweep(tracking.uri, finished.run_id, sweep_id)
        return finished

    # --- setup --------------------------------------------------------------------------------

    def setup(self) -> Path | None:
        """Everything before the first step (the store was checked by already_finished);
        returns the checkpoint resumed from, if any."""
        resume_from = self.find_checkpoint()
        self.prepared = prepare_data(
            self.plan.data,
            self.plan.tokenizer,
            seq_len=self.plan.seq_len,
            cache_dir=self.plan.cfg.cache_dir,
            eval_tokens=self.config.eval_tokens,
        )
        self.unigram_loss = unigram_cross_entropy(
            self.prepared.train_blocks, self.prepared.val_blocks, self.prepared.vocab_size
        )
        self.run_dir.mkdir(parents=True, exist_ok=True)  # only once the data is there
        if self.dist.is_main:
            forget_finished(self.run_dir)  # it trains again: not finished until it finishes
        self.build(self.prepared.vocab_size, self.prepared.train_blocks)
        if resume_from is not None:
            self.resume(resume_from)
        self.recorder.open(from_checkpoint=resume_from is not None)
        self._elapsed_before, self._clock_start = self.state.elapsed_s, time.perf_counter()
        return resume_from

    def find_checkpoint(self) -> Path | None:
        if not self.config.resume:
            return None
        try:
            path = self.checkpointer.resumable()
        except CheckpointError as error:
            self.recorder.fail_earlier_attempt(str(error))
            raise
        if path is not None:
            self.checkpointer.check_config(path, self.recorded_config)
        return path

    def build(self, vocab_size: int, train_blocks: Any) -> None:
        """Model, optimizers, schedules and the data loader (also used by the bench)."""
        plan, device = self.plan, self.runtime.device
        seed_everything(plan.seed)
        self.model = GPT(plan.arch, vocab_size).to(device)
        # DDP: a wrapper to step through, ``model`` stays plain; FSDP2 shards ``model`` in place,
        # so the optimizers are built after this, over the sharded parameters.
        self.parallel_model = distributed.wrap_model(self.dist, self.model, self.runtime)
        self.optimizers = OPTIMIZER.get(plan.optimizer.name)(plan.optimizer, self.model)
        warmup, total, floor = self.config.warmup_steps, plan.total_steps, self.config.min_lr_ratio

        def schedule(step: int) -> float:
            return lr_multiplier(step, warmup, total, floor)

        self.schedulers = [torch.optim.lr_scheduler.LambdaLR(o, schedule) for o in self.optimizers]
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.runtime.precision == "fp16")
        self.loader = BlockLoader(
            train_blocks,
            batch_size=self.config.micro_batch_size * self.dist.world_size,
            seed=plan.seed,
            device=device,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )
        self.compiled = use_compile(self.config.compile, device)
        self.step_model = (
            torch.compile(self.parallel_model) if self.compiled else self.parallel_model
        )
        self._compile_pending = self.compiled
        self.state.interval_loss = torch.zeros((), device=device)
        self.nonfinite = NonFiniteWatch(device)
        self.progress = _progress_bar(plan.total_steps, self.config.progress and self.dist.is_main)

    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs beyond weights and optimizer state (the Checkpointer's)."""
        return {
            **self.state.state_dict(),
            "schedulers": [s.state_dict() for s in self.schedulers],
            "scaler": self.scaler.state_dict(),
            "loader": self.loader.state_dict(),
            "rng": rng_state(),
        }

    def resume(self, checkpoint: Path) -> None:
        state = self.checkpointer.load(checkpoint, self.model, self.optimizers)
        for scheduler, saved in zip(self.schedulers, state["schedulers"], strict=True):
            scheduler.load_state_dict(saved)
        self.scaler.load_state_dict(state["scaler"])
        self.loader.load_state_dict(state["loader"])
        set_rng_state(state["rng"])
        self.state.load_state_dict(state)
        self.progress.update(self.state.step)
        if self.dist.is_main:
            log.info(
                f"Resuming from {checkpoint} (step {self.state.step}/{self.plan.total_steps})."
            )

    # --- one step -----------------------------------------------------------------------------

    def train_step(self) -> None:
        with self.timer.phase("forward_backward"):
            batches = [self.loader.next_batch() for _ in range(self.config.grad_accum_steps)]
            # The global batch's loss (every rank's share is the same size), so every rank logs,
            # and takes the non-finite decision on, the same value.
            loss = self.dist.mean(self._forward_backward(batches))
        with self.timer.phase("optimizer"):
            self._optimizer_step(loss)
        self.state.step += 1

    def _forward_backward(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        if not self._compile_pending:
            return accumulate_gradients(self.step_model, batches, self.runtime, self.scaler)
        # The first compiled step compiles: time it, and fall back to eager if it fails.
        self._compile_pending = False
        started = time.perf_counter()
        try:
            loss = accumulate_gradients(self.step_model, batches, self.runtime, self.scaler)
        except Exception as error:
            log.warning(
                f"warning: torch.compile failed ({type(error).__name__}: "
                f"{str(error).strip().splitlines()[0][:200] if str(error).strip() else ''}); "
                "training eager."
            )
            for opt in self.optimizers:
                opt.zero_grad(set_to_none=True)
            self.step_model, self.compiled = self.parallel_model, False
            return accumulate_gradients(self.step_model, batches, self.runtime, self.scaler)
        log.info(f"Compiled the model in {time.perf_counter() - started:.1f}s (first step).")
        return loss

    def _optimizer_step(self, loss: torch.Tensor) -> None:
        cfg, step = self.config, self.state.step + 1
        for opt in self.optimizers:
            self.scaler.unscale_(opt)
        norm = torch.nn.utils.clip_grad_norm_(
            self.model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
        )
        self.grad_norm = distributed.full_value(norm)  # FSDP: a DTensor over the shards
        skip = False
        # fp16's scaler skips overflowing steps itself; elsewhere a NaN/Inf is a real fault.
        if not self.scaler.is_enabled():
            bad = ~(torch.isfinite(loss) & torch.isfinite(self.grad_norm))
            if cfg.on_nonfinite == "skip":
                skip = bool(bad)  # a skip must be known now: one host sync per step
            else:
                self.nonfinite.record(bad, step, loss, self.grad_norm)
        if skip:
            self.state.skipped_steps += 1
            self.recorder.log({"train/skipped_steps": self.state.skipped_steps}, step)
        else:
            for opt in self.optimizers:
                with self.timer.phase(f"step/{type(opt).__name__}"):  # the bench's Muon share
                    self.scaler.step(opt)
            self.scaler.update()
            self.state.interval_loss += loss
            self.state.interval_steps += 1
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        for scheduler in self.schedulers:
            scheduler.step()

    # --- bookkeeping between steps ------------------------------------------------------------

    def _due(self, every: int) -> bool:
        done = self.state.step
        return done == self.plan.total_steps or (every > 0 and done % every == 0)

    def maybe_log(self) -> None:
        state = self.state
        if not (state.interval_steps and self._due(self.config.log_every)):
            return
        self.nonfinite.check(self.last_checkpoint)
        self.recorder.log_train_interval()

    def maybe_eval(self) -> None:
        if self._due(self.config.eval_every):
            self.nonfinite.check(self.last_checkpoint)
            self.final_eval = self.run_eval(self.state.step)
            self.progress.set_postfix(val_loss=f"{self.final_eval['loss']:.3f}")

    def run_eval(self, step: int) -> dict[str, float]:
        """The periodic eval, on the fixed sample of validation blocks."""
        result = evaluate(
            self.model,
            self.prepared.eval_blocks,
            self.config.eval_batch_size,
            self.runtime,
            self.dist,
        )
        metrics = {f"val/{k}": v for k, v in result.metrics().items()}
        self.recorder.log(metrics | {"time/elapsed_s": self.elapsed()}, step)
        return result.metrics()

    def maybe_checkpoint(self, stop_requested: list[str]) -> None:
        stop_now = distributed.agree_on_stop(self.dist, stop_requested, self.runtime.device)
        if not (self._due(self.config.checkpoint_every) or stop_now):
            return
        self.nonfinite.check(self.last_checkpoint)  # never checkpoint after a bad step
        self.save()
        if stop_now:
            raise TrainingInterrupted(
                f"Stopped by {stop_requested[0]} at step {self.state.step}/{self.plan.total_steps}; "
                f"checkpoint saved to {self.last_checkpoint}. Re-run the same command to resume "
                "(same run dir, same MLflow run)."
            )

    def save(self) -> Path:
        self.state.elapsed_s = self.elapsed()
        self.last_checkpoint = self.checkpointer.save(
            self.state.step,
            self.model,
            self.optimizers,
            OmegaConf.to_yaml(self.recorded_config),
            self.prepared.tokenizer_dir,
            self.state_dict(),
        )
        self.recorder.flush()
        return self.last_checkpoint

    def elapsed(self) -> float:
        return self._elapsed_before + (time.perf_counter() - self._clock_start)

    # --- the end ------------------------------------------------------------------------------

    def finish(self) -> TrainResult:
        if not self.final_eval:  # resumed at the very end: evaluate what is there
            self.final_eval = self.run_eval(self.plan.total_steps)
        if self.last_checkpoint is None or latest_checkpoint(self.checkpointer.root) is None:
            self.save()
        full = self.recorder.final_pass()
        result = self.recorder.finish(full)
        if self.dist.is_main:
            record_finished(result)
        return result


def _progress_bar(total: int, enabled: bool) -> Any:
    import sys

    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, unit="step", dynamic_ncols=True, file=sys.stderr)
