"""The model zoo: every attention x norm x pos x ffn combination, the KV cache, generation and
the parameter / FLOP / cache-size accounting."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from gpt5_ablate.config import ModelConfig
from gpt5_ablate.model import (
    ATTENTION,
    GPT,
    QK_NORM,
    ArchitectureConfig,
    KVCache,
    sample_next_token,
)
from gpt5_ablate.model import POSITIONS as POSITION_REGISTRY
from gpt5_ablate.model.attention.gqa import GQAConfig, MHAConfig
from gpt5_ablate.model.attention.mla import MLAConfig
from gpt5_ablate.model.ffn import GeluMLPConfig
from gpt5_ablate.model.norms import NoQKNormConfig, QKRMSNormConfig
from gpt5_ablate.model.positions import LearnedPositionsConfig, RopeConfig

ATTENTIONS = tuple(ATTENTION.names())
NORMS = tuple(QK_NORM.names())
POSITIONS = tuple(POSITION_REGISTRY.names())
FFNS = ("swiglu", "gelu")  # the dense FFNs (the ffn group's own tests cover the others)
VOCAB = 97

ALL_COMBOS = list(itertools.product(ATTENTIONS, NORMS, POSITIONS, FFNS))
COMBO_IDS = ["-".join(combo) for combo in ALL_COMBOS]

MakeGPT = Callable[..., GPT]
pytestmark = pytest.mark.usefixtures("single_thread")


def _tokens(batch: int, seq_len: int, seed: int = 0, vocab: int = VOCAB) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, seq_len), generator=torch.Generator().manual_seed(seed))


def _decode_in_chunks(
    model: GPT, idx: torch.Tensor, chunks: list[int]
) -> tuple[torch.Tensor, KVCache]:
    """Feed ``idx`` through the KV cache in pieces of the given sizes; return all logits."""
    cache = model.new_kv_cache()
    pieces, start = [], 0
    with torch.no_grad():
        for size in chunks:
            logits, _ = model(idx[:, start : start + size], kv_cache=cache)
            pieces.append(logits)
            start += size
    assert start == idx.size(1), "chunk sizes must cover the sequence"
    return torch.cat(pieces, dim=1), cache


# --- forward shape and causality -----------------------------------------------------------------


@pytest.mark.parametrize(("attention", "norm", "pos", "ffn"), ALL_COMBOS, ids=COMBO_IDS)
def test_forward_shape_and_finite_loss(
    make_gpt: MakeGPT, attention: str, norm: str, pos: str, ffn: str
) -> None:
    model = make_gpt(attention, norm, pos, ffn)
    idx, targets = _tokens(3, 20, seed=1), _tokens(3, 20, seed=2)
    logits, loss = model(idx, targets)
    assert logits.shape == (3, 20, VOCAB)
    assert loss is not None and loss.ndim == 0
    assert torch.isfinite(loss)
    # Freshly initialised logits are near zero, so the loss starts near ln(vocab).
    assert abs(loss.item() - math.log(VOCAB)) < 0.5
    assert model(idx)[1] is None


@pytest.mark.parametrize(("attention", "norm", "pos", "ffn"), ALL_COMBOS, ids=COMBO_IDS)
def test_causality(make_gpt: MakeGPT, attention: str, norm: str, pos: str, ffn: str) -> None:
    model = make_gpt(attention, norm, pos, ffn)
    idx = _tokens(2, 16, seed=3)
    for t in (0, 6, 14):
        changed = idx.clone()
        changed[:, t + 1 :] = (idx[:, t + 1 :] + 1 + _tokens(2, 15 - t, seed=t)) % VOCAB
        assert (changed[:, t + 1] != idx[:, t + 1]).all()
        with torch.no_grad():
            before, _ = model(idx)
            after, _ = model(changed)
        torch.testing.assert_close(after[:, : t + 1], before[:, : t + 1], atol=1e-5, rtol=0)
        assert (after[:, t + 1 :] - before[:, t + 1 :]).abs().max() > 1e-4


# --- KV cache ------------------------------------------------------------------------------------

CHUNK_SCHEDULES = {
    "token_by_token": [1] * 16,
    "prefill5_then_tokens": [5] + [1] * 11,
    "prefill4_chunk6_then_tokens": [4, 6] + [1] * 6,  # 6 new queries after a 4-token prefix
    "three_chunks": [3, 7, 6],
}


@pytest.mark.parametrize("schedule", list(CHUNK_SCHEDULES), ids=list(CHUNK_SCHEDULES))
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("pos", POSITIONS)
@pytest.mark.parametrize("attention", ATTENTIONS)
def test_kv_cache_matches_full_forward(
    make_gpt: MakeGPT, attention: str, pos: str, norm: str, schedule: str
) -> None:
    model = make_gpt(attention, norm, pos, "swiglu", init_std=0.1)  # sharper attention than 0.02
    idx = _tokens(2, 16, seed=4)
    with torch.no_grad():
        full, _ = model(idx)
    cached, cache = _decode_in_chunks(model, idx, CHUNK_SCHEDULES[schedule])
    assert cache.length == 16
    assert (cached - full).abs().max().item() < 1e-4


# --- MHA / GQA equivalence and a reference GQA layer ---------------------------------------------


@pytest.mark.parametrize("pos", POSITIONS)
@pytest.mark.parametrize("norm", NORMS)
def test_gqa_with_all_kv_heads_equals_mha(make_gpt: MakeGPT, norm: str, pos: str) -> None:
    """``mha`` is GQA with n_kv_heads = n_heads: same parameters, same outputs."""
    mha = make_gpt("mha", norm, pos, "swiglu", seed=0, init_std=0.1)
    gqa = make_gpt(
        "gqa", norm, pos, "swiglu", seed=1, init_std=0.1, attention_kwargs={"n_kv_heads": 4}
    )
    idx = _tokens(2, 16, seed=5)
    with torch.no_grad():
        assert (mha(idx)[0] - gqa(idx)[0]).abs().max() > 1e-3  # different weights so far
    gqa.load_state_dict(mha.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(gqa(idx)[0], mha(idx)[0], atol=0, rtol=0)


def _rms_norm(x: torch.Tensor, gain: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * gain


def _rope(x: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotate channel pairs (i, i + dim/2) of [B, H, T, dim] by position * theta^(-2i/dim)."""
    dim, seq_len = x.size(-1), x.size(-2)
    freqs = theta ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float64), freqs)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., : dim // 2], x[..., dim // 2 :]
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


def _reference_gqa(
    layer: torch.nn.Module, x: torch.Tensor, n_heads: int, n_kv_heads: int, qk_norm: bool
) -> torch.Tensor:
    """Plain softmax(q k^T / sqrt(d) + causal mask) v, each KV head repeated for its query group."""
    batch, seq_len, _ = x.shape
    head_dim = layer.q_proj.weight.size(0) // n_heads
    kv_weight = layer.kv_proj.weight
    k_weight, v_weight = kv_weight[: n_kv_heads * head_dim], kv_weight[n_kv_heads * head_dim :]

    def heads(t: torch.Tensor, count: int) -> torch.Tensor:
        return t.view(batch, seq_len, count, head_dim).transpose(1, 2)

    q = heads(x @ layer.q_proj.weight.T, n_heads)
    k = heads(x @ k_weight.T, n_kv_heads)
    v = heads(x @ v_weight.T, n_kv_heads)
    if qk_norm:
        q = _rms_norm(q, layer.qk_norm.q_norm.weight, layer.qk_norm.q_norm.eps)
        k = _rms_norm(k, layer.qk_norm.k_norm.weight, layer.qk_norm.k_norm.eps)
    q, k = _rope(q, 10000.0), _rope(k, 10000.0)
    group = n_heads // n_kv_heads
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim)
    future = torch.ones(seq_len, seq_len, dtype=torch.bool).triu(diagonal=1)
    weights = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
    y = (weights @ v).transpose(1, 2).reshape(batch, seq_len, n_heads * head_dim)
    return y @ layer.out_proj.weight.T


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("n_kv_heads", [1, 2])
def test_gqa_layer_matches_reference(make_gpt: MakeGPT, n_kv_heads: int, norm: str) -> None:
    model = make_gpt("gqa", norm, "rope", "swiglu", attention_kwargs={"n_kv_heads": n_kv_heads})
    layer = model.blocks[0].attn
    torch.manual_seed(7)
    with torch.no_grad():
        for p in layer.parameters():
            if p.ndim == 2:
                p.normal_(0.0, 0.3)  # large enough that attention is far from uniform
            else:
                p.uniform_(0.5, 1.5)  # QK-norm gains
        x = torch.randn(2, 12, 64)
        expected = _reference_gqa(layer, x, 4, n_kv_heads, qk_norm=norm == "qk_rmsnorm")
        torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)
        # A layer that ignored the grouping would differ from the reference by far more.
        assert expected.abs().max() > 0.1


# --- KV cache size ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("pos", POSITIONS)
@pytest.mark.parametrize("attention", ATTENTIONS)
def test_kv_cache_bytes_per_token_matches_cache(
    make_gpt: MakeGPT, attention: str, pos: str, dtype: torch.dtype
) -> None:
    model = make_gpt(attention, "qk_rmsnorm", pos, "swiglu").to(dtype)
    seq_len = 9
    _, cache = _decode_in_chunks(model, _tokens(1, seq_len, seed=6), [3] + [1] * 6)
    for layer in cache.layers:
        assert layer.tensors and all(t.dtype == dtype for t in layer.tensors.values())
    assert cache.nbytes() % seq_len == 0
    assert model.kv_cache_bytes_per_token(dtype) == cache.nbytes() // seq_len


@pytest.mark.parametrize("pos", POSITIONS)
def test_mla_caches_only_latent_and_rope_key(make_gpt: MakeGPT, pos: str) -> None:
    kv_lora_rank, rope_dim = 24, 6
    model = make_gpt(
        "mla", "qk_rmsnorm", pos, "swiglu",
        attention_kwargs={"kv_lora_rank": kv_lora_rank, "qk_rope_head_dim": rope_dim},
    )  # fmt: skip
    seq_len = 7
    _, cache = _decode_in_chunks(model, _tokens(1, seq_len, seed=8), [2] + [1] * 5)
    per_layer = kv_lora_rank + (rope_dim if pos == "rope" else 0)
    for layer in cache.layers:  # one tensor: [latent | shared rope key] per token
        assert set(layer.tensors) == {"ckv"}
        assert layer.tensors["ckv"].shape == (1, seq_len, per_layer)
    assert model.kv_cache_bytes_per_token(torch.float32) == 4 * 2 * per_layer


def test_small_preset_mla_cache_is_smallest() -> None:
    small = ModelConfig(name="small", n_layers=8, d_model=512, n_heads=8, max_seq_len=512)
    attentions = {"mha": MHAConfig(), "gqa": GQAConfig(), "mla": MLAConfig()}
    cache_bytes = {}
    for name, attention in attentions.items():
        arch = ArchitectureConfig(
            small, attention, QKRMSNormConfig(), RopeConfig(), GeluMLPConfig()
        )
        with torch.device("meta"):  # sizes only: no memory for 30M parameters
            model = GPT(arch, vocab_size=8192)
        cache_bytes[name] = model.kv_cache_bytes_per_token(torch.bfloat16)
    # head_dim 64; per layer: MHA 2*8*64, GQA 2*2*64, MLA 2*64 (latent) + 32 (rope key); bf16: 2 B.
    assert cache_bytes == {"mha": 8 * 2 * 1024, "gqa": 8 * 2 * 256, "mla": 8 * 2 * 160}
    assert cache_bytes["mla"] < cache_bytes["gqa"] < cache_bytes["mha"]


# --- generation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_greedy_generation_equals_uncached_argmax(make_gpt: MakeGPT, attention: str) -> None:
    model = make_gpt(attention, "qk_rmsnorm", "rope", "swiglu", init_std=0.1)
    prompt = _tokens(2, 5, seed=9)
    out = model.generate(prompt, max_new_tokens=12, temperature=0)
    assert out.shape == (2, 17)
    assert torch.equal(out[:, :5], prompt)
    assert torch.equal(model.generate(prompt, max_new_tokens=12, temperature=0), out)

    expected = prompt
    with torch.no_grad():
        for _ in range(12):
            logits, _ = model(expected)  # full recomputation, no cache
            expected = torch.cat((expected, logits[:, -1].argmax(dim=-1, keepdim=True)), dim=1)
    assert torch.equal(out, expected)


def test_seeded_sampling_is_reproducible(make_gpt: MakeGPT) -> None:
    model = make_gpt("gqa", "qk_rmsnorm", "rope", "swiglu")
    prompt = _tokens(2, 4, seed=10)

    def sample(seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return model.generate(prompt, 16, temperature=1.0, top_k=50, generator=generator)

    assert torch.equal(sample(123), sample(123))
    assert not torch.equal(sample(123), sample(456))  # the generator is actually used


def test_generate_rejects_too_long_and_stops_at_eos(make_gpt: MakeGPT) -> None:
    model = make_gpt("mha", "none", "learned", "gelu")  # max_seq_len 32
    prompt = _tokens(1, 30, seed=11)
    with pytest.raises(ValueError, match="max_seq_len=32"):
        model.generate(prompt, max_new_tokens=3)
    first = model.generate(prompt[:, :4], 1, temperature=0)[0, -1].item()
    out = model.generate(prompt[:, :4], 10, temperature=0, eos_token_id=first)
    assert out.shape == (1, 5)


def test_sample_next_token_filters() -> None:
    logits = torch.randn(8, VOCAB, generator=torch.Generator().manual_seed(12)) * 3
    argmax = logits.argmax(dim=-1, keepdim=True)
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(sample_next_token(logits, temperature=0.0), argmax)
    for _ in range(5):
        assert torch.equal(sample_next_token(logits, 1.0, top_k=1, generator=generator), argmax)
        assert torch.equal(sample_next_token(logits, 1.0, top_p=1e-6, generator=generator), argmax)
    # top-k: every draw lies among the k largest logits of its row.
    top5 = logits.topk(5, dim=-1).indices
    for _ in range(50):
        token = sample_next_token(logits, 2.0, top_k=5, generator=generator)
        assert (token == top5).any(dim=-1).all()


# --- accounting ---------------------------------------------------------------------------------


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("pos", POSITIONS)
@pytest.mark.parametrize("attention", ATTENTIONS)
def test_n_params_counts_unique_tensors(
    make_gpt: MakeGPT, attention: str, pos: str, tie: bool
) -> None:
    model = make_gpt(attention, "qk_rmsnorm", pos, "swiglu", tie_embeddings=tie)
    unique = {id(p): p.numel() for _, p in model.named_parameters(remove_duplicate=False)}
    assert model.n_params() == sum(unique.values())
    assert (model.lm_head.weight is model.token_embedding.weight) == tie
    embedding = VOCAB * 64 + (32 * 64 if pos == "learned" else 0)
    assert model.n_params(non_embedding=True) == model.n_params() - embedding


def test_tied_head_saves_one_embedding_matrix(make_gpt: MakeGPT) -> None:
    tied = make_gpt("gqa", "qk_rmsnorm", "rope", "swiglu", tie_embeddings=True)
    untied = make_gpt("gqa", "qk_rmsnorm", "rope", "swiglu", tie_embeddings=False)
    assert untied.n_params() - tied.n_params() == VOCAB * 64


@pytest.mark.parametrize("seq_len", [None, 16])
def test_flops_per_token_hand_formula(make_gpt: MakeGPT, seq_len: int | None) -> None:
    """MHA + GELU, L layers, width d, vocab V, context T:
    N_linear = L * (4 d^2 [q,k,v,out] + 8 d^2 [up 4d, down 4d]) + V d [lm_head, even when tied];
    attention forward FLOPs per token and layer = 2 * H * (hd + hd) * T = 4 d T;
    flops = 6 N_linear + 3 * L * 4 d T."""
    model = make_gpt("mha", "qk_rmsnorm", "learned", "gelu")
    n_layers, d, context = 2, 64, seq_len or 32
    n_linear = n_layers * (4 * d * d + 8 * d * d) + VOCAB * d
    expected = 6 * n_linear + 3 * n_layers * 4 * d * context
    assert model.flops_per_token(seq_len) == expected


def test_gpt2_124m_parameter_count() -> None:
    """Ours vs GPT-2 small: no attention biases and RMSNorm (no bias) instead of LayerNorm.

    Per block: 2 norm gains (2d) + q,k,v,out (4 d^2) + GELU MLP with biases (8 d^2 + 5d);
    plus token table V d (tied head), position table T d and the final norm gain d.
    GPT-2 small has 124,439,808; ours has 56,064 fewer (12 x 4,608 biases + 768 final-LN bias).
    """
    vocab, d, n_layers, context = 50257, 768, 12, 1024
    arch = ArchitectureConfig(
        ModelConfig(name="gpt2_124m", n_layers=n_layers, d_model=d, n_heads=12, max_seq_len=context),
        MHAConfig(), NoQKNormConfig(), LearnedPositionsConfig(), GeluMLPConfig(),
    )  # fmt: skip
    with torch.device("meta"):
        model = GPT(arch, vocab)
    expected = vocab * d + context * d + n_layers * (2 * d + 12 * d * d + 5 * d) + d
    assert expected == 124_383_744
    assert model.n_params() == expected
    assert abs(model.n_params() - 124_439_808) / 124_439_808 < 0.01


def test_loss_is_mean_next_token_cross_entropy(make_gpt: MakeGPT) -> None:
    model = make_gpt("mla", "qk_rmsnorm", "rope", "gelu")
    idx, targets = _tokens(2, 10, seed=13), _tokens(2, 10, seed=14)
    logits, loss = model(idx, targets)
    assert loss is not None
    torch.testing.assert_close(
        loss, F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))
    )
