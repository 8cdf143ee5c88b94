"""The ``pos`` group: rotary embeddings (RoPE) or a learned absolute position table.

A position component does one or both of two things: add a vector to the token embeddings at the
input (learned positions), or hand each attention layer a rotation for its query/key vectors
(RoPE, Su et al. 2021, "RoFormer"). Attention layers ask for a rotary of the width they need, so
MLA can rotate only its decoupled rope part.

Contract of the group (``PositionEncoding`` below):

- the config subclasses ``ComponentConfig``; ``validate(ctx)`` gets the model preset;
- the module is built once per model as ``Component(cfg, ctx)`` where ``ctx`` is the
  ``ModelConfig`` itself (as for the ``ffn`` group: positions need nothing else);
- ``rotary`` (a class attribute, read before anything is built) says whether it rotates queries
  and keys; ``input_embedding(start_pos, seq_len)`` returns [seq_len, d_model] or None;
  ``make_rotary(dim)`` returns a ``Rotary`` of that width or None. Its parameters (a position
  table) are not under ``blocks.``, so the optimizer treats them as embeddings (AdamW).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

import torch
from torch import nn

from gpt5_ablate.config import ModelConfig
from gpt5_ablate.errors import ConfigError
from gpt5_ablate.model.registries import POSITIONS
from gpt5_ablate.registry import ComponentConfig


@dataclass
class RopeConfig(ComponentConfig):
    name: str = "rope"
    rope_theta: float = 10000.0

    def validate(self, ctx: ModelConfig | None = None) -> None:
        if not self.rope_theta > 0:
            raise ConfigError(
                f"pos.rope_theta={self.rope_theta} must be positive (10000 in RoFormer/LLaMA)."
            )


@dataclass
class LearnedPositionsConfig(ComponentConfig):
    name: str = "learned"


class Rotary(nn.Module):
    """Rotates pairs of channels (i, i + dim/2) of a [..., time, dim] tensor by angles
    position * theta^(-2i/dim) (the "rotate half" layout)."""

    def __init__(self, dim: int, max_seq_len: int, theta: float) -> None:
        super().__init__()
        inv_freq = theta ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
        angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float64), inv_freq)
        # Tables are derived, not learned: not saved in checkpoints.
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def forward(
        self, x: torch.Tensor, start_pos: int = 0, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Rotate ``x`` [..., T, dim] as if at positions ``start_pos .. start_pos + T - 1``, or at
        the given ``positions`` [T] (e.g. the slots of a ring-buffer KV cache)."""
        if positions is None:
            cos = self.cos[start_pos : start_pos + x.size(-2)]
            sin = self.sin[start_pos : start_pos + x.size(-2)]
        else:
            cos, sin = self.cos[positions], self.sin[positions]
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)  # [T, dim/2]
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


@runtime_checkable
class PositionEncoding(Protocol):
    rotary: ClassVar[bool]

    def input_embedding(self, start_pos: int, seq_len: int) -> torch.Tensor | None: ...

    def make_rotary(self, dim: int) -> Rotary | None: ...


@POSITIONS.register("rope", RopeConfig)
class RotaryPositions(nn.Module):
    rotary: ClassVar[bool] = True

    def __init__(self, cfg: RopeConfig, model: ModelConfig) -> None:
        super().__init__()
        self.theta = cfg.rope_theta
        self.max_seq_len = model.max_seq_len

    def input_embedding(self, start_pos: int, seq_len: int) -> torch.Tensor | None:
        return None

    def make_rotary(self, dim: int) -> Rotary | None:
        return Rotary(dim, self.max_seq_len, self.theta)


@POSITIONS.register("learned", LearnedPositionsConfig)
class LearnedPositions(nn.Module):
    rotary: ClassVar[bool] = False

    def __init__(self, cfg: LearnedPositionsConfig, model: ModelConfig) -> None:
        super().__init__()
        self.table = nn.Embedding(model.max_seq_len, model.d_model)

    def input_embedding(self, start_pos: int, seq_len: int) -> torch.Tensor | None:
        positions = torch.arange(start_pos, start_pos + seq_len, device=self.table.weight.device)
        return self.table(positions)

    def make_rotary(self, dim: int) -> Rotary | None:
        return None
