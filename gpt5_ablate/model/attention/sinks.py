"""The ``sinks`` group: a learned per-head logit that joins the softmax normalisation.

gpt-oss gives each attention head "a learned bias in the denominator of the softmax, similar to
off-by-one attention and attention sinks", so that a head can attend to nothing (OpenAI 2025,
"gpt-oss-120b & gpt-oss-20b Model Card", arXiv:2508.10925, architecture section; Xiao et al.
2023, "Efficient Streaming Language Models with Attention Sinks"; E. Miller 2023, "Attention Is
Off By One"). With sink logit s_h for head h, query i's weights become

    p_ij = exp(l_ij) / (Z_i + exp(s_h)),    Z_i = sum_j exp(l_ij),

i.e. a virtual key whose logit is s_h and whose value is zero: the output is the usual one scaled
by Z_i / (Z_i + exp(s_h)).

Options: ``none`` (the default) and ``learned`` (one logit per query head, initialised to 0).
Contract of the group (``AttentionSinks`` below): the config subclasses ``ComponentConfig``; the
module is built as ``Component(cfg, ctx)`` with ``ctx`` the ``ModelConfig`` (one logit per query
head, ``model.n_heads`` in every variant), once per attention layer, through
``AttentionContext.make_sinks``; calling it returns the logits [n_heads] or None. Its parameter
is 1-D, so the optimizer gives it AdamW (no Muon), and ``GPT._init_weights`` leaves it alone.

How it is computed (``attention_with_sink``), without the softmax denominator that SDPA does not
return: the virtual key is made real. Queries get one extra channel holding s_h / scale, keys one
extra channel holding 0, and one key is prepended whose channels are all 0 except that extra one
(1); its value is 0. Its logit is then exactly s_h for every query of head h, which also works
when GQA heads share keys (the sink lives in the query). Causality is kept with SDPA's own causal
mask by prepending a dummy query too (query i+1 then sees keys 0..i+1 = sink, k_0..k_i), so
training stays on the fused kernels; explicit (window, cache) masks get a True sink column.
Cost: one copy of q, k and v with one more channel and one more row (v gets the channel too
when its width equals the keys', which keeps SDPA on its fused kernels). Single-token decoding
instead computes the weights explicitly (``explicit.py``: one pass over the cache, no copy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from gpt5_ablate.config import ModelConfig
from gpt5_ablate.model.attention.explicit import explicit_attention
from gpt5_ablate.model.registries import SINKS
from gpt5_ablate.registry import ComponentConfig


@dataclass
class NoSinksConfig(ComponentConfig):
    name: str = "none"


@dataclass
class LearnedSinksConfig(ComponentConfig):
    name: str = "learned"


@runtime_checkable
class AttentionSinks(Protocol):
    def __call__(self) -> torch.Tensor | None: ...


@SINKS.register("none", NoSinksConfig)
class NoSinks(nn.Module):
    def __init__(self, cfg: NoSinksConfig, model: ModelConfig) -> None:
        super().__init__()

    def forward(self) -> torch.Tensor | None:
        return None


@SINKS.register("learned", LearnedSinksConfig)
class LearnedSinks(nn.Module):
    def __init__(self, cfg: LearnedSinksConfig, model: ModelConfig) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(model.n_heads))  # [H]; e^0: one virtual key

    def forward(self) -> torch.Tensor | None:
        return self.logits


def attention_with_sink(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    sink: torch.Tensor,
    mask: torch.Tensor | None,
    is_causal: bool,
    scale: float | None = None,
) -> torch.Tensor:
    """SDPA with one zero-valued virtual key of logit ``sink[h]`` per query head.

    q [B, H, Tq, D], k [B, Hkv, Tk, D], v [B, Hkv, Tk, Dv], sink [H]; ``mask`` a boolean
    [Tq, Tk] (True = may attend) or None; ``is_causal`` as in SDPA (then Tq == Tk). Returns
    [B, H, Tq, Dv].
    """
    scale = q.size(-1) ** -0.5 if scale is None else scale
    if q.size(-2) == 1 and not is_causal:  # decoding: no copy of the cache
        return explicit_attention(q, k, v, mask, sink=sink, scale=scale)
    n_heads, dim, v_dim = q.size(1), q.size(-1), v.size(-1)
    # One more channel (the sink's) and one more row in front (the sink key; for SDPA's
    # causal mask, a dummy query), each tensor copied once by the pad.
    q = F.pad(q, (0, 1, 1, 0))  # [B, H, 1+Tq, D+1]
    q[:, :, 1:, -1] = (sink.to(q.dtype) / scale).view(1, n_heads, 1)
    k = F.pad(k, (0, 1, 1, 0))  # [B, Hkv, 1+Tk, D+1]
    k[:, :, 0, -1] = 1.0
    # V gets the extra (zero) channel too when its width equals the keys': SDPA's fused CPU
    # and flash kernels need equal widths, and fall back to the unfused path otherwise.
    v = F.pad(v, (0, 1 if v_dim == dim else 0, 1, 0))  # [B, Hkv, 1+Tk, Dv(+1)], sink value 0
    grouped = k.size(1) != n_heads
    if is_causal:  # the dummy first query keeps SDPA's (top-left aligned) causal mask exact
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=grouped)
        return y[:, :, 1:, :v_dim]
    if mask is not None:
        mask = F.pad(mask, (1, 0), value=True)  # the sink column: visible to every query
    y = F.scaled_dot_product_attention(
        q[:, :, 1:], k, v, attn_mask=mask, scale=scale, enable_gqa=grouped
    )  # an explicit mask needs no dummy query
    return y[..., :v_dim]
