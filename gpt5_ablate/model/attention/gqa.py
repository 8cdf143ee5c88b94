"""Grouped-query attention (Ainslie et al. 2023): ``n_kv_heads`` key/value heads, each shared by
``n_heads / n_kv_heads`` query heads, which shrinks the KV cache by that factor."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from gpt5_ablate.config import ModelConfig
from gpt5_ablate.errors import ConfigError
from gpt5_ablate.model.attention.base import AttentionContext, causal_attention
from gpt5_ablate.model.attention.mha import MHAConfig
from gpt5_ablate.model.kv_cache import LayerKVCache
from gpt5_ablate.model.registries import ATTENTION


@dataclass
class GQAConfig:
    name: str = "gqa"
    n_kv_heads: int = 2

    def validate(self, model: ModelConfig, rotary: bool) -> None:
        if self.n_kv_heads <= 0:
            raise ConfigError(f"attention.n_kv_heads={self.n_kv_heads} must be a positive integer.")
        if self.n_kv_heads > model.n_heads:
            raise ConfigError(
                f"attention.n_kv_heads={self.n_kv_heads} is larger than model.n_heads="
                f"{model.n_heads}; GQA needs 1 <= n_kv_heads <= n_heads."
            )
        if model.n_heads % self.n_kv_heads:
            valid = [d for d in range(1, model.n_heads + 1) if model.n_heads % d == 0]
            raise ConfigError(
                f"model.n_heads={model.n_heads} is not divisible by attention.n_kv_heads="
                f"{self.n_kv_heads}; valid n_kv_heads: {', '.join(map(str, valid))}."
            )
        MHAConfig.validate(MHAConfig(), model, rotary)


@ATTENTION.register("gqa", GQAConfig)
class GroupedQueryAttention(nn.Module):
    def __init__(self, cfg: GQAConfig, ctx: AttentionContext) -> None:
        super().__init__()
        model = ctx.model
        self.n_heads, self.n_kv_heads, self.head_dim = model.n_heads, cfg.n_kv_heads, model.head_dim
        self.q_proj = nn.Linear(model.d_model, self.n_heads * self.head_dim, bias=False)
        self.kv_proj = nn.Linear(model.d_model, 2 * self.n_kv_heads * self.head_dim, bias=False)
        self.out_proj = nn.Linear(self.n_heads * self.head_dim, model.d_model, bias=False)
        self.out_proj.is_residual_projection = True
        self.qk_norm = ctx.make_qk_norm(self.head_dim)
        self.rotary = ctx.make_rotary(self.head_dim)

    def forward(self, x: torch.Tensor, cache: LayerKVCache | None = None) -> torch.Tensor:
        batch, seq_len, _ = x.shape
        start_pos = cache.length if cache is not None else 0
        q = self.q_proj(x).view(batch, seq_len, self.n_heads, self.head_dim).transpose(1, 2)
        kv = (
            self.kv_proj(x).view(batch, seq_len, 2 * self.n_kv_heads, self.head_dim).transpose(1, 2)
        )
        k, v = kv.split(self.n_kv_heads, dim=1)  # [B, Hkv, T, D] each
        q, k = self.qk_norm(q, k)
        if self.rotary is not None:
            q, k = self.rotary(q, start_pos), self.rotary(k, start_pos)
        if cache is not None:
            k, v = cache.extend(seq_dim=2, k=k, v=v)
        # SDPA shares each K/V head with its group of n_heads / n_kv_heads query heads.
        y = causal_attention(q, k, v, start_pos)
        return self.out_proj(y.transpose(1, 2).reshape(batch, seq_len, -1))

    def kv_cache_elements_per_token(self) -> int:
        return 2 * self.n_kv_heads * self.head_dim

    def attention_flops_per_token(self, context_len: int) -> int:
        return 2 * self.n_heads * (self.head_dim + self.head_dim) * context_len
