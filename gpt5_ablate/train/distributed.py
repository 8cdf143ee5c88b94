"""Multi-process training: the same loop under ``torchrun``, with DDP or FSDP2.

``torchrun --nproc_per_node=N -m gpt5_ablate ...`` starts N copies of the CLI; each composes its own
config, and this module turns them into one run:

- ``setup`` joins the process group (gloo on CPU, nccl on CUDA with one GPU per rank) and picks the
  mode from ``trainer.parallel``: ``ddp`` (DistributedDataParallel, replicated weights) or ``fsdp``
  (FSDP2 ``fully_shard``: parameters, gradients and optimizer state sharded across ranks).
- Every rank trains in rank 0's run dir and draws the same global batch, keeping its own slice
  (see ``BlockLoader``), so N ranks of micro-batch B take the same steps as one process of N x B.
- Only rank 0 talks to MLflow and writes the run dir's files; metrics are averaged over ranks.
- Checkpoints: under DDP every rank holds the full model and optimizer, so rank 0 writes the
  ordinary checkpoint. Under FSDP each rank holds a shard, so model and optimizer state are written
  with ``torch.distributed.checkpoint`` (DCP: every rank writes its shard, in parallel), next to
  consolidated safetensors weights that ``generate`` and the other single-process tools read.
"""

from __future__ import annotations

import atexit
import dataclasses
import math
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import save_model

from gpt5_ablate.config import PARALLEL_MODES
from gpt5_ablate.errors import ConfigError
from gpt5_ablate.train import checkpoint as ckpt
from gpt5_ablate.train.runtime import Runtime

DCP_DIR = "dcp"  # inside a checkpoint dir: the sharded model + optimizer state of an FSDP run


def launch_world_size(parallel: str = "auto") -> int:
    """Processes in this run, as the launcher (torchrun, or SLURM via submitit) announces it.

    Read from the environment so the plan (tokens per step, step budget) can count the global
    batch before any process group exists."""
    _export_slurm_env()
    if parallel == "none":
        return 1
    return int(os.environ.get("WORLD_SIZE", "1"))


def resolve_parallel(parallel: str, world_size: int) -> str:
    if parallel not in PARALLEL_MODES:
        raise ConfigError(
            f"trainer.parallel={parallel!r} is invalid. Valid choices: {', '.join(PARALLEL_MODES)}."
        )
    if parallel == "auto":
        return "ddp" if world_size > 1 else "none"
    if parallel == "none" and world_size > 1:
        # Every rank would train its own copy and all would write the same run dir.
        raise ConfigError(
            f"trainer.parallel=none but this process is one of WORLD_SIZE={world_size} ranks; "
            "use trainer.parallel=ddp or fsdp (or auto), or launch a single process."
        )
    return parallel


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the run. ``mode == "none"``: a plain single process."""

    mode: str = "none"
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def active(self) -> bool:
        return self.mode != "none"

    @property
    def sharded(self) -> bool:
        return self.mode == "fsdp"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def params(self) -> dict[str, Any]:
        return {"parallel": self.mode, "world_size": self.world_size}

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of a tensor over ranks (SUM then divide: gloo has no AVG reduction)."""
        if not self.active:
            return value
        reduced = value.detach().clone()
        dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
        return reduced / self.world_size

    def any(self, flag: bool, device: torch.device) -> bool:
        if not self.active:
            return flag
        value = torch.tensor([int(flag)], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's value of ``obj`` on every rank."""
        if not self.active:
            return obj
        holder = [obj]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]


def setup(parallel: str, runtime: Runtime) -> tuple[DistContext, Runtime]:
    """Join the process group when launched as one of several ranks; returns the context and the
    runtime with this rank's device (``cuda:LOCAL_RANK`` on GPUs)."""
    _export_slurm_env()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    mode = resolve_parallel(parallel, world_size)
    if mode == "none":
        return DistContext(), runtime
    if "RANK" not in os.environ or "MASTER_ADDR" not in os.environ:
        raise ConfigError(
            f"trainer.parallel={mode} needs a distributed launcher: start the run with "
            "`torchrun --nproc_per_node=N -m gpt5_ablate ...` (which sets RANK, WORLD_SIZE, "
            "MASTER_ADDR), or use trainer.parallel=auto for a single process."
        )
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if runtime.device.type == "cuda":
        # One GPU per rank; setting the current device first lets NCCL bind each rank to its GPU.
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        runtime = dataclasses.replace(runtime, device=device)
        backend = "nccl"
    elif runtime.device.type == "cpu":
        backend = "gloo"
    else:
        raise ConfigError(
            f"trainer.parallel={mode} supports CPU (gloo) and CUDA (nccl) devices, not "
            f"{runtime.device.type}."
        )
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend,
            rank=rank,
            world_size=world_size,
            device_id=runtime.device if backend == "nccl" else None,
        )
        # Destroying the group on exit lets NCCL shut down cleanly instead of warning about
        # (or hanging on) a group still alive at interpreter teardown.
        atexit.register(_destroy)
    return DistContext(mode, rank, local_rank, world_size), runtime


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _export_slurm_env() -> None:
    """Under ``launcher=submitit_slurm`` with several tasks per job, SLURM, not torchrun, started
    the ranks: submitit translates SLURM's variables into the ones torch.distributed reads."""
    if "RANK" in os.environ or int(os.environ.get("SLURM_NTASKS", "1")) <= 1:
        return
    if "SUBMITIT_EXECUTOR" not in os.environ:  # a bare srun without torchrun: not ours to set up
        return
    from submitit.helpers import TorchDistributedEnvironment

    TorchDistributedEnvironment().export()


def agree_on_run_dir(ctx: DistContext, run_dir: Path) -> Path:
    """Rank 0's run dir on every rank.

    Hydra composes each rank's config separately; the default run dir depends only on the
    command, so the ranks agree anyway, but a user's ``hydra.run.dir`` with ``${now:...}`` would
    not. Every rank writing rank 0's dir keeps one run in one place."""
    chosen = Path(ctx.broadcast_object(str(run_dir)))
    if chosen != run_dir:
        print(
            f"rank {ctx.rank}: run dir {run_dir} differs from rank 0's; using {chosen}.",
            file=sys.stderr,
        )
    return chosen


def wrap_model(ctx: DistContext, model: torch.nn.Module, runtime: Runtime) -> torch.nn.Module:
    """The module to run forward/backward through.

    DDP returns a wrapper (``model`` stays the plain module, for evaluation, sampling and
    checkpoints). FSDP2 shards ``model`` in place, so the result is ``model`` itself; build the
    optimizers after this call, over the sharded parameters."""
    if ctx.mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)
    if ctx.mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        # One FSDP unit per transformer block: each block's parameters are gathered just before
        # it runs and freed after, so peak memory holds one full block, not the model. The root
        # call takes the rest (embedding, tied head, final norm).
        for block in model.blocks:
            fully_shard(block)
        fully_shard(model)
        return model
    return model


def full_value(tensor: torch.Tensor) -> torch.Tensor:
    """A plain tensor from a DTensor (FSDP's gradient norm is one), unchanged otherwise."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def agree_on_stop(ctx: DistContext, requested: list[str], device: torch.device) -> bool:
    """Whether any rank received a stop signal. torchrun signals every rank, but not at the same
    instant: deciding together keeps every rank on the same step (one checkpoint, no rank left
    waiting in a collective for a rank that has exited)."""
    stop = ctx.any(bool(requested), device)
    if stop and not requested:
        requested.append("a stop signal on another rank")
    return stop


@torch.no_grad()
def evaluate_sharded(
    ctx: DistContext,
    model: torch.nn.Module,
    blocks: Any,
    batch_size: int,
    runtime: Runtime,
) -> dict[str, float]:
    """``loop.evaluate`` over ranks: each rank scores a contiguous share of the held-out blocks
    and the token-weighted sums are added up, so the result equals a single process's.

    Every rank runs the same number of forward passes, a rank with no blocks left scoring a
    stand-in batch it then ignores: FSDP's forward gathers parameters collectively, so a rank
    that stopped early would leave the others waiting."""
    n_blocks = len(blocks)
    bounds = np.linspace(0, n_blocks, ctx.world_size + 1).astype(int)
    start, stop = int(bounds[ctx.rank]), int(bounds[ctx.rank + 1])
    largest_share = int(np.diff(bounds).max())
    n_batches = math.ceil(largest_share / batch_size)
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=runtime.device)  # loss, correct, tokens
    for i in range(n_batches):
        lo, hi = start + i * batch_size, min(start + (i + 1) * batch_size, stop)
        real = hi > lo
        rows = blocks[lo:hi] if real else blocks[0:1]
        batch = torch.from_numpy(np.array(rows, dtype=np.int64)).to(runtime.device)
        inputs, targets = batch[:, :-1], batch[:, 1:]
        with runtime.autocast():
            logits, loss = model(inputs, targets)
        if real:
            sums[0] += loss.double() * targets.numel()
            sums[1] += (logits.argmax(dim=-1) == targets).sum()
            sums[2] += targets.numel()
    model.train(was_training)
    dist.all_reduce(sums, op=dist.ReduceOp.SUM)
    loss_sum, correct, n_tokens = sums.tolist()
    loss = loss_sum / n_tokens
    return {
        "loss": loss,
        "accuracy": correct / n_tokens,
        "perplexity": math.exp(min(loss, 50)),
    }


# --- checkpoints ------------------------------------------------------------------------------


def save_checkpoint(
    ctx: DistContext,
    checkpoint_root: Path,
    step: int,
    model: torch.nn.Module,
    optimizers: list[torch.optim.Optimizer],
    config: DictConfig,
    tokenizer_dir: Path,
    trainer_state: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write a checkpoint; call it on every rank. Returns its path (the same on every rank)."""
    if ctx.sharded:
        path = _save_sharded(
            ctx,
            checkpoint_root,
            step,
            model,
            optimizers,
            config,
            tokenizer_dir,
            trainer_state,
            keep,
        )
    else:
        path = checkpoint_root / f"step_{step:07d}"
        if ctx.is_main:  # the weights and optimizer state are the same on every rank
            trainer_state = {**trainer_state, "world_size": ctx.world_size}
            path = ckpt.save_checkpoint(
                checkpoint_root, step, model, config, tokenizer_dir, trainer_state, keep=keep
            )
    # Nobody goes on (or exits) before the checkpoint is complete and ``latest`` names it.
    ctx.barrier()
    return path


def _save_sharded(
    ctx: DistContext,
    checkpoint_root: Path,
    step: int,
    model: torch.nn.Module,
    optimizers: list[torch.optim.Optimizer],
    config: DictConfig,
    tokenizer_dir: Path,
    trainer_state: dict[str, Any],
    keep: int,
) -> Path:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_state_dict,
    )

    from gpt5_ablate.model import GPT

    name = f"step_{step:07d}"
    final = checkpoint_root / name
    # Same atomic scheme as the single-process checkpoint: build a hidden dir, rename it into
    # place, then point ``latest`` at it. Its name is known to every rank without a broadcast; a
    # leftover from a crash mid-write is cleared first.
    tmp = checkpoint_root / f".{name}.partial"
    if ctx.is_main:
        checkpoint_root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    ctx.barrier()
    try:
        model_state, optim_state = get_state_dict(model, optimizers)
        dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=tmp / DCP_DIR)
        # Consolidated weights, gathered on rank 0 (offloaded to its CPU memory), so that
        # ``generate``, the reports and ``latest_checkpoint`` read this checkpoint like any other.
        full = get_model_state_dict(
            model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
        if ctx.is_main:
            plain = GPT(model.arch, model.vocab_size)
            plain.load_state_dict(full)  # a tied head loads the same tensor twice: tie kept
            save_model(plain, str(tmp / ckpt.WEIGHTS))
            (tmp / ckpt.CONFIG).write_text(OmegaConf.to_yaml(config, resolve=True))
            shutil.copytree(tokenizer_dir, tmp / ckpt.TOKENIZER)
            # The optimizer state lives in the DCP shards; the rest (schedulers, data position,
            # RNG, counters) is the same on every rank and small.
            rest = {**trainer_state, "optimizers": None, "world_size": ctx.world_size}
            torch.save(rest, tmp / ckpt.TRAINER_STATE)
            if final.exists():  # a re-save of the same step (the final one after a resume)
                shutil.rmtree(final)
            os.replace(tmp, final)
            ckpt._write_atomic(checkpoint_root / "latest", name)
            ckpt._prune(checkpoint_root, keep, protect=name)
    except BaseException:
        if ctx.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def load_model_and_optimizers(
    ctx: DistContext,
    model: torch.nn.Module,
    optimizers: list[torch.optim.Optimizer],
    checkpoint: Path,
    trainer_state: dict[str, Any],
) -> None:
    """Restore weights and optimizer state from ``checkpoint`` on every rank."""
    saved_world = trainer_state.get("world_size", 1)
    if saved_world != ctx.world_size and ctx.is_main:
        print(
            f"note: {checkpoint} was written by {saved_world} rank(s), resuming on "
            f"{ctx.world_size}: the global batch changes with the number of ranks.",
            file=sys.stderr,
        )
    if ctx.sharded:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        if not (checkpoint / DCP_DIR).is_dir():
            raise ConfigError(
                f"{checkpoint} has no {DCP_DIR}/ (sharded state): it was written without "
                "trainer.parallel=fsdp. Resume it with the parallel mode that wrote it."
            )
        # DCP loads in place into the state dicts' (sharded) tensors: each rank reads only what
        # its shards need, and a different number of ranks reshards on load.
        model_state, optim_state = get_state_dict(model, optimizers)
        state = {"model": model_state, "optim": optim_state}
        dcp.load(state, checkpoint_id=checkpoint / DCP_DIR)
        set_state_dict(
            model,
            optimizers,
            model_state_dict=state["model"],
            optim_state_dict=state["optim"],
        )
        return
    if trainer_state.get("optimizers") is None:
        raise ConfigError(
            f"{checkpoint} holds sharded optimizer state (written with trainer.parallel=fsdp); "
            "resume it with trainer.parallel=fsdp under torchrun."
        )
    ckpt.load_weights(model, checkpoint)
    for opt, opt_state in zip(optimizers, trainer_state["optimizers"], strict=True):
        opt.load_state_dict(opt_state)
