"""The training loop: one loop for every variant.

It builds the model and optimizers from their registries and never asks which attention,
optimizer, norm or position encoding it trains. Order of work: validate every config value
(cheap, before anything is allocated), prepare data, build, resume if a checkpoint exists, train,
evaluate, checkpoint, log.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from gpt5_ablate.config import TrackingConfig, TrainerConfig
from gpt5_ablate.data import (
    DATA,
    TOKENIZER,
    BlockLoader,
    PreparedData,
    prepare_data,
    unigram_cross_entropy,
)
from gpt5_ablate.errors import ConfigError
from gpt5_ablate.model import GPT, ArchitectureConfig
from gpt5_ablate.optim import OPTIMIZER, lr_multiplier
from gpt5_ablate.registry import to_dataclass
from gpt5_ablate.train import checkpoint as ckpt
from gpt5_ablate.train import distributed
from gpt5_ablate.train.runtime import Runtime, resolve_runtime, seed_everything
from gpt5_ablate.train.tracking import Tracker, check_tracking_uri

SAMPLE_PROMPTS = ("def ", "import ", "The ")
# The run dir's MLflow run, written as soon as the run exists: a run killed before its first
# checkpoint is re-run into the same MLflow run instead of a duplicate.
RUN_ID_FILE = "mlflow_run.json"


class TrainingInterrupted(Exception):
    """SIGINT/SIGTERM: a checkpoint was saved and the MLflow run marked KILLED."""


class NonFiniteLossError(RuntimeError):
    """A loss or gradient became NaN/Inf and trainer.on_nonfinite=stop."""


@dataclass
class TrainPlan:
    """Every typed, validated setting of a run (built before any tensor exists)."""

    cfg: DictConfig
    arch: ArchitectureConfig
    trainer: TrainerConfig
    tracking: TrackingConfig
    optimizer: Any
    data: Any
    tokenizer: Any
    seq_len: int
    tokens_per_step: int
    total_steps: int

    def factors(self) -> dict[str, str]:
        return {**self.arch.factors(), "optimizer": self.optimizer.name}


def make_plan(cfg: DictConfig) -> TrainPlan:
    """Type and check the whole config; raises ConfigError naming the bad value."""
    arch = ArchitectureConfig.from_config(cfg)
    arch.validate()
    trainer = _typed(TrainerConfig, cfg.trainer)
    trainer.validate(arch.model)
    tracking = _typed(TrackingConfig, cfg.tracking)
    optimizer = to_dataclass(OPTIMIZER, cfg.optimizer)
    optimizer.validate()
    data = to_dataclass(DATA, cfg.data)
    tokenizer = to_dataclass(TOKENIZER, cfg.tokenizer)
    # The corpus and tokenizer checks are cheap (no reading, no download): run them here, so a
    # bad data or tokenizer value fails before any run dir, cache entry or MLflow run exists.
    DATA.get(data.name)(data).validate()
    TOKENIZER.get(tokenizer.name)(tokenizer).validate()
    if cfg.seed < 0:  # the data order (BlockLoader) is drawn from a generator seeded by it
        raise ConfigError(f"seed={cfg.seed} is invalid: use an integer >= 0.")
    seq_len = trainer.resolved_seq_len(arch.model)
    # Under torchrun a step takes micro_batch_size x grad_accum_steps sequences on every rank.
    world_size = distributed.launch_world_size(trainer.parallel)
    tokens_per_step = trainer.micro_batch_size * trainer.grad_accum_steps * seq_len * world_size
    if trainer.max_tokens is not None:
        total_steps = math.ceil(trainer.max_tokens / tokens_per_step)
    else:
        total_steps = trainer.max_steps
    return TrainPlan(
        cfg,
        arch,
        trainer,
        tracking,
        optimizer,
        data,
        tokenizer,
        seq_len,
        tokens_per_step,
        total_steps,
    )


def _typed(schema: type, node: Any) -> Any:
    if isinstance(node, schema):
        return node
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), node))


@dataclass
class TrainResult:
    run_dir: Path
    checkpoint: Path
    run_id: str | None
    steps: int
    tokens: int
    elapsed_s: float
    final_eval: dict[str, float]
    first_eval: dict[str, float]
    unigram_loss: float
    skipped_steps: int = 0
    tracking_problems: list[str] = field(default_factory=list)


def accumulate_gradients(
    model: torch.nn.Module,
    micro_batches: list[tuple[torch.Tensor, torch.Tensor]],
    runtime: Runtime,
    scaler: torch.amp.GradScaler,
) -> torch.Tensor:
    """Backward over k micro-batches, each loss divided by k, so the summed gradient equals the
    gradient of the mean loss over one batch k times larger. Returns that mean loss (detached,
    still on the device: no host sync here)."""
    total = torch.zeros((), device=runtime.device)
    for inputs, targets in micro_batches:
        with runtime.autocast():
            _, loss = model(inputs, targets)
        scaler.scale(loss / len(micro_batches)).backward()
        total += loss.detach()
    return total / len(micro_batches)


@torch.no_grad()
def evaluate(model: GPT, blocks: Any, batch_size: int, runtime: Runtime) -> dict[str, float]:
    """Mean next-token loss, accuracy and perplexity over the fixed held-out blocks."""
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), dtype=torch.float64, device=runtime.device)
    total_correct = torch.zeros((), dtype=torch.int64, device=runtime.device)
    n_tokens = 0
    for start in range(0, len(blocks), batch_size):
        batch = torch.from_numpy(np.array(blocks[start : start + batch_size], dtype=np.int64))
        batch = batch.to(runtime.device)
        inputs, targets = batch[:, :-1], batch[:, 1:]
        with runtime.autocast():
            logits, loss = model(inputs, targets)
        total_loss += loss.double() * targets.numel()
        total_correct += (logits.argmax(dim=-1) == targets).sum()
        n_tokens += targets.numel()
    model.train(was_training)
    loss = total_loss.item() / n_tokens
    return {
        "loss": loss,
        "accuracy": total_correct.item() / n_tokens,
        "perplexity": math.exp(min(loss, 50)),
    }


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


# Settings that change how a run executes, not what it computes: they may differ on resume.
RESUME_IGNORED_KEYS = {
    "trainer.progress",
    "trainer.resume",
    "trainer.num_threads",
    "trainer.device",
    "trainer.parallel",
}


def check_resumable(cfg: DictConfig, checkpoint: Path) -> None:
    """Refuse to resume a checkpoint written under a different config (e.g. an edited YAML).

    Keys the saved config lacks (a setting added to the harness since) do not block a resume.
    """
    saved = flatten(OmegaConf.to_container(OmegaConf.load(checkpoint / ckpt.CONFIG)))
    current = flatten(OmegaConf.to_container(cfg, resolve=True))
    differing = sorted(
        key for key in saved.keys() - RESUME_IGNORED_KEYS if saved.get(key) != current.get(key)
    )
    if differing:
        shown = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in differing[:5])
        raise ConfigError(
            f"The run dir {checkpoint.parent.parent} holds a checkpoint ({checkpoint.name}) written "
            f"with a different config ({shown}). Resume with the original config, start afresh in "
            "another dir (hydra.run.dir=...), or pass trainer.resume=false."
        )


def _recorded_run_id(path: Path, tracking: TrackingConfig) -> str | None:
    """The MLflow run of an earlier attempt in this run dir, if it used the same store."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    if record.get("uri") != tracking.uri or record.get("experiment") != tracking.experiment:
        return None
    return record.get("run_id")


def git_commit() -> str:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return result.stdout.strip() if result.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@contextmanager
def _stop_on_signals():
    """SIGINT/SIGTERM set a flag the loop checks between steps (so a checkpoint is never cut in
    half); a second Ctrl-C falls back to Python's default and interrupts at once."""
    requested: list[str] = []

    def handler(signum: int, frame: Any) -> None:
        requested.append(signal.Signals(signum).name)
        signal.signal(signum, previous[signum])

    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: signals stay as they are
        previous = {}
    try:
        yield requested
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def train(
    cfg: DictConfig, run_dir: Path, sweep_id: str | None = None, parent_run_id: str | None = None
) -> TrainResult:
    plan = make_plan(cfg)
    trainer = plan.trainer
    runtime = resolve_runtime(trainer.device, trainer.precision, trainer.num_threads)
    dctx, runtime = distributed.setup(trainer.parallel, runtime)
    run_dir = distributed.agree_on_run_dir(dctx, run_dir)
    if plan.tracking.enabled:
        check_tracking_uri(plan.tracking.uri)
    checkpoint_root = run_dir / "checkpoints"
    resume_from = ckpt.latest_checkpoint(checkpoint_root) if trainer.resume else None
    if resume_from is not None:
        check_resumable(cfg, resume_from)

    # --- data ---------------------------------------------------------------------------------
    prepared: PreparedData = prepare_data(
        plan.data,
        plan.tokenizer,
        seq_len=plan.seq_len,
        cache_dir=cfg.cache_dir,
        eval_tokens=trainer.eval_tokens,
    )
    unigram_loss = unigram_cross_entropy(
        prepared.train_blocks, prepared.val_blocks, prepared.vocab_size
    )
    run_dir.mkdir(parents=True, exist_ok=True)  # only once the data is there: no empty run dirs

    # --- model and optimizers -----------------------------------------------------------------
    seed_everything(cfg.seed)
    model = GPT(plan.arch, prepared.vocab_size).to(runtime.device)
    # DDP: a wrapper to step through, ``model`` stays plain; FSDP2 shards ``model`` in place,
    # so the optimizers are built after this, over the sharded parameters.
    parallel_model = distributed.wrap_model(dctx, model, runtime)
    optimizers = OPTIMIZER.get(plan.optimizer.name)(plan.optimizer, model)

    def schedule(step: int) -> float:
        return lr_multiplier(step, trainer.warmup_steps, plan.total_steps, trainer.min_lr_ratio)

    schedulers = [torch.optim.lr_scheduler.LambdaLR(opt, schedule) for opt in optimizers]
    scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.precision == "fp16")
    loader = BlockLoader(
        prepared.train_blocks,
        batch_size=trainer.micro_batch_size * dctx.world_size,
        seed=cfg.seed,
        device=runtime.device,
        rank=dctx.rank,
        world_size=dctx.world_size,
    )
    step_fn = torch.compile(parallel_model) if trainer.compile else parallel_model

    start_step, elapsed_before, skipped, run_id = 0, 0.0, 0, None
    first_eval: dict[str, float] = {}
    # The train/loss logged every log_every steps is a mean over the interval; a checkpoint taken
    # mid-interval (a stop signal, checkpoint_every not a multiple of log_every) carries the
    # partial sum, so the resumed run logs exactly what an uninterrupted run would.
    interval_loss = torch.zeros((), device=runtime.device)
    interval_steps = 0
    if resume_from is not None:
        state = ckpt.load_trainer_state(resume_from)
        distributed.load_model_and_optimizers(dctx, model, optimizers, resume_from, state)
        for sched, sched_state in zip(schedulers, state["schedulers"], strict=True):
            sched.load_state_dict(sched_state)
        scaler.load_state_dict(state["scaler"])
        loader.load_state_dict(state["loader"])
        ckpt.set_rng_state(state["rng"])
        start_step, elapsed_before = state["step"], state["elapsed_s"]
        skipped, run_id, first_eval = (
            state["skipped_steps"],
            state.get("run_id"),
            state["first_eval"],
        )
        if "interval_loss" in state:  # absent from checkpoints written before it was saved
            interval_loss = state["interval_loss"].to(runtime.device)
            interval_steps = state["interval_steps"]
        if dctx.is_main:
            print(
                f"Resuming from {resume_from} (step {start_step}/{plan.total_steps}).",
                file=sys.stderr,
            )

    # --- tracking -----------------------------------------------------------------------------
    factors = plan.factors()
    tags = {
        **factors,
        "seed": str(cfg.seed),
        "lr_scale": str(float(plan.optimizer.lr_scale)),
        "git_commit": git_commit(),
        "run_dir": str(run_dir.resolve()),
    }
    if sweep_id:
        tags["sweep_id"] = sweep_id
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id  # nests the run under its sweep in the UI
    if cfg.get("experiment_name"):
        tags["experiment_name"] = str(cfg.experiment_name)
    params = {
        **flatten(OmegaConf.to_container(cfg, resolve=True)),
        "n_params": model.n_params(),
        "n_params_non_embedding": model.n_params(non_embedding=True),
        "flops_per_token": model.flops_per_token(plan.seq_len),
        "kv_cache_bytes_per_token": model.kv_cache_bytes_per_token(torch.bfloat16),
        "tokens_per_step": plan.tokens_per_step,
        "total_steps": plan.total_steps,
        "vocab_size": prepared.vocab_size,
        "device": str(runtime.device),
        "precision": runtime.precision,
        "unigram_val_loss": round(unigram_loss, 5),
        **dctx.params(),
    }
    tracker = None
    if plan.tracking.enabled and dctx.is_main:  # one MLflow run per run, logged by rank 0
        run_name = (
            plan.tracking.run_name
            or "-".join(factors[k] for k in ("attention", "optimizer", "norm", "pos", "ffn"))
            + f"-s{cfg.seed}"
        )
        run_id_file = run_dir / RUN_ID_FILE
        from_checkpoint = run_id is not None
        if run_id is None and trainer.resume:
            run_id = _recorded_run_id(run_id_file, plan.tracking)
        tracker = Tracker(
            plan.tracking.uri,
            plan.tracking.experiment,
            run_dir,
            run_name,
            tags,
            params,
            run_id=run_id,
            flush_every=plan.tracking.flush_every,
            # Without a checkpoint, a FINISHED run means its checkpoints were deleted: start anew.
            reuse_finished=from_checkpoint,
        )
        run_id = tracker.run_id
        run_id_file.write_text(
            json.dumps(
                {"run_id": run_id, "uri": plan.tracking.uri, "experiment": plan.tracking.experiment}
            )
        )
        print(
            f"MLflow run {run_id} in experiment {plan.tracking.experiment!r} at {plan.tracking.uri}",
            file=sys.stderr,
        )
    if dctx.is_main:
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    def log(metrics: dict[str, float], step: int) -> None:
        if tracker is not None:
            tracker.log_metrics(metrics, step)

    def trainer_state(step: int, elapsed: float) -> dict[str, Any]:
        return {
            "step": step,
            "elapsed_s": elapsed,
            "optimizers": [opt.state_dict() for opt in optimizers],
            "schedulers": [s.state_dict() for s in schedulers],
            "scaler": scaler.state_dict(),
            "loader": loader.state_dict(),
            "rng": ckpt.rng_state(),
            "skipped_steps": skipped,
            "run_id": run_id,
            "first_eval": first_eval,
            "interval_loss": interval_loss.detach().clone().cpu(),
            "interval_steps": interval_steps,
        }

    def save(step: int, elapsed: float) -> Path:
        path = distributed.save_checkpoint(
            dctx,
            checkpoint_root,
            step,
            model,
            optimizers,
            cfg,
            prepared.tokenizer_dir,
            trainer_state(step, elapsed),
            keep=trainer.keep_checkpoints,
        )
        if tracker is not None:
            tracker.flush()
        return path

    def run_eval(step: int, elapsed: float) -> dict[str, float]:
        if dctx.active:  # each rank scores a share of the held-out set
            result = distributed.evaluate_sharded(
                dctx, model, prepared.val_blocks, trainer.eval_batch_size, runtime
            )
        else:
            result = evaluate(model, prepared.val_blocks, trainer.eval_batch_size, runtime)
        log({f"val/{k}": v for k, v in result.items()} | {"time/elapsed_s": elapsed}, step)
        return result

    # --- the loop -----------------------------------------------------------------------------
    model.train()
    t_start = time.perf_counter() - elapsed_before
    last_checkpoint = resume_from
    final_eval: dict[str, float] = {}
    progress = _progress_bar(plan.total_steps, start_step, trainer.progress and dctx.is_main)
    interval_t0, interval_t0_step = time.perf_counter(), start_step  # throughput since then
    status = "FAILED"
    try:  # from here on the MLflow run exists: any way out must close it
        with _stop_on_signals() as stop_requested:
            if start_step == 0:
                first_eval = run_eval(0, 0.0)
            for step in range(start_step, plan.total_steps):
                micro_batches = [loader.next_batch() for _ in range(trainer.grad_accum_steps)]
                step_loss = accumulate_gradients(step_fn, micro_batches, runtime, scaler)
                # The global batch's loss (every rank's share is the same size), so every rank
                # logs, and takes the non-finite decision below on, the same value.
                step_loss = dctx.mean(step_loss)
                for opt in optimizers:
                    scaler.unscale_(opt)
                grad_norm = torch.nn.utils.clip_grad_norm_(
                    model.parameters(), trainer.grad_clip if trainer.grad_clip > 0 else float("inf")
                )
                grad_norm = distributed.full_value(grad_norm)  # FSDP: a DTensor over the shards
                # fp16's scaler skips overflowing steps itself; elsewhere a NaN/Inf is a real fault.
                if not scaler.is_enabled() and not bool(
                    torch.isfinite(step_loss) & torch.isfinite(grad_norm)
                ):
                    what = "loss" if not torch.isfinite(step_loss) else "gradient norm"
                    if trainer.on_nonfinite == "stop":
                        raise NonFiniteLossError(
                            f"The {what} became non-finite at step {step + 1} "
                            f"(loss={step_loss.item()}, grad_norm={grad_norm.item()}); the last good "
                            f"checkpoint is {last_checkpoint or 'none (no checkpoint yet)'}. Lower the "
                            "learning rate, or set trainer.on_nonfinite=skip to skip such steps."
                        )
                    # Skipped, but still counted as a step: the evaluation, checkpoint and
                    # stop-signal checks below must not be skipped with it.
                    skipped += 1
                    log({"train/skipped_steps": skipped}, step + 1)
                else:
                    for opt in optimizers:
                        scaler.step(opt)
                    scaler.update()
                    interval_loss += step_loss
                    interval_steps += 1
                for opt in optimizers:
                    opt.zero_grad(set_to_none=True)
                for sched in schedulers:
                    sched.step()
                done = step + 1
                if interval_steps and (done % trainer.log_every == 0 or done == plan.total_steps):
                    now = time.perf_counter()
                    mean_loss = (interval_loss / interval_steps).item()  # the one sync per interval
                    tokens_per_s = (
                        (done - interval_t0_step) * plan.tokens_per_step / (now - interval_t0)
                    )
                    log(
                        {
                            "train/loss": mean_loss,
                            "train/lr": optimizers[0].param_groups[0]["lr"],
                            "train/grad_norm": grad_norm.item(),
                            "train/tokens_per_s": tokens_per_s,
                            "train/tokens_seen": done * plan.tokens_per_step,
                            "time/elapsed_s": now - t_start,
                        },
                        done,
                    )
                    progress.update(done - progress.n)
                    progress.set_postfix(loss=f"{mean_loss:.3f}", tok_s=f"{tokens_per_s:,.0f}")
                    interval_loss.zero_()
                    interval_steps, interval_t0, interval_t0_step = 0, time.perf_counter(), done
                if done % trainer.eval_every == 0 or done == plan.total_steps:
                    final_eval = run_eval(done, time.perf_counter() - t_start)
                    progress.set_postfix(val_loss=f"{final_eval['loss']:.3f}")
                stop_now = distributed.agree_on_stop(dctx, stop_requested, runtime.device)
                if (
                    done == plan.total_steps
                    or (trainer.checkpoint_every and done % trainer.checkpoint_every == 0)
                    or stop_now
                ):
                    last_checkpoint = save(done, time.perf_counter() - t_start)
                if stop_now:
                    status = "KILLED"
                    raise TrainingInterrupted(
                        f"Stopped by {stop_requested[0]} at step {done}/{plan.total_steps}; "
                        f"checkpoint saved to {last_checkpoint}. Re-run the same command to resume "
                        "(same run dir, same MLflow run)."
                    )
            if not final_eval:  # resumed at the very end: evaluate what is there
                final_eval = run_eval(plan.total_steps, time.perf_counter() - t_start)
            if last_checkpoint is None or ckpt.latest_checkpoint(checkpoint_root) is None:
                last_checkpoint = save(plan.total_steps, time.perf_counter() - t_start)
        status = "FINISHED"
    except NonFiniteLossError as error:
        if tracker is not None:
            tracker.set_tags({"failure_reason": str(error)})
        raise
    except (KeyboardInterrupt, TrainingInterrupted):
        status = "KILLED"
        raise
    except Exception as error:
        if tracker is not None:
            tracker.set_tags({"failure_reason": f"{type(error).__name__}: {error}"[:5000]})
        raise
    finally:
        progress.close()
        if tracker is not None and status != "FINISHED":
            _close_run(tracker, status)

    # --- after training: samples, artifacts ---------------------------------------------------
    elapsed = time.perf_counter() - t_start
    assert last_checkpoint is not None
    samples = generate_samples(
        model, prepared, trainer.num_samples, trainer.sample_tokens, cfg.seed, runtime
    )
    if dctx.is_main:  # every rank samples (FSDP's forward is collective); rank 0 writes
        (run_dir / "samples.txt").write_text(samples)
    problems: list[str] = []
    if tracker is not None:
        tracker.log_metrics({"final/elapsed_s": elapsed}, plan.total_steps)
        tracker.log_artifact(run_dir / "config.yaml")
        tracker.log_artifact(run_dir / "samples.txt")
        if plan.tracking.log_checkpoint:
            for item in (ckpt.WEIGHTS, ckpt.CONFIG, ckpt.TOKENIZER):
                tracker.log_artifact(
                    last_checkpoint / item,
                    "checkpoint" if item != ckpt.TOKENIZER else "checkpoint/tokenizer",
                )
        problems = _close_run(tracker, "FINISHED")
    return TrainResult(
        run_dir=run_dir,
        checkpoint=last_checkpoint,
        run_id=run_id,
        steps=plan.total_steps,
        tokens=plan.total_steps * plan.tokens_per_step,
        elapsed_s=elapsed,
        final_eval=final_eval,
        first_eval=first_eval,
        unigram_loss=unigram_loss,
        skipped_steps=skipped,
        tracking_problems=problems,
    )


def _close_run(tracker: Tracker, status: str) -> list[str]:
    """End the MLflow run; say what could not be logged (the run itself is never lost for it)."""
    problems = tracker.finish(status)
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    return problems


def generate_samples(
    model: GPT, prepared: PreparedData, n: int, max_new_tokens: int, seed: int, runtime: Runtime
) -> str:
    if n <= 0:
        return ""
    model.eval()
    generator = torch.Generator(device=runtime.device).manual_seed(seed)
    texts = []
    for prompt in (SAMPLE_PROMPTS * n)[:n]:
        ids = prepared.tokenizer(prompt, return_tensors="pt")["input_ids"].to(runtime.device)
        budget = min(max_new_tokens, model.arch.model.max_seq_len - ids.size(1))
        out = model.generate(ids, budget, temperature=0.8, top_k=50, generator=generator)
        texts.append(f"--- prompt: {prompt!r}\n{prepared.tokenizer.decode(out[0].tolist())}\n")
    model.train()
    return "\n".join(texts)


def _progress_bar(total: int, initial: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        disable=not enabled,
        unit="step",
        dynamic_ncols=True,
        file=sys.stderr,
    )


__all__ = [
    "NonFiniteLossError",
    "TrainPlan",
    "TrainResult",
    "TrainingInterrupted",
    "evaluate",
    "make_plan",
    "train",
]
