"""The ``window`` group: which layers use sliding-window attention, and the masks it needs.

A sliding layer lets the query at position i see only the ``size`` most recent positions, its own
included (keys i - size + 1 .. i), as in Longformer (Beltagy et al. 2020) and Mistral 7B (Jiang
et al. 2023). gpt-oss's attention blocks alternate between a banded window of 128 tokens and
fully dense attention, following GPT-3 (OpenAI 2025, "gpt-oss-120b & gpt-oss-20b Model Card",
arXiv:2508.10925, architecture section); its reference code makes the even layers (0, 2, ...)
the sliding ones. The attention and KV-cache cost of a sliding layer stop growing with the
context once it passes the window.

Options: ``all_full`` (no sliding layer; the default), ``alternate`` (layers 0, 2, 4... sliding,
1, 3, 5... full) and ``all_sliding``; ``window.size`` (default 128) is every sliding layer's
window. It is a separate choice from the attention variant and works with each of them.

Contract of the group (``WindowPattern`` below): the config subclasses ``WindowConfig``; the
component is built as ``Component(cfg, ctx)`` with ``ctx`` the ``ModelConfig`` and returns, from
``layer_windows()``, one entry per layer: the window size, or None for full attention. The GPT
passes each layer its entry as ``AttentionContext.window``.

The mask is a boolean [Tq, Tk] tensor handed to SDPA (``attention_mask``); when the window
cannot bind (it is at least as long as the sequence) the plain causal path runs, so the result is
bit-identical to full attention. FlexAttention is not used: in torch 2.13 on CPU it either runs
an unfused path that materialises the full score matrix (eager) or needs a torch.compile of
tens of seconds per shape, and this harness must train and test on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from gpt5_ablate.config import ModelConfig
from gpt5_ablate.errors import ConfigError
from gpt5_ablate.model.kv_cache import KeyIndex
from gpt5_ablate.model.registries import WINDOW
from gpt5_ablate.registry import ComponentConfig


@dataclass
class WindowConfig(ComponentConfig):
    """``size``: tokens each query of a sliding layer sees, its own included (unused by
    ``all_full``). A size at or above ``model.max_seq_len`` makes a sliding layer a full one."""

    size: int = 128

    def validate(self, ctx: ModelConfig | None = None) -> None:
        if self.size < 1:
            raise ConfigError(
                f"window.size={self.size} is invalid: the valid range is window.size >= 1 "
                "(tokens each query of a sliding layer sees, itself included; e.g. 128 as in "
                "gpt-oss)."
            )


@dataclass
class AllFullConfig(WindowConfig):
    name: str = "all_full"


@dataclass
class AlternateConfig(WindowConfig):
    name: str = "alternate"


@dataclass
class AllSlidingConfig(WindowConfig):
    name: str = "all_sliding"


@runtime_checkable
class WindowPattern(Protocol):
    def layer_windows(self) -> list[int | None]: ...


@WINDOW.register("all_full", AllFullConfig)
class AllFull:
    def __init__(self, cfg: WindowConfig, model: ModelConfig) -> None:
        self.n_layers = model.n_layers

    def layer_windows(self) -> list[int | None]:
        return [None] * self.n_layers


@WINDOW.register("alternate", AlternateConfig)
class Alternate:
    """Sliding, full, sliding, full... (gpt-oss's pattern)."""

    def __init__(self, cfg: WindowConfig, model: ModelConfig) -> None:
        self.n_layers, self.size = model.n_layers, cfg.size

    def layer_windows(self) -> list[int | None]:
        return [self.size if i % 2 == 0 else None for i in range(self.n_layers)]


@WINDOW.register("all_sliding", AllSlidingConfig)
class AllSliding:
    def __init__(self, cfg: WindowConfig, model: ModelConfig) -> None:
        self.n_layers, self.size = model.n_layers, cfg.size

    def layer_windows(self) -> list[int | None]:
        return [self.size] * self.n_layers


def attention_mask(
    index: KeyIndex, q_len: int, k_len: int, device: torch.device
) -> tuple[torch.Tensor | None, bool]:
    """``(mask, is_causal)`` for SDPA: a boolean [q_len, k_len] mask (True = may attend), or
    None with ``is_causal`` saying whether SDPA's own causal mask applies."""
    if index.unmasked:
        return None, False
    q_end = index.q_start + q_len  # one past the last query's position
    if index.positions is None:
        if k_len != q_end:
            raise ValueError(f"keys 0..{k_len - 1} do not end at the last query ({q_end - 1})")
        if index.window is None or index.window >= q_end:  # no query sees past the window
            if index.q_start == 0:
                return None, True  # training / prefill: plain causal
            if q_len == 1:
                return None, False  # one new token sees every cached one
        key_positions = torch.arange(k_len, device=device)
    else:
        key_positions = index.positions
    query_positions = torch.arange(index.q_start, q_end, device=device)
    distance = query_positions[:, None] - key_positions[None, :]  # [Tq, Tk]
    mask = distance >= 0
    if index.window is not None:
        mask = mask & (distance < index.window)
    return mask, False
