"""Decoding with the preallocated KV cache equals the full forward, for every attention variant x
window pattern x sinks option x QK-norm x positions (all parametrised from the registries);
sliding layers keep at most their window; the buffers are written in place."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
import torch

from gpt5_ablate.model import ATTENTION, GPT, POSITIONS, QK_NORM, SINKS, WINDOW, ArchitectureConfig
from gpt5_ablate.model.attention.mla import MultiHeadLatentAttention
from gpt5_ablate.model.kv_cache import KVCache, LayerKVCache

VOCAB, SEQ, WINDOW_SIZE = 97, 16, 4
SCHEDULES = {
    "prefill5_then_tokens": [5] + [1] * 11,
    "chunks_longer_than_window": [3, 6, 1, 5, 1],  # multi-token chunks through the ring buffer
}
COMBOS = list(
    itertools.product(
        ATTENTION.names(), WINDOW.names(), SINKS.names(), QK_NORM.names(), POSITIONS.names()
    )
)
pytestmark = pytest.mark.usefixtures("single_thread")


def make_model(
    make_arch: Callable[..., ArchitectureConfig],
    attention: str,
    window: str,
    sinks: str,
    norm: str = "qk_rmsnorm",
    pos: str = "rope",
    size: int = WINDOW_SIZE,
    seed: int = 0,
    **model_fields: Any,
) -> GPT:
    arch = make_arch(attention, norm, pos, "swiglu", init_std=0.1, **model_fields)
    arch.window = WINDOW.entry(window).config_class(size=size)
    arch.sinks = SINKS.entry(sinks).config_class()
    torch.manual_seed(seed)
    model = GPT(arch, VOCAB).eval()
    with torch.no_grad():  # sinks away from their zero init, different per head
        for name, p in model.named_parameters():
            if name.endswith("sinks.logits"):
                p.copy_(torch.randn(p.shape) * 1.5)
    return model


def tokens(batch: int, seq_len: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (batch, seq_len), generator=generator)


def decode(model: GPT, idx: torch.Tensor, chunks: list[int]) -> tuple[torch.Tensor, KVCache]:
    cache, pieces, start = model.new_kv_cache(), [], 0
    pointers: dict[int, list[int]] = {}
    with torch.no_grad():
        for size in chunks:
            pieces.append(model(idx[:, start : start + size], kv_cache=cache)[0])
            start += size
            for i, layer in enumerate(cache.layers):
                now = [b.data_ptr() for b in layer.buffers.values()]
                assert pointers.setdefault(i, now) == now, "a cache buffer was reallocated"
                if layer.window is not None:
                    assert layer.n_cached <= layer.window
    assert start == idx.size(1)
    return torch.cat(pieces, dim=1), cache


@pytest.mark.parametrize(
    ("attention", "window", "sinks", "norm", "pos"), COMBOS, ids=["-".join(c) for c in COMBOS]
)
def test_cached_decoding_equals_full_forward(
    make_arch: Callable[..., ArchitectureConfig],
    attention: str,
    window: str,
    sinks: str,
    norm: str,
    pos: str,
) -> None:
    model = make_model(make_arch, attention, window, sinks, norm, pos)
    idx = tokens(2, SEQ, seed=1)
    with torch.no_grad():
        full, _ = model(idx)
    for schedule in SCHEDULES.values():
        cached, cache = decode(model, idx, schedule)
        assert cache.length == SEQ
        torch.testing.assert_close(cached, full, atol=1e-4, rtol=0)
        for layer, block in zip(cache.layers, model.blocks, strict=True):
            assert layer.window == block.attn.window
            capacity = (
                WINDOW_SIZE if block.attn.window is not None else model.arch.model.max_seq_len
            )
            for buffer in layer.buffers.values():
                assert buffer.size(layer.seq_dim) == capacity  # preallocated, ring = window


@pytest.mark.parametrize("attention", ATTENTION.names())
def test_sliding_layers_really_slide(
    make_arch: Callable[..., ArchitectureConfig], attention: str
) -> None:
    """The window changes the output (the equality above is not vacuous) and decoding matches
    the sliding forward, not the full one."""
    sliding = make_model(make_arch, attention, "all_sliding", "none")
    full = make_model(make_arch, attention, "all_full", "none")
    idx = tokens(1, SEQ, seed=2)
    with torch.no_grad():
        out_sliding, out_full = sliding(idx)[0], full(idx)[0]
    # Same weights: positions that see at most the window agree, later ones do not.
    torch.testing.assert_close(out_sliding[:, :WINDOW_SIZE], out_full[:, :WINDOW_SIZE])
    assert (out_sliding[:, WINDOW_SIZE:] - out_full[:, WINDOW_SIZE:]).abs().max() > 1e-3


def test_mla_decodes_in_absorbed_form_without_key_norm(
    make_arch: Callable[..., ArchitectureConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"absorbed": 0, "rebuilt_with_cache": 0}
    absorbed = MultiHeadLatentAttention._attend_absorbed
    rebuilt = MultiHeadLatentAttention._attend_rebuilt

    def spy_absorbed(self: Any, *args: Any) -> torch.Tensor:
        calls["absorbed"] += 1
        return absorbed(self, *args)

    def spy_rebuilt(self: Any, q: Any, latent: Any, k_rope: Any, cache: Any, *rest: Any) -> Any:
        calls["rebuilt_with_cache"] += cache is not None
        return rebuilt(self, q, latent, k_rope, cache, *rest)

    monkeypatch.setattr(MultiHeadLatentAttention, "_attend_absorbed", spy_absorbed)
    monkeypatch.setattr(MultiHeadLatentAttention, "_attend_rebuilt", spy_rebuilt)
    for norm, expected in (("none", "absorbed"), ("qk_rmsnorm", "rebuilt_with_cache")):
        calls.update(absorbed=0, rebuilt_with_cache=0)
        model = make_model(make_arch, "mla", "all_full", "none", norm)
        decode(model, tokens(1, 6, seed=3), [2, 1, 1, 1, 1])
        assert calls[expected] == 5 * len(model.blocks) and sum(calls.values()) == calls[expected]


def test_ring_buffer_keeps_the_last_window_positions() -> None:
    cache = LayerKVCache(max_len=32, window=4)
    for chunk in ([0, 1, 2], [3, 4, 5, 6, 7, 8], [9], [10]):
        values = torch.tensor(chunk, dtype=torch.float32).view(1, -1, 1)
        (keys,), index = cache.update(seq_dim=1, k=values)
        if len(chunk) == 1:  # the ring itself: exactly the visible positions
            assert index.unmasked
            assert sorted(keys.flatten().tolist()) == list(
                range(max(0, chunk[0] - 3), chunk[0] + 1)
            )
        else:  # what the ring held + the new chunk
            assert keys.flatten().tolist()[-len(chunk) :] == chunk
        assert index.positions is not None
        assert index.positions.tolist() == keys.flatten().long().tolist()
        held = sorted(cache.tensors["k"].flatten().tolist())
        assert held == list(range(max(0, chunk[-1] - 3), chunk[-1] + 1))
    assert cache.buffers["k"].shape == (1, 4, 1) and cache.length == 11


def test_cache_rejects_more_than_max_len() -> None:
    cache = LayerKVCache(max_len=3)
    cache.update(seq_dim=1, k=torch.zeros(1, 3, 2))
    with pytest.raises(ValueError, match="max_len=3"):
        cache.update(seq_dim=1, k=torch.zeros(1, 1, 2))


def test_generate_allocates_only_what_it_needs(
    make_arch: Callable[..., ArchitectureConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = make_model(make_arch, "gqa", "alternate", "learned")
    made: list[KVCache] = []
    new_kv_cache = model.new_kv_cache
    monkeypatch.setattr(
        model, "new_kv_cache", lambda n=None: made.append(new_kv_cache(n)) or made[-1]
    )
    out = model.generate(tokens(1, 3, seed=4), max_new_tokens=5, temperature=0)
    assert out.shape == (1, 8) and made[0].max_len == 8
    sizes = [b.size(b.dim() - 2) for layer in made[0].layers for b in layer.buffers.values()]
    assert sizes == [WINDOW_SIZE] * 2 + [8] * 2  # layer 0 sliding (ring), layer 1 full
