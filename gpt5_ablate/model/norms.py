"""The ``norm`` group: what is applied to each head's query and key vectors.

QK-norm (Dehghani et al. 2023, "Scaling Vision Transformers to 22B Parameters"; used by OLMo 2,
Gemma 3 and Qwen 3) RMS-normalises every head's query and key before the rotation and the dot
product, which bounds the attention logits and removes a known source of loss spikes.

Contract of the group (``QKNorm`` below):

- the config subclasses ``ComponentConfig``; ``validate(ctx)`` gets a ``QKNormContext``;
- the module is built as ``Component(cfg, QKNormContext(head_dim))`` by the attention layer
  (through ``AttentionContext.make_qk_norm``), once per layer, with the width of the vectors it
  normalises (MLA: the per-head query/key width ``qk_nope_head_dim + qk_rope_head_dim``);
- it is called as ``q, k = norm(q, k)`` on [B, H, T, head_dim] tensors (H may differ between q
  and k, e.g. GQA) and must return each in its input dtype;
- ``normalizes_keys`` says whether it changes keys. MLA decodes in the absorbed form (the key
  up-projection folded into the query) only when it is False: a per-key normalisation cannot be
  folded into a query.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from gpt5_ablate.errors import ConfigError
from gpt5_ablate.model.registries import QK_NORM
from gpt5_ablate.registry import ComponentConfig


@dataclass
class QKNormContext:
    """What a QK-norm needs from the model: the width of each head's query/key vector."""

    head_dim: int


@runtime_checkable
class QKNorm(Protocol):
    normalizes_keys: ClassVar[bool]

    def __call__(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


class RMSNorm(nn.RMSNorm):
    """``nn.RMSNorm`` that casts its gain to the input's dtype.

    Under bf16 autocast a linear layer's output is bf16 while the gain stays fp32, and
    ``nn.RMSNorm`` then warns "Mismatch dtype between input and weight ... Cannot dispatch to
    fused implementation" and runs the slow composite path. Casting the (small) gain keeps the
    fused kernel, which accumulates in fp32 internally. The parameter and its name are
    ``nn.RMSNorm``'s, so checkpoints are unchanged.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.to(x.dtype) if self.weight is not None else None
        return F.rms_norm(x, self.normalized_shape, weight, self.eps)


@dataclass
class QKRMSNormConfig(ComponentConfig):
    name: str = "qk_rmsnorm"
    eps: float = 1e-6

    def validate(self, ctx: QKNormContext | None = None) -> None:
        if not self.eps > 0:
            raise ConfigError(f"norm.eps={self.eps} is invalid: it must be > 0 (e.g. 1e-6).")


@dataclass
class NoQKNormConfig(ComponentConfig):
    name: str = "none"


@QK_NORM.register("qk_rmsnorm", QKRMSNormConfig)
class QKRMSNorm(nn.Module):
    """RMSNorm over the last (head) dimension, with separate learned gains for q and k."""

    normalizes_keys: ClassVar[bool] = True

    def __init__(self, cfg: QKRMSNormConfig, ctx: QKNormContext) -> None:
        super().__init__()
        self.q_norm = RMSNorm(ctx.head_dim, eps=cfg.eps)
        self.k_norm = RMSNorm(ctx.head_dim, eps=cfg.eps)

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.q_norm(q), self.k_norm(k)


@QK_NORM.register("none", NoQKNormConfig)
class NoQKNorm(nn.Module):
    normalizes_keys: ClassVar[bool] = False

    def __init__(self, cfg: NoQKNormConfig, ctx: QKNormContext) -> None:
        super().__init__()

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return q, k
