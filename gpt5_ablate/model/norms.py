"""The ``norm`` group: what is applied to each head's query and key vectors.

QK-norm (Dehghani et al. 2023, "Scaling Vision Transformers to 22B Parameters"; used by OLMo 2,
Gemma 3 and Qwen 3) RMS-normalises every head's query and key before the rotation and the dot
product, which bounds the attention logits and removes a known source of loss spikes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from gpt5_ablate.model.registries import QK_NORM


@dataclass
class QKRMSNormConfig:
    name: str = "qk_rmsnorm"
    eps: float = 1e-6


@dataclass
class NoQKNormConfig:
    name: str = "none"


@QK_NORM.register("qk_rmsnorm", QKRMSNormConfig)
class QKRMSNorm(nn.Module):
    """RMSNorm over the last (head) dimension, with separate learned gains for q and k."""

    def __init__(self, cfg: QKRMSNormConfig, head_dim: int) -> None:
        super().__init__()
        self.q_norm = nn.RMSNorm(head_dim, eps=cfg.eps)
        self.k_norm = nn.RMSNorm(head_dim, eps=cfg.eps)

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.q_norm(q), self.k_norm(k)


@QK_NORM.register("none", NoQKNormConfig)
class NoQKNorm(nn.Module):
    def __init__(self, cfg: NoQKNormConfig, head_dim: int) -> None:
        super().__init__()

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return q, k
