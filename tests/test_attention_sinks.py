"""Attention sinks: a learned per-head logit in the softmax denominator.

With sink s the output is the plain one scaled per query by Z / (Z + e^s), Z being the softmax
denominator (computed by hand here); a very negative sink reproduces ``sinks=none``; gradients
of the virtual-key formulation match a direct softmax-with-sink reference."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from gpt5_ablate.model import ATTENTION, GPT, SINKS, WINDOW, ArchitectureConfig
from gpt5_ablate.model.attention.base import attend
from gpt5_ablate.model.attention.window import attention_mask
from gpt5_ablate.model.kv_cache import KeyIndex

pytestmark = pytest.mark.usefixtures("single_thread")
SINK = torch.tensor([-1.0, 0.0, 0.5, 2.0])  # one per query head (4 heads)

# (id, query length, key length, KeyIndex): every masking path attend() takes.
CASES = [
    ("causal_training", 10, 10, KeyIndex(0, None, None)),
    ("sliding_band", 10, 10, KeyIndex(0, None, 3)),
    ("chunk_after_prefix", 4, 10, KeyIndex(6, None, None)),
    ("chunk_after_prefix_sliding", 4, 10, KeyIndex(6, None, 5)),
    ("one_token_decode", 1, 10, KeyIndex(9, None, None)),
    ("one_token_decode_sliding", 1, 10, KeyIndex(9, None, 4)),
    ("ring_positions", 3, 7, KeyIndex(8, torch.tensor([6, 4, 5, 7, 8, 9, 10]), 4)),
]


def _qkv(q_len: int, k_len: int, n_kv: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(2, 4, q_len, 8, generator=g)
    k = torch.randn(2, n_kv, k_len, 8, generator=g)
    v = torch.randn(2, n_kv, k_len, 6, generator=g)
    return q, k, v


def _visible(index: KeyIndex, q_len: int, k_len: int) -> torch.Tensor:
    """[Tq, Tk] visibility from the positions, independently of attention_mask."""
    key_pos = index.positions if index.positions is not None else torch.arange(k_len)
    query_pos = torch.arange(index.q_start, index.q_start + q_len)
    distance = query_pos[:, None] - key_pos[None, :]
    window = index.window if index.window is not None else 10**9
    return (distance >= 0) & (distance < window)


def _reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, visible: torch.Tensor, sink: torch.Tensor
) -> torch.Tensor:
    """softmax over [logits, sink] by hand, the sink's value being 0."""
    group = q.size(1) // k.size(1)
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    logits = (q @ k.transpose(-1, -2)) / math.sqrt(q.size(-1))
    logits = logits.masked_fill(~visible, float("-inf"))
    sinks = sink.view(1, -1, 1, 1).expand(q.size(0), -1, q.size(2), 1)
    weights = torch.cat((logits, sinks), dim=-1).softmax(dim=-1)[..., :-1]
    return weights @ v


@pytest.mark.parametrize("explicit", [False, True], ids=["sdpa", "explicit"])
@pytest.mark.parametrize("n_kv", [4, 2, 1], ids=["mha", "gqa", "mqa"])
@pytest.mark.parametrize(
    ("q_len", "k_len", "index"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_sink_scales_output_by_z_over_z_plus_exp_s(
    q_len: int, k_len: int, index: KeyIndex, n_kv: int, explicit: bool
) -> None:
    q, k, v = _qkv(q_len, k_len, n_kv)
    visible = _visible(index, q_len, k_len)
    group = 4 // n_kv
    k_full = k.repeat_interleave(group, dim=1)
    logits = (q @ k_full.transpose(-1, -2)) / math.sqrt(8)
    z = logits.exp().masked_fill(~visible, 0.0).sum(dim=-1, keepdim=True)  # [B, H, Tq, 1]
    scale = z / (z + SINK.exp().view(1, 4, 1, 1))
    plain = attend(q, k, v, index)  # SDPA: the reference the sink scales
    with_sink = attend(q, k, v, index, sink=SINK, explicit=explicit)
    torch.testing.assert_close(attend(q, k, v, index, explicit=explicit), plain)
    torch.testing.assert_close(with_sink, plain * scale, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(with_sink, _reference(q, k, v, visible, SINK), atol=1e-5, rtol=1e-5)
    assert (scale < 0.99).any()  # the sink matters at these values


@pytest.mark.parametrize(
    ("q_len", "k_len", "index"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_attention_mask_matches_positions(q_len: int, k_len: int, index: KeyIndex) -> None:
    mask, is_causal = attention_mask(index, q_len, k_len, torch.device("cpu"))
    expected = _visible(index, q_len, k_len)
    if mask is not None:
        assert torch.equal(mask, expected)
    elif is_causal:
        assert torch.equal(expected, torch.ones(q_len, k_len, dtype=torch.bool).tril())
    else:
        assert expected.all()


@pytest.mark.parametrize(
    ("q_len", "k_len", "index"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_sink_gradients_match_reference(q_len: int, k_len: int, index: KeyIndex) -> None:
    inputs = [t.requires_grad_() for t in (*_qkv(q_len, k_len, 2, seed=1), SINK.clone())]
    weights = torch.randn(2, 4, q_len, 6, generator=torch.Generator().manual_seed(2))
    ours = torch.autograd.grad((attend(*inputs[:3], index, sink=inputs[3]) * weights).sum(), inputs)
    visible = _visible(index, q_len, k_len)
    ref = torch.autograd.grad((_reference(*inputs[:3], visible, inputs[3]) * weights).sum(), inputs)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert ours[3].abs().min() > 0  # every head's sink gets a gradient


def _pair(
    make_arch: Callable[..., ArchitectureConfig], attention: str, window: str
) -> tuple[GPT, GPT]:
    """The same weights with ``sinks=none`` and with ``sinks=learned``."""
    models = []
    for sinks in ("none", "learned"):
        arch = make_arch(attention, init_std=0.1)
        arch.window = WINDOW.entry(window).config_class(size=4)
        arch.sinks = SINKS.entry(sinks).config_class()
        torch.manual_seed(0)
        models.append(GPT(arch, vocab_size=97).eval())
    state = models[0].state_dict()
    missing, unexpected = models[1].load_state_dict(state, strict=False)
    assert not unexpected and all(name.endswith("sinks.logits") for name in missing)
    return models[0], models[1]


@pytest.mark.parametrize("window", WINDOW.names())
@pytest.mark.parametrize("attention", ATTENTION.names())
def test_very_negative_sink_reproduces_no_sink(
    make_arch: Callable[..., ArchitectureConfig], attention: str, window: str
) -> None:
    plain, sinked = _pair(make_arch, attention, window)
    idx = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        for name, p in sinked.named_parameters():
            if name.endswith("sinks.logits"):
                p.fill_(-1e4)
        torch.testing.assert_close(sinked(idx)[0], plain(idx)[0], atol=1e-5, rtol=1e-5)
        for name, p in sinked.named_parameters():
            if name.endswith("sinks.logits"):
                p.fill_(1.0)  # a finite sink changes the output
        assert (sinked(idx)[0] - plain(idx)[0]).abs().max() > 1e-3


def test_sink_logits_are_per_head_vectors_for_adamw(
    make_arch: Callable[..., ArchitectureConfig],
) -> None:
    _, sinked = _pair(make_arch, "gqa", "all_full")
    sinks = {n: p for n, p in sinked.named_parameters() if "sinks" in n}
    assert sorted(sinks) == [f"blocks.{i}.attn.sinks.logits" for i in range(2)]
    assert all(p.shape == (4,) and torch.equal(p, torch.zeros(4)) for p in sinks.values())


def test_sink_under_bf16_autocast(make_arch: Callable[..., ArchitectureConfig]) -> None:
    _, sinked = _pair(make_arch, "gqa", "alternate")
    idx = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        reference = sinked(idx)[0]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = sinked(idx)[0]
    torch.testing.assert_close(low.float(), reference, atol=0.1, rtol=0.05)
