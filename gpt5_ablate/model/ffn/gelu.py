"""``ffn=gelu``: GPT-2's MLP, down(gelu(up(x))) with biases (Radford et al. 2019)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gpt5_ablate.config import ModelConfig
from gpt5_ablate.model.ffn.base import DenseFFN, FFNConfig
from gpt5_ablate.model.registries import FFN


@dataclass
class GeluMLPConfig(FFNConfig):
    name: str = "gelu"
    # hidden_dim None: 4 x d_model, as in GPT-2.

    def resolved_hidden_dim(self, model: ModelConfig) -> int:
        return self.hidden_dim if self.hidden_dim is not None else 4 * model.d_model


@FFN.register("gelu", GeluMLPConfig)
class GeluMLP(DenseFFN):
    """down( gelu(up(x)) ), with biases, as in GPT-2."""

    def __init__(self, cfg: GeluMLPConfig, ctx: ModelConfig) -> None:
        super().__init__()
        self.hidden_dim = cfg.resolved_hidden_dim(ctx)
        self.up_proj = nn.Linear(ctx.d_model, self.hidden_dim)
        self.down_proj = nn.Linear(self.hidden_dim, ctx.d_model)
        self.down_proj.is_residual_projection = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # [B, T, d] -> [B, T, hidden] -> [B, T, d]
        return self.down_proj(F.gelu(self.up_proj(x), approximate="tanh"))
