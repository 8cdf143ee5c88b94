"""Grouped-query attention (Ainslie et al. 2023, "GQA"): ``n_kv_heads`` key/value heads, each
shared by ``n_heads / n_kv_heads`` query heads, which shrinks the KV cache by that factor.

Multi-head attention (Vaswani et al. 2017) is the case ``n_kv_heads = n_heads``: the ``mha``
option is this module with a config whose KV head count follows ``model.n_heads``.

Weights: ``q_proj`` [H * hd, d], ``kv_proj`` [2 * Hkv * hd, d] (K rows, then V rows, so
``kv_proj.weight.orthogonalize_blocks = (Hkv * hd, Hkv * hd)``), ``out_proj`` [d, H * hd].
Checkpoints of the former separate MHA module stored one fused ``qkv_proj`` (rows: Q | K | V);
``_load_from_state_dict`` splits it into ``q_proj`` and ``kv_proj`` on load.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gpt5_ablate.config import ModelConfig
from gpt5_ablate.errors import ConfigError
from gpt5_ablate.model.attention.base import AttentionContext, attend, visible_context
from gpt5_ablate.model.kv_cache import KeyIndex, LayerKVCache
from gpt5_ablate.model.registries import ATTENTION
from gpt5_ablate.registry import ComponentConfig


def _check_rope_head_dim(ctx: AttentionContext) -> None:
    model = ctx.model
    if ctx.rotary and model.head_dim % 2:
        raise ConfigError(
            f"RoPE needs an even head dim, but model.d_model={model.d_model} / "
            f"model.n_heads={model.n_heads} = {model.head_dim}; pick n_heads so the head dim "
            "is even, or use pos=learned."
        )


@dataclass
class MHAConfig(ComponentConfig):
    """Multi-head attention: one key/value head per query head."""

    name: str = "mha"

    def kv_heads(self, model: ModelConfig) -> int:
        return model.n_heads

    def validate(self, ctx: AttentionContext) -> None:
        _check_rope_head_dim(ctx)


@dataclass
class GQAConfig(ComponentConfig):
    name: str = "gqa"
    n_kv_heads: int = 2

    def kv_heads(self, model: ModelConfig) -> int:
        return self.n_kv_heads

    def validate(self, ctx: AttentionContext) -> None:
        model = ctx.model
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
        _check_rope_head_dim(ctx)


@ATTENTION.register("mha", MHAConfig)
@ATTENTION.register("gqa", GQAConfig)
class GroupedQueryAttention(nn.Module):
    def __init__(self, cfg: GQAConfig | MHAConfig, ctx: AttentionContext) -> None:
        super().__init__()
        model = ctx.model
        self.n_heads, self.head_dim = model.n_heads, model.head_dim
        self.n_kv_heads = cfg.kv_heads(model)
        self.window = ctx.window
        kv_rows = self.n_kv_heads * self.head_dim
        self.q_proj = nn.Linear(model.d_model, self.n_heads * self.head_dim, bias=False)
        self.kv_proj = nn.Linear(model.d_model, 2 * kv_rows, bias=False)
        self.kv_proj.weight.orthogonalize_blocks = (kv_rows, kv_rows)  # K, then V
        self.out_proj = nn.Linear(self.n_heads * self.head_dim, model.d_model, bias=False)
        self.out_proj.is_residual_projection = True
        self.qk_norm = ctx.make_qk_norm(self.head_dim)
        self.rotary = ctx.make_rotary(self.head_dim)
        self.sinks = ctx.make_sinks()

    def forward(self, x: torch.Tensor, cache: LayerKVCache | None = None) -> torch.Tensor:
        batch, seq_len, _ = x.shape
        start_pos = cache.length if cache is not None else 0
        q = self.q_proj(x).view(batch, seq_len, self.n_heads, self.head_dim).transpose(1, 2)
        kv = self.kv_proj(x).view(batch, seq_len, 2 * self.n_kv_heads, self.head_dim)
        k, v = kv.transpose(1, 2).split(self.n_kv_heads, dim=1)  # [B, Hkv, T, hd] each
        q, k = self.qk_norm(q, k)
        if self.rotary is not None:
            q, k = self.rotary(q, start_pos), self.rotary(k, start_pos)
        if cache is not None:
            (k, v), index = cache.update(seq_dim=2, k=k, v=v)
        else:
            index = KeyIndex(0, None, self.window)
        # SDPA shares each K/V head with its group of n_heads / n_kv_heads query heads.
        y = attend(q, k, v, index, sink=self.sinks() if self.sinks is not None else None)
        return self.out_proj(y.transpose(1, 2).reshape(batch, seq_len, -1))  # [B, T, d]

    def kv_cache_elements_per_token(self) -> int:
        return 2 * self.n_kv_heads * self.head_dim

    def attention_flops_per_token(self, context_len: int) -> int:
        """Forward FLOPs of q k^T and (attention weights) v for one query."""
        keys = visible_context(self.window, context_len)
        return 2 * self.n_heads * (self.head_dim + self.head_dim) * keys

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        fused = state_dict.pop(prefix + "qkv_proj.weight", None)
        if fused is not None:  # the former MHA module: rows Q | K | V
            q_rows = self.n_heads * self.head_dim
            state_dict[prefix + "q_proj.weight"] = fused[:q_rows]
            state_dict[prefix + "kv_proj.weight"] = fused[q_rows:]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
