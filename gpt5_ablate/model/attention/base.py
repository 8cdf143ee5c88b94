"""What every attention variant shares: its constructor context and the causal SDPA call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gpt5_ablate.config import ModelConfig
from gpt5_ablate.model.positions import Rotary


@dataclass
class AttentionContext:
    """What an attention layer needs from the rest of the model, without knowing its variants."""

    model: ModelConfig
    rotary: bool  # whether the position component rotates queries and keys
    make_qk_norm: Callable[[int], nn.Module]  # head_dim -> module(q, k) -> (q, k)
    make_rotary: Callable[[int], Rotary | None]  # rotated width -> rotation (None: no RoPE)


def causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start_pos: int
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v with a causal mask, for queries at positions
    ``start_pos .. start_pos + Tq - 1`` and keys at positions ``0 .. Tk - 1``.

    Shapes: q [B, H, Tq, Dqk], k [B, Hkv, Tk, Dqk], v [B, Hkv, Tk, Dv]; Hkv may divide H (GQA).
    """
    q_len, k_len = q.size(-2), k.size(-2)
    grouped = k.size(1) != q.size(1)
    if start_pos == 0 and q_len == k_len:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=grouped)
    if q_len == 1:  # one new token attends to everything cached: no mask needed
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=grouped)
    # Several new tokens after a cached prefix: the causal diagonal is offset by start_pos.
    mask = torch.ones(q_len, k_len, dtype=torch.bool, device=q.device).tril(diagonal=start_pos)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=grouped)
