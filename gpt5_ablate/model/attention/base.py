"""The ``attention`` group's contract: the constructor context, the ``AttentionLayer`` protocol
and the one attention call every variant makes.

Every attention option is

- a config class subclassing ``ComponentConfig`` whose ``validate(ctx)`` gets an
  ``AttentionContext`` (only ``model`` and ``rotary`` are set while validating) and
  raises ``ConfigError`` naming the bad value and the valid range, before anything is allocated;
- a module built as ``Component(cfg, ctx)``, once per layer, ``ctx`` being that layer's
  ``AttentionContext`` (its ``window`` differs between layers);
- registered with ``@ATTENTION.register("<name>", Config)`` in its own module of this package
  (discovered on import), plus ``conf/attention/<name>.yaml``. Nothing else changes.

The module follows ``AttentionLayer`` below, which is all ``gpt.py`` relies on. The rules that the
rest of the harness depends on, without a type to enforce them:

- Residual projection: the linear layer that writes into the residual stream sets
  ``out_proj.is_residual_projection = True`` (``GPT._init_weights`` scales its init by
  1/sqrt(2 n_layers)). Only ``nn.Linear`` and ``nn.Embedding`` are initialised by the GPT; any
  other parameter is initialised by its own module (construction must also work on
  ``torch.device("meta")``).
- Optimizer split: the layer lives at ``blocks.<i>.attn``; the optimizer gives every 2-D
  parameter whose name starts with ``blocks.`` to Muon and 1-D ones (gains, sink logits) to AdamW.
- Fused projections: a 2-D weight holding several projections stacked along dim 0 carries
  ``weight.orthogonalize_blocks = (rows_1, rows_2, ...)`` (summing to ``weight.shape[0]``) so
  Muon orthogonalises each projection on its own (e.g. GQA's ``kv_proj``: K rows, then V rows).
- Checkpoints: parameter names are the checkpoint format. A layout change maps the old names in
  ``_load_from_state_dict`` (see ``gqa.py``), so that ``load_state_dict`` and safetensors'
  ``load_model`` (both strict) still accept old files.
- KV cache: with a cache, ``forward`` calls ``cache.update`` exactly once and takes its start
  position from ``cache.length`` before that call; all layers advance together.
- Accounting: ``kv_cache_elements_per_token`` counts one cached token (any dtype, all heads);
  ``attention_flops_per_token(context_len)`` counts the forward q k^T and weights x v products of
  one query over ``min(window, context_len)`` keys (no causal halving, see
  ``GPT.flops_per_token``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from gpt5_ablate.config import ModelConfig
from gpt5_ablate.model.attention.explicit import explicit_attention
from gpt5_ablate.model.attention.sinks import attention_with_sink
from gpt5_ablate.model.attention.window import attention_mask
from gpt5_ablate.model.kv_cache import KeyIndex, LayerKVCache, cached_positions
from gpt5_ablate.model.norms import NoQKNorm, NoQKNormConfig, QKNorm, QKNormContext
from gpt5_ablate.model.positions import Rotary


def _no_qk_norm(head_dim: int) -> QKNorm:
    return NoQKNorm(NoQKNormConfig(), QKNormContext(head_dim))


def _no_rotary(dim: int) -> Rotary | None:
    return None


def _no_sinks() -> nn.Module | None:
    return None


@dataclass
class AttentionContext:
    """What an attention layer needs from the rest of the model, without knowing its variants.

    The factories default to "absent" (no QK-norm, no rotation, no sinks), which is what a
    context built for ``validate`` holds.
    """

    model: ModelConfig
    rotary: bool  # whether the position component rotates queries and keys
    window: int | None = None  # this layer's sliding window (None: full causal attention)
    make_qk_norm: Callable[[int], QKNorm] = field(default=_no_qk_norm)  # head_dim -> norm
    make_rotary: Callable[[int], Rotary | None] = field(default=_no_rotary)  # width -> rotation
    make_sinks: Callable[[], nn.Module | None] = field(default=_no_sinks)  # () -> logits [H]


@runtime_checkable
class AttentionLayer(Protocol):
    window: int | None

    def __call__(self, x: torch.Tensor, cache: LayerKVCache | None = None) -> torch.Tensor:
        """x [B, T, d_model] -> [B, T, d_model]; with a cache, x holds the tokens after the
        cached ones."""
        ...

    def kv_cache_elements_per_token(self) -> int: ...

    def attention_flops_per_token(self, context_len: int) -> int: ...


def visible_context(window: int | None, context_len: int) -> int:
    """Keys a query attends to at ``context_len`` (for FLOP and cache accounting)."""
    return cached_positions(window, context_len)


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    index: KeyIndex,
    sink: torch.Tensor | None = None,
    scale: float | None = None,
    explicit: bool = False,
) -> torch.Tensor:
    """softmax(q k^T * scale [+ sink]) v over the keys ``index`` lets each query see.

    Shapes: q [B, H, Tq, Dqk], k [B, Hkv, Tk, Dqk], v [B, Hkv, Tk, Dv]; Hkv divides H (each KV
    head serves H / Hkv consecutive query heads). ``scale`` defaults to 1 / sqrt(Dqk); ``sink``
    [H] is the optional per-head sink logit (``sinks.py``). ``explicit`` computes it with matmuls
    instead of SDPA (``explicit.py``; for one wide KV head shared by all query heads). Returns
    [B, H, Tq, Dv].
    """
    mask, is_causal = attention_mask(index, q.size(-2), k.size(-2), q.device)
    if explicit:
        return explicit_attention(q, k, v, mask, is_causal, sink, scale)
    if sink is not None:
        return attention_with_sink(q, k, v, sink, mask, is_causal, scale)
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, is_causal=is_causal, scale=scale, enable_gqa=k.size(1) != q.size(1)
    )
