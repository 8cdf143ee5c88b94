"""Shared fixtures: model factories, a single-thread switch, and one data cache per session."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import gpt5_ablate.model  # registers attention / norm / pos / ffn variants)
import gpt5_ablate.optim  # noqa: F401  (registers optimizers)
from gpt5_ablate.config import ModelConfig
from gpt5_ablate.model import ATTENTION, FFN, GPT, POSITIONS, QK_NORM, ArchitectureConfig

# Small enough that a forward/backward pass takes a few milliseconds on one CPU core.
SMALL_MODEL: dict[str, Any] = dict(name="test", n_layers=2, d_model=64, n_heads=4, max_seq_len=32)


@pytest.fixture
def make_arch() -> Callable[..., ArchitectureConfig]:
    """Factory: ``make_arch(attention, norm, pos, ffn, attention_kwargs=..., **model_fields)``.

    Component configs are the registered dataclasses with their defaults (``attention_kwargs``
    overrides fields of the attention config); the model preset is ``SMALL_MODEL`` unless
    overridden field by field.
    """

    def _make(
        attention: str = "gqa",
        norm: str = "qk_rmsnorm",
        pos: str = "rope",
        ffn: str = "swiglu",
        *,
        attention_kwargs: dict[str, Any] | None = None,
        **model_fields: Any,
    ) -> ArchitectureConfig:
        return ArchitectureConfig(
            model=ModelConfig(**{**SMALL_MODEL, **model_fields}),
            attention=ATTENTION.entry(attention).config_class(**(attention_kwargs or {})),
            norm=QK_NORM.entry(norm).config_class(),
            pos=POSITIONS.entry(pos).config_class(),
            ffn=FFN.entry(ffn).config_class(),
        )

    return _make


@pytest.fixture
def make_gpt(make_arch: Callable[..., ArchitectureConfig]) -> Callable[..., GPT]:
    """Factory: like ``make_arch`` plus ``vocab_size`` (97) and ``seed`` (0); returns an fp32 GPT in
    eval mode."""

    def _make(*args: str, vocab_size: int = 97, seed: int = 0, **kwargs: Any) -> GPT:
        torch.manual_seed(seed)
        return GPT(make_arch(*args, **kwargs), vocab_size).eval()

    return _make


@pytest.fixture
def single_thread() -> Iterator[None]:
    """Run a test on one intra-op thread. These tests use tiny tensors, where a second thread only
    adds overhead, and a lot of it (10x and more) when other processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tokenizer + token-block cache for every training test of the session: the tiny
    corpus and BPE are built once, not once per test module."""
    return tmp_path_factory.mktemp("data_cache")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that start processes (``integration``) are slow too: ``-m "not slow"`` is the quick
    developer lane, and CI runs everything."""
    for item in items:
        if "integration" in item.keywords and "slow" not in item.keywords:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def no_allocation(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Any module that owns parameters raises if it is constructed."""

    def forbidden(self: nn.Module, *args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"{type(self).__name__} was built before the config was validated")

    for module in (nn.Linear, nn.Embedding, nn.RMSNorm):
        monkeypatch.setattr(module, "__init__", forbidden)
    yield
