"""Muon: momentum SGD whose update for each weight matrix is orthogonalised.

Keller Jordan et al. (2024), "Muon: An optimizer for hidden layers in neural networks"
(kellerjordan.github.io/posts/muon). For a matrix parameter W with gradient G:

    B  <- mu B + G                       (momentum buffer)
    U  <- G + mu B  (Nesterov)  or  B
    O  <- NewtonSchulz5(U)               (~ U V^T of U's SVD: every singular value pushed to ~1)
    W  <- W (1 - lr wd) - lr * scale * O

where scale = sqrt(max(1, rows / cols)) keeps the update's RMS comparable across shapes. The
quintic iteration X <- a X + b (X X^T) X + c (X X^T)^2 X uses the coefficients (3.4445, -4.7750,
2.0315) from the post above, which converge quickly from a Frobenius-normalised start at the cost of
leaving singular values in roughly [0.7, 1.2] rather than exactly 1. It runs in bf16 on GPUs. On CPUs
without native bf16 matmuls, bf16 is emulated and measured 8x slower than fp32 (0.15 s vs 1.2 s for
8 x 128 x 384 on this project's 2-core CI machine), so ``ns_dtype="auto"`` picks fp32 there.

Which matrices. A parameter is a list of matrices, each orthogonalised on its own:

- a 2-D parameter [rows, cols] is one matrix, or several when it carries
  ``orthogonalize_blocks = (rows_1, rows_2, ...)`` (projections fused along the rows, e.g. K and V
  in one ``kv_proj``): each block gets exactly the update it would get as a separate parameter,
  with the LR scale of its own shape (see ``gpt5_ablate.optim.hints``);
- a 3-D parameter [n, rows, cols] is a batch of n matrices (e.g. MoE experts), each possibly split
  into blocks the same way.

Speed. Momentum buffers are updated with ``torch._foreach_*`` ops over the whole group. The
matrices are grouped by shape; each shape's updates are written straight into a preallocated
[n, rows, cols] buffer (no per-step stacking), orthogonalised in one batched Newton-Schulz call, and
added to the weights through views with one ``_foreach_add_`` per shape. On CUDA the Newton-Schulz
function is compiled with ``torch.compile`` (``compile_ns=True``; a compile failure warns once and
falls back to eager); on CPU it always runs eagerly. CPU results are the same as a plain per-matrix
loop's, operation for operation.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch

from gpt5_ablate.optim.hints import orthogonalize_blocks

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_DTYPES = ("auto", "bf16", "fp32")


def newton_schulz_orthogonalize(
    update: torch.Tensor, steps: int = 5, eps: float = 1e-7, dtype: torch.dtype = torch.bfloat16
) -> torch.Tensor:
    """Approximately orthogonalise a matrix, or a batch [..., rows, cols] of same-shape matrices."""
    a, b, c = NS_COEFFICIENTS
    x = update.to(dtype)
    transposed = x.size(-2) > x.size(-1)
    if transposed:  # iterate on the wide orientation: X X^T is the smaller Gram matrix
        x = x.mT
    # Frobenius norm >= spectral norm, so every singular value starts in [0, 1].
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + eps)
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    if transposed:
        x = x.mT
    return x.to(update.dtype)


def matrix_views(tensor: torch.Tensor, blocks: tuple[int, ...]) -> list[torch.Tensor]:
    """The matrices a 2-D [rows, cols] or 3-D [n, rows, cols] tensor holds, as views: each
    (batch element's) row blocks, batch-major."""
    batch = tensor.unbind(0) if tensor.ndim == 3 else (tensor,)
    if len(blocks) == 1:
        return list(batch)
    return [block for matrix in batch for block in matrix.split(blocks, dim=0)]


@dataclass
class _ShapeBatch:
    """The matrices of one shape in a param group: where they live and their updates' buffer."""

    params: list[torch.Tensor] = field(default_factory=list)  # views of the weights
    grads: list[torch.Tensor] = field(default_factory=list)  # views of the gradients
    buffers: list[torch.Tensor] = field(default_factory=list)  # views of the momentum buffers
    owners: list[int] = field(default_factory=list)  # index of each view's parameter


class Muon(torch.optim.Optimizer):
    """Muon for 2-D parameters and 3-D batches of matrices; give everything else to AdamW."""

    def __init__(
        self,
        params: Any,
        lr: float = 0.02,
        momentum: float = 0.95,
        nesterov: bool = True,
        weight_decay: float = 0.0,
        ns_steps: int = 5,
        ns_dtype: str = "auto",
        compile_ns: bool = True,
    ) -> None:
        if ns_dtype not in NS_DTYPES:
            raise ValueError(f"ns_dtype={ns_dtype!r}; valid: {', '.join(NS_DTYPES)}")
        self.ns_dtype = ns_dtype
        self.compile_ns = compile_ns
        self._compiled_ns: Callable[..., torch.Tensor] | None = None
        self._compile_failed = False
        self._stacks: dict[tuple[Any, ...], torch.Tensor] = {}  # preallocated update buffers
        defaults = dict(
            lr=lr,
            momentum=momentum,
            nesterov=nesterov,
            weight_decay=weight_decay,
            ns_steps=ns_steps,
        )
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim not in (2, 3):
                    raise ValueError(
                        "Muon takes 2-D matrices or 3-D batches of them, got shape "
                        f"{tuple(p.shape)}"
                    )
                orthogonalize_blocks(p)  # raises on blocks that do not add up

    # --- public helpers ---------------------------------------------------------------------------

    def ns_dtype_for(self, param: torch.Tensor) -> torch.dtype:
        """The dtype Newton-Schulz runs in for ``param`` (``ns_dtype``; auto: bf16 on CUDA, fp32
        elsewhere)."""
        if self.ns_dtype == "auto":
            return torch.bfloat16 if param.is_cuda else torch.float32
        return {"bf16": torch.bfloat16, "fp32": torch.float32}[self.ns_dtype]

    _ns_dtype = ns_dtype_for  # deprecated alias, kept while the bench still calls it

    def matrix_shapes(self) -> dict[tuple[int, int], int]:
        """How many matrices of each (rows, cols) one step orthogonalises, over all groups (what a
        benchmark needs to time Newton-Schulz on the real batches)."""
        counts: dict[tuple[int, int], int] = defaultdict(int)
        for group in self.param_groups:
            for p in group["params"]:
                for block in orthogonalize_blocks(p):
                    counts[(block, p.size(-1))] += p.size(0) if p.ndim == 3 else 1
        return dict(counts)

    def orthogonalize(self, stack: torch.Tensor, steps: int = 5) -> torch.Tensor:
        """Newton-Schulz on a [n, rows, cols] batch as ``step`` runs it: in ``ns_dtype_for`` and,
        on CUDA with ``compile_ns``, compiled."""
        dtype = self.ns_dtype_for(stack)
        if self._compile_wanted(stack):
            try:
                if self._compiled_ns is None:
                    self._compiled_ns = torch.compile(newton_schulz_orthogonalize)
                return self._compiled_ns(stack, steps=steps, dtype=dtype)
            except Exception as error:  # any compiler failure: the eager path still works
                self._compile_failed = True
                warnings.warn(
                    f"torch.compile of Newton-Schulz failed ({type(error).__name__}: {error}); "
                    "Muon runs it eagerly from now on.",
                    RuntimeWarning,
                    stacklevel=2,
                )
        return newton_schulz_orthogonalize(stack, steps=steps, dtype=dtype)

    def _compile_wanted(self, stack: torch.Tensor) -> bool:
        return stack.is_cuda and self.compile_ns and not self._compile_failed

    # --- the step ---------------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        offset = 0  # rotates which rank orthogonalises which matrix (see shared_orthogonalize)
        for index, group in enumerate(self.param_groups):
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                offset = self._step_group(index, group, params, offset)
        return loss

    def _step_group(
        self, index: int, group: dict[str, Any], params: list[torch.Tensor], offset: int
    ) -> int:
        mu, lr, wd = group["momentum"], group["lr"], group["weight_decay"]
        grads = [p.grad for p in params]
        buffers = []
        for p in params:
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p)
            buffers.append(state["momentum_buffer"])
        torch._foreach_mul_(buffers, mu)
        torch._foreach_add_(buffers, grads)

        sharded = _is_dtensor(params[0])
        if sharded:
            # FSDP2: Newton-Schulz needs whole matrices; gather each update (and apply it as a
            # whole-parameter update, resharded, below).
            updates = [
                _full(g.add(b, alpha=mu) if group["nesterov"] else b)
                for g, b in zip(grads, buffers, strict=True)
            ]
            grads, buffers = updates, []  # the update is already complete
        batches = self._batches(params, grads, buffers, sharded)

        if wd and not sharded:
            torch._foreach_mul_(params, 1 - lr * wd)
        deltas: dict[int, list[tuple[torch.Tensor, float]]] = defaultdict(list)  # sharded only
        for (rows, cols), batch in batches.items():
            stack = self._stack(index, (rows, cols), batch.grads)
            slots = list(stack.unbind(0))
            # The update U, written straight into the preallocated stack: G + mu B, or B.
            if group["nesterov"] and batch.buffers:
                torch._foreach_copy_(slots, batch.grads)
                torch._foreach_add_(slots, batch.buffers, alpha=mu)
            else:
                torch._foreach_copy_(slots, batch.buffers or batch.grads)
            orthogonalize = partial(self.orthogonalize, steps=group["ns_steps"])
            if _world_size() > 1:
                orthogonal = shared_orthogonalize(slots, orthogonalize, offset)
                offset += len(slots)
            else:
                orthogonal = list(orthogonalize(stack).unbind(0))
            scale = max(1.0, rows / cols) ** 0.5
            if sharded:
                for owner, o in zip(batch.owners, orthogonal, strict=True):
                    deltas[owner].append((o, scale))
            else:
                torch._foreach_add_(batch.params, orthogonal, alpha=-lr * scale)
        if sharded:
            _apply_sharded(params, deltas, lr, wd)
        return offset

    def _batches(
        self,
        params: list[torch.Tensor],
        grads: list[torch.Tensor],
        buffers: list[torch.Tensor],
        sharded: bool,
    ) -> dict[tuple[int, int], _ShapeBatch]:
        """Every matrix view of the group's parameters (and their gradients and momentum
        buffers), grouped by shape in first-seen order."""
        batches: dict[tuple[int, int], _ShapeBatch] = {}
        for i, p in enumerate(params):
            blocks = orthogonalize_blocks(p)
            grad_views = matrix_views(grads[i], blocks)
            param_views = [] if sharded else matrix_views(p, blocks)
            buffer_views = matrix_views(buffers[i], blocks) if buffers else []
            for j, grad_view in enumerate(grad_views):
                rows, cols = grad_view.shape
                batch = batches.setdefault((rows, cols), _ShapeBatch())
                batch.grads.append(grad_view)
                batch.owners.append(i)
                if param_views:
                    batch.params.append(param_views[j])
                if buffer_views:
                    batch.buffers.append(buffer_views[j])
        return batches

    def _stack(self, index: int, shape: tuple[int, int], like: list[torch.Tensor]) -> torch.Tensor:
        """The group's preallocated [n, rows, cols] buffer for ``len(like)`` matrices."""
        key = (index, shape, len(like), like[0].dtype, like[0].device)
        if key not in self._stacks:
            self._stacks[key] = like[0].new_empty((len(like), *shape))
        return self._stacks[key]


def _is_dtensor(tensor: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def _apply_sharded(
    params: list[torch.Tensor],
    deltas: dict[int, list[tuple[torch.Tensor, float]]],
    lr: float,
    wd: float,
) -> None:
    """FSDP2: assemble each parameter's whole update from its matrices and add this rank's shard."""
    for i, p in enumerate(params):
        full = torch.empty(p.shape, dtype=deltas[i][0][0].dtype, device=deltas[i][0][0].device)
        for view, (o, scale) in zip(
            matrix_views(full, orthogonalize_blocks(p)), deltas[i], strict=True
        ):
            view.copy_(o).mul_(scale)
        p.mul_(1 - lr * wd)
        p.add_(_like(full, p), alpha=-lr)


def _world_size() -> int:
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return 1
    return torch.distributed.get_world_size()


def _full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole matrix of an FSDP2-sharded DTensor (an all-gather); a plain tensor as it is."""
    return tensor.full_tensor() if _is_dtensor(tensor) else tensor  # type: ignore[attr-defined]


def _like(update: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """``update`` laid out like ``param``: this rank's shard of it when ``param`` is sharded."""
    from torch.distributed.tensor import distribute_tensor

    if not _is_dtensor(param):
        return update
    # src_data_rank=None: every rank already holds the same full update, so each just keeps its
    # own shard, without the broadcast distribute_tensor would otherwise do.
    return distribute_tensor(
        update,
        param.device_mesh,  # type: ignore[attr-defined]
        param.placements,  # type: ignore[attr-defined]
        src_data_rank=None,
    )


def shared_orthogonalize(
    matrices: list[torch.Tensor],
    orthogonalize: Callable[[torch.Tensor], torch.Tensor],
    offset: int = 0,
) -> list[torch.Tensor]:
    """Orthogonalise each matrix on one rank and give every rank all the results.

    Under data parallelism every rank holds the same (all-reduced) gradients, so running
    Newton-Schulz on all of them everywhere would repeat the same work world_size times. Matrix i
    goes to rank (offset + i) mod world_size instead; each rank orthogonalises its share in one
    batched call, and an all-gather hands every rank every result, so all ranks apply
    bitwise-identical updates. ``offset`` rotates the assignment from one group of matrices to
    the next, so groups smaller than the world do not always land on the first ranks.
    """
    dist = torch.distributed
    world, rank = dist.get_world_size(), dist.get_rank()
    owners = [(offset + i) % world for i in range(len(matrices))]
    mine = [m for m, owner in zip(matrices, owners, strict=True) if owner == rank]
    # all_gather needs one shape on every rank: pad each share to the largest one.
    slots = max(owners.count(r) for r in range(world))
    share = matrices[0].new_zeros((slots, *matrices[0].shape))
    if mine:
        share[: len(mine)] = orthogonalize(torch.stack(mine))
    gathered = [torch.empty_like(share) for _ in range(world)]
    dist.all_gather(gathered, share)
    taken = [0] * world
    results = []
    for owner in owners:
        results.append(gathered[owner][taken[owner]])
        taken[owner] += 1
    return results
