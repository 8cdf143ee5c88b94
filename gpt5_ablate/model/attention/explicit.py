"""Attention written out with matmuls, for the cases SDPA serves badly: decoding with a sink
(``sinks.py``) and MLA's absorbed decoding, where every query head shares one wide latent key.

SDPA's fused kernels need equal key and value widths; otherwise it falls back to its unfused
path, which first repeats a shared key/value head once per query head (``enable_gqa``): for
MLA's absorbed form that is a copy of the whole latent cache per head and step. Here each KV
head's group of query heads is batched into one matmul instead, so the cache is read once and
never copied. The weights are computed in fp32.
"""

from __future__ import annotations

import torch


def explicit_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    is_causal: bool = False,
    sink: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """softmax(q k^T * scale, masked, [with a zero-valued sink key of logit sink[h]]) v.

    q [B, H, Tq, D], k [B, Hkv, Tk, D], v [B, Hkv, Tk, Dv] (query head h uses KV head
    h // (H / Hkv), as in SDPA's ``enable_gqa``); ``mask`` a boolean [Tq, Tk] (True = may
    attend); ``is_causal`` as in SDPA; ``sink`` [H] or None. Returns [B, H, Tq, Dv].
    """
    batch, n_heads, q_len, dim = q.shape
    n_kv, k_len, v_dim = k.size(1), k.size(2), v.size(-1)
    group = n_heads // n_kv
    scale = dim**-0.5 if scale is None else scale
    if is_causal:
        mask = torch.ones(q_len, k_len, dtype=torch.bool, device=q.device).tril()
    queries = q.reshape(batch, n_kv, group * q_len, dim)  # each KV head's query group
    logits = (queries @ k.transpose(-1, -2)).float() * scale  # [B, Hkv, G * Tq, Tk]
    logits = logits.view(batch, n_kv, group, q_len, k_len)
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    if sink is None:
        weights = logits.softmax(dim=-1)
    else:
        sinks = sink.float().view(1, n_kv, group, 1, 1).expand(batch, n_kv, group, q_len, 1)
        weights = torch.cat((logits, sinks), dim=-1).softmax(dim=-1)[..., :k_len]
    weights = weights.to(v.dtype).reshape(batch, n_kv, group * q_len, k_len)
    return (weights @ v).view(batch, n_heads, q_len, v_dim)
