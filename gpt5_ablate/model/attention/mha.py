"""Multi-head attention (Vaswani et al. 2017): one key/value head per query head."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from gpt5_ablate.config import ModelConfig
from gpt5_ablate.errors import ConfigError
from gpt5_ablate.model.attention.base import AttentionContext, causal_attention
from gpt5_ablate.model.kv_cache import LayerKVCache
from gpt5_ablate.model.registries import ATTENTION


@dataclass
class MHAConfig:
    name: str = "mha"

    def validate(self, model: ModelConfig, rotary: bool) -> None:
        if rotary and model.head_dim % 2:
            raise ConfigError(
                f"RoPE needs an even head dim, but model.d_model={model.d_model} / "
                f"model.n_heads={model.n_heads} = {model.head_dim}; pick n_heads so the head dim "
                "is even, or use pos=learned."
            )


@ATTENTION.register("mha", MHAConfig)
class MultiHeadAttention(nn.Module):
    def __init__(self, cfg: MHAConfig, ctx: AttentionContext) -> None:
        super().__init__()
        model = ctx.model
        self.n_heads, self.head_dim = model.n_heads, model.head_dim
        self.qkv_proj = nn.Linear(model.d_model, 3 * model.d_model, bias=False)
        self.out_proj = nn.Linear(model.d_model, model.d_model, bias=False)
        self.out_proj.is_residual_projection = True
        self.qk_norm = ctx.make_qk_norm(self.head_dim)
        self.rotary = ctx.make_rotary(self.head_dim)

    def forward(self, x: torch.Tensor, cache: LayerKVCache | None = None) -> torch.Tensor:
        batch, seq_len, d_model = x.shape
        start_pos = cache.length if cache is not None else 0
        q, k, v = self.qkv_proj(x).split(d_model, dim=-1)
        # [B, T, H * D] -> [B, H, T, D]
        q, k, v = (
            t.view(batch, seq_len, self.n_heads, self.head_dim).transpose(1, 2) for t in (q, k, v)
        )
        q, k = self.qk_norm(q, k)
        if self.rotary is not None:
            q, k = self.rotary(q, start_pos), self.rotary(k, start_pos)
        if cache is not None:
            k, v = cache.extend(seq_dim=2, k=k, v=v)
        y = causal_attention(q, k, v, start_pos)
        return self.out_proj(y.transpose(1, 2).reshape(batch, seq_len, d_model))

    def kv_cache_elements_per_token(self) -> int:
        return 2 * self.n_heads * self.head_dim

    def attention_flops_per_token(self, context_len: int) -> int:
        """Forward FLOPs of q k^T and (attention weights) v for one query over ``context_len`` keys."""
        return 2 * self.n_heads * (self.head_dim + self.head_dim) * context_len
