"""Multi-head latent attention (DeepSeek-AI 2024, "DeepSeek-V2", section 2.1).

Keys and values are compressed into one small latent per token,
    c_kv = RMSNorm(W_dkv x)                          [kv_lora_rank]
and rebuilt per head by an up-projection,
    [k_nope_h, v_h] = W_ukv c_kv.
Because RoPE does not commute with that up-projection, position enters through a separate
rotary key shared by all heads (the "decoupled" key), k_rope = RoPE(W_kr x) [qk_rope_head_dim],
concatenated to every head's key; the queries get a matching rotary part. Queries may be
low-rank too: q = W_uq RMSNorm(W_dq x) when q_lora_rank > 0.

The KV cache holds only c_kv and k_rope (kv_lora_rank + qk_rope_head_dim numbers per token and
layer) instead of 2 x n_heads x head_dim: that is MLA's point. Decoding rebuilds the keys and
values from the cached latent (rather than absorbing W_ukv into the query), which keeps QK-norm
exact. With learned positions there is no rotary part.

Defaults follow DeepSeek-V2's proportions: rotary part = head_dim / 2 (64 of 128); the latent is
2 x head_dim here (DeepSeek-V2 uses 4 x head_dim with 128 heads), so that at these small head counts
the cache stays below GQA's with 2 KV heads.
"""

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
class MLAConfig:
    name: str = "mla"
    kv_lora_rank: int | None = None  # None: 2 x head_dim
    q_lora_rank: int = 0  # 0: full-rank query projection
    qk_rope_head_dim: int | None = None  # None: head_dim / 2 (ignored with learned positions)
    qk_nope_head_dim: int | None = None  # None: head_dim
    v_head_dim: int | None = None  # None: head_dim
    norm_eps: float = 1e-6

    def resolved(self, model: ModelConfig, rotary: bool) -> MLAConfig:
        """The config with every None replaced by its default for this model."""
        head_dim = model.head_dim
        rope_dim = self.qk_rope_head_dim if self.qk_rope_head_dim is not None else head_dim // 2
        return MLAConfig(
            name=self.name,
            kv_lora_rank=self.kv_lora_rank if self.kv_lora_rank is not None else 2 * head_dim,
            q_lora_rank=self.q_lora_rank,
            qk_rope_head_dim=rope_dim if rotary else 0,
            qk_nope_head_dim=head_dim if self.qk_nope_head_dim is None else self.qk_nope_head_dim,
            v_head_dim=head_dim if self.v_head_dim is None else self.v_head_dim,
            norm_eps=self.norm_eps,
        )

    def validate(self, model: ModelConfig, rotary: bool) -> None:
        r = self.resolved(model, rotary)
        for key in ("kv_lora_rank", "qk_nope_head_dim", "v_head_dim"):
            if getattr(r, key) <= 0:
                raise ConfigError(f"attention.{key}={getattr(r, key)} must be a positive integer.")
        for key in ("q_lora_rank", "qk_rope_head_dim"):
            if getattr(r, key) < 0:
                raise ConfigError(f"attention.{key}={getattr(r, key)} must be >= 0.")
        for key in ("kv_lora_rank", "q_lora_rank"):
            if getattr(r, key) > model.d_model:
                raise ConfigError(
                    f"attention.{key}={getattr(r, key)} is larger than model.d_model="
                    f"{model.d_model}; a low-rank projection must compress: use 1..{model.d_model}"
                    + (" (or 0 to disable)." if key == "q_lora_rank" else ".")
                )
        if rotary and r.qk_rope_head_dim % 2:
            derived = (
                f" (derived as head_dim // 2, with head_dim = model.d_model={model.d_model} / "
                f"model.n_heads={model.n_heads} = {model.head_dim})"
                if self.qk_rope_head_dim is None
                else ""
            )
            raise ConfigError(
                f"attention.qk_rope_head_dim={r.qk_rope_head_dim}{derived} must be even for RoPE "
                "(channels are rotated in pairs); set an even attention.qk_rope_head_dim, choose "
                "n_heads so the head dim is a multiple of 4, or use pos=learned."
            )
        if rotary and r.qk_rope_head_dim == 0:
            raise ConfigError(
                "attention.qk_rope_head_dim=0 with pos=rope leaves MLA without any position "
                "signal; use a positive even value or pos=learned."
            )


@ATTENTION.register("mla", MLAConfig)
class MultiHeadLatentAttention(nn.Module):
    def __init__(self, cfg: MLAConfig, ctx: AttentionContext) -> None:
        super().__init__()
        model = ctx.model
        cfg = cfg.resolved(model, ctx.rotary)
        self.n_heads = model.n_heads
        self.kv_lora_rank, self.q_lora_rank = cfg.kv_lora_rank, cfg.q_lora_rank
        self.nope_dim, self.rope_dim, self.v_dim = (
            cfg.qk_nope_head_dim,
            cfg.qk_rope_head_dim,
            cfg.v_head_dim,
        )
        self.qk_dim = self.nope_dim + self.rope_dim
        if self.q_lora_rank > 0:
            self.q_down = nn.Linear(model.d_model, self.q_lora_rank, bias=False)
            self.q_norm = nn.RMSNorm(self.q_lora_rank, eps=cfg.norm_eps)
            self.q_up = nn.Linear(self.q_lora_rank, self.n_heads * self.qk_dim, bias=False)
        else:
            self.q_proj = nn.Linear(model.d_model, self.n_heads * self.qk_dim, bias=False)
        # One matmul produces the latent and the shared rotary key.
        self.kv_down = nn.Linear(model.d_model, self.kv_lora_rank + self.rope_dim, bias=False)
        self.kv_norm = nn.RMSNorm(self.kv_lora_rank, eps=cfg.norm_eps)
        self.kv_up = nn.Linear(
            self.kv_lora_rank, self.n_heads * (self.nope_dim + self.v_dim), bias=False
        )
        self.out_proj = nn.Linear(self.n_heads * self.v_dim, model.d_model, bias=False)
        self.out_proj.is_residual_projection = True
        self.qk_norm = ctx.make_qk_norm(self.qk_dim)
        self.rotary = ctx.make_rotary(self.rope_dim) if self.rope_dim else None

    def _queries(self, x: torch.Tensor) -> torch.Tensor:
        if self.q_lora_rank > 0:
            return self.q_up(self.q_norm(self.q_down(x)))
        return self.q_proj(x)

    def forward(self, x: torch.Tensor, cache: LayerKVCache | None = None) -> torch.Tensor:
        batch, seq_len, _ = x.shape
        start_pos = cache.length if cache is not None else 0
        q = self._queries(x).view(batch, seq_len, self.n_heads, self.qk_dim).transpose(1, 2)

        latent, k_rope = self.kv_down(x).split([self.kv_lora_rank, self.rope_dim], dim=-1)
        latent = self.kv_norm(latent)
        if cache is not None:  # cache the latent and the un-rotated shared key only
            if self.rope_dim:
                latent, k_rope = cache.extend(seq_dim=1, latent=latent, k_rope=k_rope)
            else:
                (latent,) = cache.extend(seq_dim=1, latent=latent)
        total_len = latent.size(1)

        # Rebuild per-head keys and values from the latent: [B, H, S, nope + v].
        kv = self.kv_up(latent).view(batch, total_len, self.n_heads, self.nope_dim + self.v_dim)
        k_nope, v = kv.transpose(1, 2).split([self.nope_dim, self.v_dim], dim=-1)
        if self.rope_dim:
            shared = k_rope.unsqueeze(1).expand(batch, self.n_heads, total_len, self.rope_dim)
            k = torch.cat((k_nope, shared), dim=-1)
        else:
            k = k_nope

        q, k = self.qk_norm(q, k)  # over each head's full query/key, before rotation
        if self.rotary is not None:
            q = torch.cat(
                (q[..., : self.nope_dim], self.rotary(q[..., self.nope_dim :], start_pos)), dim=-1
            )
            k = torch.cat(
                (k[..., : self.nope_dim], self.rotary(k[..., self.nope_dim :], 0)), dim=-1
            )
        y = causal_attention(q, k, v, start_pos)
        return self.out_proj(y.transpose(1, 2).reshape(batch, seq_len, self.n_heads * self.v_dim))

    def kv_cache_elements_per_token(self) -> int:
        return self.kv_lora_rank + self.rope_dim

    def attention_flops_per_token(self, context_len: int) -> int:
        return 2 * self.n_heads * (self.qk_dim + self.v_dim) * context_len
