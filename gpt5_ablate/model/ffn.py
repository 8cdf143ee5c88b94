"""The ``ffn`` group: SwiGLU (Shazeer 2020, "GLU Variants Improve Transformer") or GPT-2's GELU MLP."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gpt5_ablate.config import ModelConfig
from gpt5_ablate.errors import ConfigError
from gpt5_ablate.model.registries import FFN


@dataclass
class SwiGLUConfig:
    name: str = "swiglu"
    # None: 8/3 x d_model rounded up to a multiple of `multiple_of`, which keeps the parameter
    # count equal to a 4 x d_model two-matrix MLP (as in LLaMA).
    hidden_dim: int | None = None
    multiple_of: int = 32

    def validate(self, model: ModelConfig) -> None:
        if self.hidden_dim is not None and self.hidden_dim <= 0:
            raise ConfigError(f"ffn.hidden_dim={self.hidden_dim} must be positive (or null).")
        if self.multiple_of <= 0:
            raise ConfigError(f"ffn.multiple_of={self.multiple_of} must be positive.")


@dataclass
class GeluMLPConfig:
    name: str = "gelu"
    hidden_dim: int | None = None  # None: 4 x d_model, as in GPT-2

    def validate(self, model: ModelConfig) -> None:
        if self.hidden_dim is not None and self.hidden_dim <= 0:
            raise ConfigError(f"ffn.hidden_dim={self.hidden_dim} must be positive (or null).")


@FFN.register("swiglu", SwiGLUConfig)
class SwiGLU(nn.Module):
    """down( silu(gate(x)) * up(x) )"""

    def __init__(self, cfg: SwiGLUConfig, model: ModelConfig) -> None:
        super().__init__()
        hidden = cfg.hidden_dim
        if hidden is None:
            hidden = -(-(8 * model.d_model // 3) // cfg.multiple_of) * cfg.multiple_of
        self.gate_proj = nn.Linear(model.d_model, hidden, bias=False)
        self.up_proj = nn.Linear(model.d_model, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, model.d_model, bias=False)
        self.down_proj.is_residual_projection = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


@FFN.register("gelu", GeluMLPConfig)
class GeluMLP(nn.Module):
    """down( gelu(up(x)) ), with biases, as in GPT-2."""

    def __init__(self, cfg: GeluMLPConfig, model: ModelConfig) -> None:
        super().__init__()
        hidden = cfg.hidden_dim or 4 * model.d_model
        self.up_proj = nn.Linear(model.d_model, hidden)
        self.down_proj = nn.Linear(hidden, model.d_model)
        self.down_proj.is_residual_projection = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.up_proj(x), approximate="tanh"))
