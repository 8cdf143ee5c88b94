"""Multi-head latent attention (DeepSeek-AI 2024, "DeepSeek-V2", section 2.1).

Keys and values are compressed into one small latent per token,
    c_kv = RMSNorm(W_dkv x)                          [kv_lora_rank]
and rebuilt per head by up-projections,
    k_nope_h = W_uk_h c_kv,   v_h = W_uv_h c_kv.
Because RoPE does not commute with the up-projection, position enters through a separate rotary
key shared by all heads (the "decoupled" key), k_rope = RoPE(W_kr x) [qk_rope_head_dim],
concatenated to every head's key; the queries get a matching rotary part. Queries may be
low-rank too: q = W_uq RMSNorm(W_dq x) when q_lora_rank > 0. With learned positions there is no
rotary part.

Weights: ``kv_down`` = [W_dkv; W_kr] fused along dim 0, so
``kv_down.weight.orthogonalize_blocks = (kv_lora_rank, qk_rope_head_dim)``; ``k_up`` (W_uk) and
``v_up`` (W_uv) are separate matrices, so each is one projection for Muon and the absorbed
decoding below reads them as [H, dim, kv_lora_rank] views. (Checkpoints written before this split
held one ``kv_up`` whose rows interleave heads as [k_nope_h | v_h]; ``_load_from_state_dict``
splits it.) The query projection, [q_nope_h | q_rope_h] per head, is treated as one projection.

KV cache: one tensor per token, ``ckv`` = [c_kv | k_rope] (kv_lora_rank + qk_rope_head_dim numbers
per token and layer, instead of 2 x n_heads x head_dim: that is MLA's point).

Decoding (any call with a cache) uses the absorbed form of DeepSeek-V2 section 2.1.2 when the QK
norm leaves keys alone (``norm=none``): W_uk_h is folded into the query, q_lat_h = W_uk_h^T
q_nope_h, so every head attends over the cached [c_kv | k_rope] directly (one KV head shared by
all query heads, computed with matmuls that read the cache once: ``explicit.py``) and W_uv_h is
applied to the attended latent afterwards; k_rope is rotated once, when written. Nothing per head
is rebuilt for the cached tokens.

With ``norm=qk_rmsnorm`` the absorbed form would be wrong: each head's key is RMS-normalised over
[k_nope_h | k_rope], a per-key, per-head factor that cannot be folded into the query (the Kimi K2
report, Moonshot AI 2025, makes the same point: QK-norm does not apply to MLA because the keys
are never materialised at inference). That path therefore rebuilds the per-head keys and values
from the cached latent, and caches k_rope un-rotated: the norm's gain acts before the rotation
and does not commute with it, so the cached rope keys are rotated on every step, as part of
rebuilding the keys.

Defaults follow DeepSeek-V2's proportions: rotary part = head_dim / 2 (64 of 128); the latent is
2 x head_dim here (DeepSeek-V2 uses 4 x head_dim with 128 heads), so that at these small head counts
the cache stays below GQA's with 2 KV heads.
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
from gpt5_ablate.model.norms import RMSNorm
from gpt5_ablate.model.registries import ATTENTION
from gpt5_ablate.registry import ComponentConfig


@dataclass
class MLAConfig(ComponentConfig):
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

    def validate(self, ctx: AttentionContext) -> None:
        model, rotary = ctx.model, ctx.rotary
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
        if not self.norm_eps > 0:
            raise ConfigError(f"attention.norm_eps={self.norm_eps} must be > 0 (e.g. 1e-6).")
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
        self.n_heads, self.window = model.n_heads, ctx.window
        # resolved(): every size is an int now
        self.kv_lora_rank, self.q_lora_rank = int(cfg.kv_lora_rank or 0), cfg.q_lora_rank
        self.nope_dim, self.v_dim = int(cfg.qk_nope_head_dim or 0), int(cfg.v_head_dim or 0)
        self.rope_dim = int(cfg.qk_rope_head_dim or 0)
        self.qk_dim = self.nope_dim + self.rope_dim
        self.scale = self.qk_dim**-0.5  # also in the absorbed form, whose dot products are wider
        if self.q_lora_rank > 0:
            self.q_down = nn.Linear(model.d_model, self.q_lora_rank, bias=False)
            self.q_norm = RMSNorm(self.q_lora_rank, eps=cfg.norm_eps)
            self.q_up = nn.Linear(self.q_lora_rank, self.n_heads * self.qk_dim, bias=False)
        else:
            self.q_proj = nn.Linear(model.d_model, self.n_heads * self.qk_dim, bias=False)
        # One matmul produces the latent and the shared rotary key.
        self.kv_down = nn.Linear(model.d_model, self.kv_lora_rank + self.rope_dim, bias=False)
        if self.rope_dim:
            self.kv_down.weight.orthogonalize_blocks = (self.kv_lora_rank, self.rope_dim)
        self.kv_norm = RMSNorm(self.kv_lora_rank, eps=cfg.norm_eps)
        self.k_up = nn.Linear(self.kv_lora_rank, self.n_heads * self.nope_dim, bias=False)
        self.v_up = nn.Linear(self.kv_lora_rank, self.n_heads * self.v_dim, bias=False)
        self.out_proj = nn.Linear(self.n_heads * self.v_dim, model.d_model, bias=False)
        self.out_proj.is_residual_projection = True
        self.qk_norm = ctx.make_qk_norm(self.qk_dim)
        self.rotary = ctx.make_rotary(self.rope_dim) if self.rope_dim else None
        self.sinks = ctx.make_sinks()
        # Absorbed decoding is exact only when keys are not normalised per head (module doc).
        self.absorb = not self.qk_norm.normalizes_keys

    def _queries(self, x: torch.Tensor) -> torch.Tensor:
        if self.q_lora_rank > 0:
            return self.q_up(self.q_norm(self.q_down(x)))
        return self.q_proj(x)

    def _rotate_tail(self, t: torch.Tensor, **where: Any) -> torch.Tensor:
        """Rotate the last ``rope_dim`` channels of [..., T, nope + rope]."""
        if self.rotary is None:
            return t
        nope, rope = t.split([self.nope_dim, self.rope_dim], dim=-1)
        return torch.cat((nope, self.rotary(rope, **where)), dim=-1)

    def forward(self, x: torch.Tensor, cache: LayerKVCache | None = None) -> torch.Tensor:
        batch, seq_len, _ = x.shape
        start_pos = cache.length if cache is not None else 0
        q = self._queries(x).view(batch, seq_len, self.n_heads, self.qk_dim).transpose(1, 2)
        latent, k_rope = self.kv_down(x).split([self.kv_lora_rank, self.rope_dim], dim=-1)
        latent = self.kv_norm(latent)  # [B, T, r]; k_rope [B, T, rope]
        sink = self.sinks() if self.sinks is not None else None
        if cache is not None and self.absorb:
            y = self._attend_absorbed(q, latent, k_rope, cache, start_pos, sink)
        else:
            y = self._attend_rebuilt(q, latent, k_rope, cache, start_pos, sink)
        return self.out_proj(y.transpose(1, 2).reshape(batch, seq_len, self.n_heads * self.v_dim))

    def _attend_rebuilt(
        self,
        q: torch.Tensor,
        latent: torch.Tensor,
        k_rope: torch.Tensor,
        cache: LayerKVCache | None,
        start_pos: int,
        sink: torch.Tensor | None,
    ) -> torch.Tensor:
        """Per-head keys and values rebuilt from the latent (training, or QK-norm decoding)."""
        if cache is not None:  # the latent and the un-rotated shared key
            (ckv,), index = cache.update(seq_dim=1, ckv=torch.cat((latent, k_rope), dim=-1))
            latent, k_rope = ckv.split([self.kv_lora_rank, self.rope_dim], dim=-1)
        else:
            index = KeyIndex(0, None, self.window)
        batch, total_len = latent.shape[:2]
        k = self.k_up(latent).view(batch, total_len, self.n_heads, self.nope_dim).transpose(1, 2)
        v = self.v_up(latent).view(batch, total_len, self.n_heads, self.v_dim).transpose(1, 2)
        if self.rope_dim:  # [B, H, S, nope + rope]
            shared = k_rope.unsqueeze(1).expand(batch, self.n_heads, total_len, self.rope_dim)
            k = torch.cat((k, shared), dim=-1)
        q, k = self.qk_norm(q, k)  # over each head's full query/key, before rotation
        q = self._rotate_tail(q, start_pos=start_pos)
        k = self._rotate_tail(k, positions=index.positions)  # None: positions 0..S-1
        return attend(q, k, v, index, sink=sink, scale=self.scale)  # [B, H, T, v]

    def _attend_absorbed(
        self,
        q: torch.Tensor,
        latent: torch.Tensor,
        k_rope: torch.Tensor,
        cache: LayerKVCache,
        start_pos: int,
        sink: torch.Tensor | None,
    ) -> torch.Tensor:
        """Attention in the latent space: W_uk folded into the query, W_uv applied after."""
        if self.rotary is not None:
            k_rope = self.rotary(k_rope, start_pos)  # rotated once, when written
        (ckv,), index = cache.update(seq_dim=1, ckv=torch.cat((latent, k_rope), dim=-1))
        q = self.qk_norm(q, q)[0]  # this norm leaves keys alone (it may act on queries)
        q = self._rotate_tail(q, start_pos=start_pos)
        q_nope, q_rope = q.split([self.nope_dim, self.rope_dim], dim=-1)
        w_uk = self.k_up.weight.view(self.n_heads, self.nope_dim, self.kv_lora_rank)
        q_latent = torch.einsum("bhtn,hnr->bhtr", q_nope, w_uk)  # [B, H, T, r]
        queries = torch.cat((q_latent, q_rope), dim=-1)  # [B, H, T, r + rope]
        keys = ckv.unsqueeze(1)  # [B, 1, S, r + rope]: one KV head shared by every query head
        values = keys[..., : self.kv_lora_rank]  # [B, 1, S, r]
        y_latent = attend(queries, keys, values, index, sink, self.scale, explicit=True)
        w_uv = self.v_up.weight.view(self.n_heads, self.v_dim, self.kv_lora_rank)
        return torch.einsum("bhtr,hvr->bhtv", y_latent, w_uv)  # [B, H, T, v]

    def kv_cache_elements_per_token(self) -> int:
        return self.kv_lora_rank + self.rope_dim

    def attention_flops_per_token(self, context_len: int) -> int:
        """Forward FLOPs of the training (rebuilt-keys) form for one query."""
        keys = visible_context(self.window, context_len)
        return 2 * self.n_heads * (self.qk_dim + self.v_dim) * keys

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        fused = state_dict.pop(prefix + "kv_up.weight", None)
        if fused is not None:  # before k_up / v_up: rows [k_nope_h | v_h] for each head h
            per_head = fused.reshape(self.n_heads, self.nope_dim + self.v_dim, -1)
            k_rows, v_rows = per_head.split([self.nope_dim, self.v_dim], dim=1)
            state_dict[prefix + "k_up.weight"] = k_rows.reshape(self.n_heads * self.nope_dim, -1)
            state_dict[prefix + "v_up.weight"] = v_rows.reshape(self.n_heads * self.v_dim, -1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
