"""Multi-process training: the same loop under ``torchrun``, with DDP or FSDP2.

``torchrun --nproc_per_node=N -m gpt5_ablate ...`` starts N copies of the CLI; each composes its own
config, and this module turns them into one run:

- ``setup`` joins the process group (gloo on CPU, nccl on CUDA with one GPU per rank) and picks the
  mode from ``trainer.parallel``: ``ddp`` (DistributedDataParallel, replicated weights) or ``fsdp``
  (FSDP2 ``fully_shard``: parameters, gradients and optimizer state sharded across ranks).
- Every rank trains in rank 0's run dir and draws the same global batch, keeping its own slice
  (see ``BlockLoader``), so N ranks of micro-batch B take the same steps as one process of N x B.
- Only rank 0 talks to MLflow and writes the run dir's files; metrics are averaged over ranks.

Checkpoints (``checkpoint.Checkpointer``) and evaluation (``evaluate.evaluate``) take the
``DistContext`` and work for one process and many; this module keeps the process group, the
wrapping of the model and the collective helpers.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from gpt5_ablate.config import PARALLEL_MODES
from gpt5_ablate.errors import ConfigError
from gpt5_ablate.train.runtime import Runtime

log = logging.getLogger("gpt5_ablate")


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

    def sum_(self, value: torch.Tensor) -> torch.Tensor:
        """Sum ``value`` over ranks, in place (unchanged on a single process)."""
        if self.active:
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value

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
        log.warning(f"rank {ctx.rank}: run dir {run_dir} differs from rank 0's; using {chosen}.")
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

        from gpt5_ablate.optim.hints import collect_param_hints, restore_param_hints

        # fully_shard swaps every parameter for a DTensor and drops custom attributes, such as
        # the per-projection hints Muon reads: kept and restored around it.
        hints = collect_param_hints(model)
        # One FSDP unit per transformer block: each block's parameters are gathered just before
        # it runs and freed after, so peak memory holds one full block, not the model. The root
        # call takes the rest (embedding, tied head, final norm).
        for block in model.blocks:
            fully_shard(block)
        fully_shard(model)
        restore_param_hints(model, hints)
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
