"""The ``optimizer`` group: ``muon_adamw`` (Muon for hidden matrices, AdamW for the rest) and
``adamw`` (AdamW everywhere). Each builder is called as ``OPTIMIZER.get(name)(cfg, model)`` and
returns a list of torch optimizers; the training loop steps and schedules them all alike.

The parameter split (``split_parameters``), one rule per parameter, first match wins:

1. an ``optimizer_hint`` set by the model on the parameter or on the module that owns it ("muon"
   or "adamw"; e.g. the MoE router is a matrix inside a block but is marked "adamw"): a "muon"
   matrix is a hidden matrix; an "adamw" one joins the embeddings and head (AdamW with weight
   decay);
2. fewer than 2 dimensions (norm gains, biases, scalars, attention-sink logits): ``vectors``
   (AdamW, no weight decay);
3. a 2-D matrix or a 3-D batch of matrices (dim 0 = batch, e.g. MoE experts [E, out, in]) inside
   the transformer blocks (name ``blocks.*``): ``hidden_matrices`` (Muon);
4. everything else (token and position tables, the output head): ``embeddings_and_head``
   (AdamW with weight decay).

A hint that does not fit the shape ("muon" on a vector) is ignored: rules 2-4 apply. Hints are
attributes on parameters or modules (see ``gpt5_ablate.optim.hints``, which also says how to keep
parameter hints through FSDP2's parameter swap).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from gpt5_ablate.errors import ConfigError
from gpt5_ablate.optim.hints import optimizer_hint, owners
from gpt5_ablate.optim.muon import NS_DTYPES, Muon
from gpt5_ablate.optim.registries import OPTIMIZER
from gpt5_ablate.registry import ComponentConfig


@dataclass
class ParamSplit:
    """Named parameters by the optimizer rule that applies to them."""

    hidden_matrices: list[tuple[str, nn.Parameter]] = field(default_factory=list)  # Muon
    # AdamW with weight decay: embeddings, head, and matrices hinted "adamw" (the MoE router)
    embeddings_and_head: list[tuple[str, nn.Parameter]] = field(default_factory=list)
    vectors: list[tuple[str, nn.Parameter]] = field(default_factory=list)  # gains, biases, scalars


def split_parameters(model: nn.Module) -> ParamSplit:
    """Each trainable parameter into one group, by the rule in the module docstring."""
    split = ParamSplit()
    owner = owners(model)
    for name, p in model.named_parameters():  # shared (tied) tensors are listed once
        if not p.requires_grad:
            continue
        hint = optimizer_hint(p, owner.get(id(p)))
        if hint == "muon" and p.ndim in (2, 3):
            split.hidden_matrices.append((name, p))
        elif hint == "adamw" and p.ndim >= 2:
            split.embeddings_and_head.append((name, p))
        elif p.ndim < 2:
            split.vectors.append((name, p))
        elif name.startswith("blocks.") and p.ndim in (2, 3):
            split.hidden_matrices.append((name, p))
        else:
            split.embeddings_and_head.append((name, p))
    return split


def _params(named: list[tuple[str, nn.Parameter]]) -> list[nn.Parameter]:
    return [p for _, p in named]


def _fused_ok(model: nn.Module) -> bool:
    return next(model.parameters()).is_cuda


@dataclass
class AdamWConfig(ComponentConfig):
    name: str = "adamw"
    lr: float = 3e-3
    lr_scale: float = 1.0  # multiplies every learning rate (for LR sweeps)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    weight_decay: float = 0.1
    # Rate of the embeddings, head, gains and biases: the parameters muon_adamw hands to its AdamW
    # side (at its adamw_lr). None: everything at ``lr``. Setting it lets an optimizer comparison
    # tune the same two rates on both arms, so it compares the matrices' update rule only.
    embed_lr: float | None = None

    def validate(self, ctx: nn.Module | None = None) -> None:
        _check_positive("lr", self.lr)
        _check_positive("lr_scale", self.lr_scale)
        if self.embed_lr is not None:
            _check_positive("embed_lr", self.embed_lr)
        _check_betas(self.betas)
        if self.weight_decay < 0:
            raise ConfigError(f"optimizer.weight_decay={self.weight_decay} must be >= 0.")


@dataclass
class MuonAdamWConfig(ComponentConfig):
    name: str = "muon_adamw"
    lr: float = 0.02  # Muon's learning rate (hidden matrices)
    momentum: float = 0.95
    nesterov: bool = True
    ns_steps: int = 5
    ns_dtype: str = "auto"  # auto: bf16 on CUDA, fp32 on CPU (where bf16 matmuls are emulated)
    compile_ns: bool = True  # torch.compile Newton-Schulz on CUDA (CPU always runs it eagerly)
    weight_decay: float = 0.1  # Muon's decoupled decay: AdamW's coefficient on matrices
    lr_scale: float = 1.0  # multiplies every learning rate (for LR sweeps)
    adamw_lr: float = 3e-3  # embeddings, head, gains, biases
    adamw_betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    adamw_eps: float = 1e-8
    adamw_weight_decay: float = 0.1

    def validate(self, ctx: nn.Module | None = None) -> None:
        for key in ("lr", "lr_scale", "adamw_lr"):
            _check_positive(key, getattr(self, key))
        if self.weight_decay < 0 or self.adamw_weight_decay < 0:
            raise ConfigError(
                f"optimizer.weight_decay={self.weight_decay} and optimizer.adamw_weight_decay="
                f"{self.adamw_weight_decay} must both be >= 0."
            )
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"optimizer.momentum={self.momentum} must be within [0, 1).")
        if self.ns_dtype not in NS_DTYPES:
            raise ConfigError(
                f"optimizer.ns_dtype={self.ns_dtype!r} is invalid. Valid choices: {', '.join(NS_DTYPES)}."
            )
        if self.ns_steps < 1:
            raise ConfigError(f"optimizer.ns_steps={self.ns_steps} must be >= 1.")
        _check_betas(self.adamw_betas)


def _check_positive(key: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"optimizer.{key}={value} must be a positive number.")


def _check_betas(betas: list[float]) -> None:
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        raise ConfigError(f"optimizer betas={list(betas)} must be two numbers within [0, 1).")


@OPTIMIZER.register("adamw", AdamWConfig)
def build_adamw(cfg: AdamWConfig, model: nn.Module) -> list[torch.optim.Optimizer]:
    """AdamW everywhere; weight decay only on matrices (embeddings and head included)."""
    split = split_parameters(model)
    if cfg.embed_lr is None:
        # Two groups, as before embed_lr existed, so older checkpoints' optimizer state loads.
        matrices = _params(split.hidden_matrices) + _params(split.embeddings_and_head)
        groups = [
            {"params": matrices, "weight_decay": cfg.weight_decay},
            {"params": _params(split.vectors), "weight_decay": 0.0},
        ]
    else:
        embed_lr = cfg.embed_lr * cfg.lr_scale
        groups = [  # the hidden matrices first: train/lr logs the first group's rate
            {"params": _params(split.hidden_matrices), "weight_decay": cfg.weight_decay},
            {
                "params": _params(split.embeddings_and_head),
                "weight_decay": cfg.weight_decay,
                "lr": embed_lr,
            },
            {"params": _params(split.vectors), "weight_decay": 0.0, "lr": embed_lr},
        ]
    return [
        torch.optim.AdamW(
            groups,
            lr=cfg.lr * cfg.lr_scale,
            betas=tuple(cfg.betas),
            eps=cfg.eps,
            fused=_fused_ok(model),
        )
    ]


@OPTIMIZER.register("muon_adamw", MuonAdamWConfig)
def build_muon_adamw(cfg: MuonAdamWConfig, model: nn.Module) -> list[torch.optim.Optimizer]:
    split = split_parameters(model)
    muon = Muon(
        _params(split.hidden_matrices),
        lr=cfg.lr * cfg.lr_scale,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        weight_decay=cfg.weight_decay,
        ns_steps=cfg.ns_steps,
        ns_dtype=cfg.ns_dtype,
        compile_ns=cfg.compile_ns,
    )
    adamw = torch.optim.AdamW(
        [
            {"params": _params(split.embeddings_and_head), "weight_decay": cfg.adamw_weight_decay},
            {"params": _params(split.vectors), "weight_decay": 0.0},
        ],
        lr=cfg.adamw_lr * cfg.lr_scale,
        betas=tuple(cfg.adamw_betas),
        eps=cfg.adamw_eps,
        fused=_fused_ok(model),
    )
    return [muon, adamw]
