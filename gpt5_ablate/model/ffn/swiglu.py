"""``ffn=swiglu``: down(silu(gate(x)) * up(x)) (Shazeer 2020, "GLU Variants Improve Transformer")."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gpt5_ablate.config import ModelConfig
from gpt5_ablate.errors import ConfigError
from gpt5_ablate.model.ffn.base import DenseFFN, FFNConfig, dense_swiglu_width
from gpt5_ablate.model.registries import FFN


@dataclass
class SwiGLUConfig(FFNConfig):
    name: str = "swiglu"
    # hidden_dim None: 8/3 x d_model rounded up to a multiple of `multiple_of`, which keeps the
    # parameter count equal to a 4 x d_model two-matrix MLP (as in LLaMA).
    multiple_of: int = 32

    def validate(self, ctx: ModelConfig | None = None) -> None:
        super().validate(ctx)
        if self.multiple_of <= 0:
            raise ConfigError(
                f"ffn.multiple_of={self.multiple_of} is invalid: it must be a positive integer."
            )

    def resolved_hidden_dim(self, model: ModelConfig) -> int:
        if self.hidden_dim is not None:
            return self.hidden_dim
        return dense_swiglu_width(model.d_model, self.multiple_of)


@FFN.register("swiglu", SwiGLUConfig)
class SwiGLU(DenseFFN):
    """down( silu(gate(x)) * up(x) ), no biases."""

    def __init__(self, cfg: SwiGLUConfig, ctx: ModelConfig) -> None:
        super().__init__()
        self.hidden_dim = cfg.resolved_hidden_dim(ctx)
        self.gate_proj = nn.Linear(ctx.d_model, self.hidden_dim, bias=False)
        self.up_proj = nn.Linear(ctx.d_model, self.hidden_dim, bias=False)
        self.down_proj = nn.Linear(self.hidden_dim, ctx.d_model, bias=False)
        self.down_proj.is_residual_projection = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # [B, T, d] -> [B, T, hidden] -> [B, T, d]
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
