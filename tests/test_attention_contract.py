"""The model groups' written contract: protocols, ``orthogonalize_blocks`` on fused weights,
old checkpoint layouts (through ``load_state_dict`` and safetensors' ``load_model``), norms that
keep the fused RMSNorm kernel under bf16 autocast, and every new option overfitting a batch."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_file
from torch.overrides import TorchFunctionMode

from gpt5_ablate.model import ATTENTION, GPT, POSITIONS, QK_NORM, SINKS, WINDOW, ArchitectureConfig
from gpt5_ablate.model.attention.base import AttentionContext, AttentionLayer
from gpt5_ablate.model.attention.sinks import AttentionSinks
from gpt5_ablate.model.attention.window import WindowPattern
from gpt5_ablate.model.norms import QKNorm, QKNormContext
from gpt5_ablate.model.positions import PositionEncoding

VOCAB = 97
MakeArch = Callable[..., ArchitectureConfig]
pytestmark = pytest.mark.usefixtures("single_thread")


def _model(make_arch: MakeArch, attention: str, seed: int = 0, **kw: Any) -> GPT:
    window, sinks = kw.pop("window", "all_full"), kw.pop("sinks", "none")
    arch = make_arch(attention, **kw)
    arch.window = WINDOW.entry(window).config_class(size=4)
    arch.sinks = SINKS.entry(sinks).config_class()
    torch.manual_seed(seed)
    return GPT(arch, VOCAB).eval()


def _tokens(batch: int, seq_len: int, seed: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq_len), generator=torch.Generator().manual_seed(seed))


# --- protocols ----------------------------------------------------------------------------------


@pytest.mark.parametrize("attention", ATTENTION.names())
def test_components_follow_their_protocols(make_arch: MakeArch, attention: str) -> None:
    model = _model(make_arch, attention, window="alternate", sinks="learned")
    m = model.arch.model
    for block in model.blocks:
        assert isinstance(block.attn, AttentionLayer)
        assert block.attn.out_proj.is_residual_projection
        assert isinstance(block.attn.qk_norm, QKNorm)
        assert isinstance(block.attn.sinks, AttentionSinks)
    assert isinstance(model.positions, PositionEncoding)
    for name in WINDOW.names():
        assert isinstance(WINDOW.build(WINDOW.entry(name).config_class(), m), WindowPattern)
    for name in QK_NORM.names():
        norm = QK_NORM.build(QK_NORM.entry(name).config_class(), QKNormContext(16))
        assert isinstance(norm, QKNorm)
    for name in POSITIONS.names():
        assert isinstance(
            POSITIONS.build(POSITIONS.entry(name).config_class(), m), PositionEncoding
        )
    # Every block parameter sits under blocks.<i>. (the optimizer's Muon/AdamW split).
    attention_params = {n for n, _ in model.named_parameters() if ".attn." in n}
    assert attention_params and all(n.startswith("blocks.") for n in attention_params)


@pytest.mark.parametrize("attention", ATTENTION.names())
def test_validation_context_needs_no_factories(make_arch: MakeArch, attention: str) -> None:
    arch = make_arch(attention)
    arch.attention.validate(AttentionContext(model=arch.model, rotary=True))
    layer = ATTENTION.build(arch.attention, AttentionContext(model=arch.model, rotary=False))
    assert layer(torch.randn(1, 5, 64)).shape == (1, 5, 64)  # bare layer: no norm, rotation, sinks


# --- Muon metadata --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attention", "kwargs", "pos", "expected"),
    [
        ("mha", {}, "rope", {"kv_proj": (64, 64)}),
        ("gqa", {"n_kv_heads": 2}, "rope", {"kv_proj": (32, 32)}),
        ("gqa", {"n_kv_heads": 1}, "learned", {"kv_proj": (16, 16)}),
        ("mla", {"kv_lora_rank": 24, "qk_rope_head_dim": 6}, "rope", {"kv_down": (24, 6)}),
        ("mla", {"kv_lora_rank": 24}, "learned", {}),  # no rotary key: kv_down is the latent only
    ],
)
def test_orthogonalize_blocks_on_fused_weights(
    make_arch: MakeArch, attention: str, kwargs: dict[str, Any], pos: str, expected: dict[str, Any]
) -> None:
    model = _model(make_arch, attention, pos=pos, attention_kwargs=kwargs)
    for i, block in enumerate(model.blocks):
        found = {}
        for name, p in block.attn.named_parameters():
            blocks = getattr(p, "orthogonalize_blocks", None)
            if blocks is not None:
                assert p.ndim == 2 and sum(blocks) == p.shape[0], name
                found[name.removesuffix(".weight")] = tuple(blocks)
        assert found == expected, i


def test_orthogonalize_blocks_survive_dtype_and_device_moves(make_arch: MakeArch) -> None:
    model = _model(make_arch, "gqa").to(torch.bfloat16).to("cpu")
    assert model.blocks[0].attn.kv_proj.weight.orthogonalize_blocks == (32, 32)


def test_gqa_kv_blocks_are_keys_then_values(make_arch: MakeArch) -> None:
    layer = _model(make_arch, "gqa", norm="none", pos="learned").blocks[0].attn
    x = torch.randn(1, 3, 64)
    k_rows, _ = layer.kv_proj.weight.orthogonalize_blocks
    kv = layer.kv_proj(x)
    k_heads = kv.view(1, 3, 2 * layer.n_kv_heads, layer.head_dim)[:, :, : layer.n_kv_heads]
    torch.testing.assert_close(k_heads.flatten(2), x @ layer.kv_proj.weight[:k_rows].T)


# --- old checkpoint layouts ---------------------------------------------------------------------


def _old_mha_state(model: GPT) -> dict[str, torch.Tensor]:
    """The layout of the former MHA module: one fused qkv_proj (rows Q | K | V) per layer."""
    state = dict(model.state_dict())
    for i in range(len(model.blocks)):
        prefix = f"blocks.{i}.attn."
        q, kv = state.pop(prefix + "q_proj.weight"), state.pop(prefix + "kv_proj.weight")
        state[prefix + "qkv_proj.weight"] = torch.cat((q, kv))
    return state


def _old_mla_state(model: GPT) -> dict[str, torch.Tensor]:
    """The former MLA layout: one kv_up whose rows are [k_nope_h | v_h] for each head h."""
    state = dict(model.state_dict())
    for i, block in enumerate(model.blocks):
        prefix, attn = f"blocks.{i}.attn.", block.attn
        k = state.pop(prefix + "k_up.weight").view(attn.n_heads, attn.nope_dim, -1)
        v = state.pop(prefix + "v_up.weight").view(attn.n_heads, attn.v_dim, -1)
        state[prefix + "kv_up.weight"] = torch.cat((k, v), dim=1).flatten(0, 1)
    return state


OLD_LAYOUTS = {"mha": _old_mha_state, "mla": _old_mla_state}


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("attention", list(OLD_LAYOUTS))
def test_old_checkpoint_layout_loads(
    make_arch: MakeArch, tmp_path: Path, attention: str, tie: bool
) -> None:
    source = _model(make_arch, attention, seed=0, init_std=0.1, tie_embeddings=tie)
    old = OLD_LAYOUTS[attention](source)
    assert not set(old) <= set(source.state_dict())  # really a different layout
    idx = _tokens(2, 12, seed=5)
    with torch.no_grad():
        expected = source(idx)[0]

    fresh = _model(make_arch, attention, seed=1, init_std=0.1, tie_embeddings=tie)
    fresh.load_state_dict(old, strict=True)
    with torch.no_grad():
        assert torch.equal(fresh(idx)[0], expected)

    # As checkpoints are read: safetensors' load_model (strict), which calls load_state_dict.
    # A tied head is stored once, as save_model does (it keeps lm_head.weight).
    on_disk = {k: v.contiguous() for k, v in old.items()}
    if tie:
        del on_disk["token_embedding.weight"]
    save_file(on_disk, str(tmp_path / "model.safetensors"))
    fresh = _model(make_arch, attention, seed=2, init_std=0.1, tie_embeddings=tie)
    missing, unexpected = load_model(fresh, str(tmp_path / "model.safetensors"))
    assert not missing and not unexpected
    assert (fresh.lm_head.weight is fresh.token_embedding.weight) == tie
    with torch.no_grad():
        assert torch.equal(fresh(idx)[0], expected)


# --- norms under bf16 autocast ------------------------------------------------------------------


class RMSNormDtypes(TorchFunctionMode):
    """Records (input dtype, weight dtype) of every F.rms_norm call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[torch.dtype, torch.dtype | None]] = []

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func is F.rms_norm:
            weight = args[2] if len(args) > 2 else kwargs.get("weight")
            self.calls.append((args[0].dtype, None if weight is None else weight.dtype))
        return func(*args, **kwargs)


@pytest.mark.parametrize("q_lora_rank", [0, 16])
@pytest.mark.parametrize("attention", ATTENTION.names())
def test_norms_run_in_input_dtype_under_autocast(
    make_arch: MakeArch, attention: str, q_lora_rank: int
) -> None:
    if attention != "mla" and q_lora_rank:
        pytest.skip("q_lora_rank is an MLA key")
    kwargs = {"attention_kwargs": {"q_lora_rank": q_lora_rank}} if q_lora_rank else {}
    model = _model(make_arch, attention, init_std=0.1, **kwargs)
    idx = _tokens(2, 12, seed=6)
    with torch.no_grad():
        reference = model(idx)[0]
        spy = RMSNormDtypes()
        with (
            warnings.catch_warnings(record=True) as caught,
            torch.autocast("cpu", dtype=torch.bfloat16),
            spy,
        ):
            warnings.simplefilter("always")
            low = model(idx)[0]
    assert not [w for w in caught if "Mismatch dtype" in str(w.message)]
    mismatched = [c for c in spy.calls if c[1] is not None and c[0] != c[1]]
    assert not mismatched, mismatched
    assert any(c[0] == torch.bfloat16 for c in spy.calls)  # the QK / latent norms ran in bf16
    torch.testing.assert_close(low.float(), reference, atol=0.1, rtol=0.05)


# --- every option trains ------------------------------------------------------------------------

OVERFIT = list(itertools.product(ATTENTION.names(), WINDOW.names(), SINKS.names()))


@pytest.mark.parametrize(
    ("attention", "window", "sinks"), OVERFIT, ids=["-".join(c) for c in OVERFIT]
)
def test_overfits_a_fixed_batch(
    make_arch: MakeArch, attention: str, window: str, sinks: str
) -> None:
    model = _model(make_arch, attention, window=window, sinks=sinks).train()
    idx = _tokens(4, 17, seed=7)
    inputs, targets = idx[:, :-1], idx[:, 1:]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        _, loss = model(inputs, targets)
        assert loss is not None
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::5]
    if sinks == "learned":  # the sinks were trained too
        assert any(
            p.grad is not None and p.grad.abs().sum() > 0
            for n, p in model.named_parameters()
            if n.endswith("sinks.logits")
        )
