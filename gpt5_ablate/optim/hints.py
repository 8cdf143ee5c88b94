"""Per-parameter hints that model code attaches for the optimizers.

Two attributes, set by the module that owns the parameter:

- ``param.optimizer_hint = "adamw" | "muon"``: overrides the default split rule of
  ``split_parameters``. It may also be set on a module (``module.optimizer_hint``), for the
  module's own (non-recursive) parameters: the MoE router does that (``router.optimizer_hint =
  "adamw"``: a matrix inside a block that goes to AdamW), which survives FSDP2 unaided since
  ``fully_shard`` keeps the modules;
- ``param.orthogonalize_blocks = (rows_1, rows_2, ...)``: the parameter stores several projections
  fused along its row dimension (dim -2), e.g. GQA's ``kv_proj.weight`` = K rows then V rows. Muon
  orthogonalises each block as its own matrix, with the LR scale of the block's own shape. The
  row counts must add up to the parameter's ``size(-2)``.

FSDP2's ``fully_shard`` replaces every parameter with a new (DTensor) Parameter and so drops such
attributes: ``collect_param_hints`` before wrapping and ``restore_param_hints`` after carry them
over (by parameter name).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

OPTIMIZER_HINT = "optimizer_hint"
ORTHOGONALIZE_BLOCKS = "orthogonalize_blocks"
HINT_ATTRIBUTES = (OPTIMIZER_HINT, ORTHOGONALIZE_BLOCKS)
OPTIMIZER_HINTS = ("adamw", "muon")


def optimizer_hint(param: torch.Tensor, owner: nn.Module | None = None) -> str | None:
    """The parameter's hint, else its owning module's, else None."""
    hint = getattr(param, OPTIMIZER_HINT, None)
    if hint is None and owner is not None:
        hint = getattr(owner, OPTIMIZER_HINT, None)
    if hint is not None and hint not in OPTIMIZER_HINTS:
        raise ValueError(
            f"optimizer_hint={hint!r} on a parameter of shape {tuple(param.shape)}; valid: "
            f"{', '.join(OPTIMIZER_HINTS)}"
        )
    return hint


def orthogonalize_blocks(param: torch.Tensor) -> tuple[int, ...]:
    """Row counts of the matrices ``param`` stores along dim -2 (the whole row range if unset)."""
    rows = param.size(-2)
    blocks = tuple(int(b) for b in getattr(param, ORTHOGONALIZE_BLOCKS, None) or (rows,))
    if sum(blocks) != rows or min(blocks) <= 0:
        raise ValueError(
            f"orthogonalize_blocks={blocks} must be positive row counts adding up to the "
            f"parameter's {rows} rows (shape {tuple(param.shape)})"
        )
    return blocks


def owners(model: nn.Module) -> dict[int, nn.Module]:
    """id(parameter) -> the module that registers it directly (the first, for shared ones)."""
    found: dict[int, nn.Module] = {}
    for module in model.modules():
        for param in module.parameters(recurse=False):
            found.setdefault(id(param), module)
    return found


def collect_param_hints(model: nn.Module) -> dict[str, dict[str, Any]]:
    """{parameter name: {attribute: value}} for every parameter carrying a hint."""
    hints: dict[str, dict[str, Any]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        found = {a: getattr(param, a) for a in HINT_ATTRIBUTES if hasattr(param, a)}
        if found:
            hints[name] = found
    return hints


def restore_param_hints(model: nn.Module, hints: dict[str, dict[str, Any]]) -> None:
    """Set the collected hints again on the parameters now registered under those names."""
    params = dict(model.named_parameters(remove_duplicate=False))
    for name, attributes in hints.items():
        if name in params:
            for attribute, value in attributes.items():
                setattr(params[name], attribute, value)
