"""The mixture-of-experts FFN: equivalence with dense SwiGLU, routing and the load-balancing loss
by hand, capacity dropping, the loss / metrics plumbing, accounting, validation and overfitting."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gpt5_ablate.config import ModelConfig
from gpt5_ablate.errors import ConfigError
from gpt5_ablate.model import ATTENTION, GPT, ArchitectureConfig
from gpt5_ablate.model.ffn import MixtureOfExperts, MoEConfig, SwiGLU, SwiGLUConfig
from gpt5_ablate.model.ffn.moe_routing import (
    expert_capacity,
    load_balancing_loss,
    plan_dispatch,
    route,
)
from tests.test_optim import steps_to_overfit

MakeArch = Callable[..., ArchitectureConfig]
MakeGPT = Callable[..., GPT]
VOCAB = 97
pytestmark = pytest.mark.usefixtures("single_thread")


def _moe_gpt(make_arch: MakeArch, attention: str = "gqa", seed: int = 0, **moe: Any) -> GPT:
    arch = make_arch(attention, ffn="moe")
    arch.ffn = MoEConfig(**moe)
    torch.manual_seed(seed)
    return GPT(arch, VOCAB).eval()


def _tokens(batch: int, seq_len: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq_len), generator=torch.Generator().manual_seed(seed))


# --- one expert, top-1 == dense SwiGLU -----------------------------------------------------------


def test_one_expert_equals_dense_swiglu_layer() -> None:
    model = ModelConfig(name="t", n_layers=2, d_model=32, n_heads=4, max_seq_len=16)
    torch.manual_seed(0)
    dense = SwiGLU(SwiGLUConfig(hidden_dim=48), model)
    moe = MixtureOfExperts(MoEConfig(n_experts=1, top_k=1, hidden_dim=48), model)
    with torch.no_grad():
        moe.w_gate[0].copy_(dense.gate_proj.weight)
        moe.w_up[0].copy_(dense.up_proj.weight)
        moe.w_down[0].copy_(dense.down_proj.weight)
    x = torch.randn(3, 7, 32)
    for mode in (True, False):  # training (capacity path) and evaluation alike
        moe.train(mode)
        torch.testing.assert_close(moe(x), dense(x), atol=1e-6, rtol=1e-6)


def test_one_expert_gpt_equals_dense_gpt(make_arch: MakeArch, make_gpt: MakeGPT) -> None:
    dense = make_gpt("gqa", "qk_rmsnorm", "rope", "swiglu")
    moe = _moe_gpt(make_arch, n_experts=1, top_k=1, hidden_dim=dense.ffn_hidden_dim())
    state = {}
    for name, tensor in dense.state_dict().items():
        for proj, expert in (("gate_proj", "w_gate"), ("up_proj", "w_up"), ("down_proj", "w_down")):
            if name.endswith(f"ffn.{proj}.weight"):
                name, tensor = name.replace(f"{proj}.weight", expert), tensor.unsqueeze(0)
        state[name] = tensor
    state.update({k: v for k, v in moe.state_dict().items() if "router" in k})
    moe.load_state_dict(state, strict=True)
    idx, targets = _tokens(2, 12, seed=1), _tokens(2, 12, seed=2)
    with torch.no_grad():
        dense_logits, dense_loss = dense(idx, targets)
        logits, loss = moe(idx, targets)  # eval: the pure cross-entropy
        torch.testing.assert_close(logits, dense_logits, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(loss, dense_loss, atol=1e-6, rtol=1e-6)
        # In training the balance loss of one expert is exactly 1 per layer (f = P = 1).
        _, train_loss = moe.train()(idx, targets)
    torch.testing.assert_close(train_loss, dense_loss + 0.01 * 2, atol=1e-6, rtol=1e-6)


# --- routing and the load-balancing loss by hand ---------------------------------------------------

# 4 tokens, 2 experts: the router's logits, chosen by hand.
LOGITS = torch.tensor([[2.0, 0.0], [1.0, 0.0], [0.0, 1.0], [3.0, 0.0]])


def _hand_balance_loss(experts: list[list[int]], top_k: int) -> float:
    """E sum_i f_i P_i with f over token-assignments and P the mean softmax probability."""
    probs = [[math.exp(v) / sum(math.exp(u) for u in row) for v in row] for row in LOGITS.tolist()]
    n, e = len(probs), 2
    f = [sum(choice.count(i) for choice in experts) / (n * top_k) for i in range(e)]
    p = [sum(row[i] for row in probs) / n for i in range(e)]
    return e * sum(fi * pi for fi, pi in zip(f, p, strict=True))


def test_load_balancing_loss_by_hand() -> None:
    top1 = route(LOGITS, top_k=1)
    assert top1.experts.tolist() == [[0], [0], [1], [0]]
    assert torch.equal(top1.gates, torch.ones(4, 1))  # renormalised top-1 gate
    plan = plan_dispatch(top1.experts, 2, capacity=None)
    assert plan.routed.tolist() == [3, 1]
    # f = (3/4, 1/4); P_0 = mean(sigmoid(2), sigmoid(1), sigmoid(-1), sigmoid(3)).
    p0 = sum(1 / (1 + math.exp(-v)) for v in (2.0, 1.0, -1.0, 3.0)) / 4
    expected = 2 * (0.75 * p0 + 0.25 * (1 - p0))
    assert expected == pytest.approx(_hand_balance_loss([[0], [0], [1], [0]], 1))
    loss = load_balancing_loss(top1.probs, plan.routed, top_k=1)
    assert loss.item() == pytest.approx(expected, abs=1e-6)

    # Top-2 of 2 experts: every expert gets every token, f = (1/2, 1/2), so the loss is 1.
    top2 = route(LOGITS, top_k=2)
    loss2 = load_balancing_loss(top2.probs, plan_dispatch(top2.experts, 2, None).routed, 2)
    assert loss2.item() == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(top2.gates.sum(-1), torch.ones(4))


def _two_expert_layer(top_k: int = 1, **moe: Any) -> MixtureOfExperts:
    """d_model 2, router = identity: the router's logits are the tokens themselves."""
    model = ModelConfig(name="t", n_layers=1, d_model=2, n_heads=1, max_seq_len=8)
    torch.manual_seed(0)
    layer = MixtureOfExperts(MoEConfig(n_experts=2, top_k=top_k, hidden_dim=3, **moe), model)
    with torch.no_grad():
        layer.router.weight.copy_(torch.eye(2))
    return layer


def test_layer_reports_the_hand_computed_balance_loss() -> None:
    layer = _two_expert_layer(aux_loss_coef=0.5)
    layer(LOGITS.unsqueeze(0))  # [1, 4, 2]
    expected = _hand_balance_loss([[0], [0], [1], [0]], 1)
    metrics = layer.aux_metrics()
    assert metrics["moe/aux_loss"].item() == pytest.approx(expected, abs=1e-6)
    assert metrics["moe/max_load"].item() == pytest.approx(2 * 3 / 4)
    assert metrics["moe/dropped_fraction"].item() == 0.0
    aux = layer.aux_loss()
    assert aux is not None and aux.requires_grad
    assert aux.item() == pytest.approx(0.5 * expected, abs=1e-6)


def test_output_is_gate_weighted_sum_of_experts() -> None:
    layer = _two_expert_layer(top_k=2, renormalize=True)
    x = LOGITS.unsqueeze(0)
    out = layer(x)[0]
    probs = LOGITS.softmax(-1)  # top-2 of 2, renormalised: the gates are the probabilities
    expected = probs[:, :1] * layer.expert(0, LOGITS) + probs[:, 1:] * layer.expert(1, LOGITS)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-6)


# --- capacity ---------------------------------------------------------------------------------------


def test_capacity_drops_the_latest_tokens_in_training_only() -> None:
    layer = _two_expert_layer(capacity_factor=1.0)  # capacity ceil(1 x 4 x 1 / 2) = 2
    assert expert_capacity(4, 1, 2, 1.0) == 2
    x = LOGITS.unsqueeze(0)  # routed to experts 0, 0, 1, 0: token 3 is expert 0's third
    layer.eval()
    full = layer(x)[0]
    assert layer.aux_metrics()["moe/dropped_fraction"].item() == 0.0
    layer.train()
    capped = layer(x)[0]
    torch.testing.assert_close(capped[:3], full[:3], atol=0, rtol=0)
    assert torch.equal(capped[3], torch.zeros(2)) and full[3].abs().sum() > 0
    assert layer.aux_metrics()["moe/dropped_fraction"].item() == pytest.approx(1 / 4)


def test_capacity_plan_with_top2() -> None:
    # 3 tokens, 2 experts, top-2: 6 assignments, 3 per expert; capacity ceil(0.5 x 3 x 2 / 2) = 2.
    experts = torch.tensor([[0, 1], [1, 0], [0, 1]])
    capacity = expert_capacity(3, 2, 2, 0.5)
    assert capacity == 2
    plan = plan_dispatch(experts, 2, capacity)
    # Expert 0 keeps tokens 0 and 1 (assignments 0 and 3), expert 1 tokens 0 and 1 (1 and 2).
    assert plan.assignments.tolist() == [0, 3, 1, 2]
    assert plan.counts == [2, 2] and plan.dropped.item() == 2
    assert plan.routed.tolist() == [3, 3]


# --- the loss and the metrics of a GPT ---------------------------------------------------------------


def test_training_loss_adds_weighted_aux_and_eval_returns_cross_entropy(
    make_arch: MakeArch, make_gpt: MakeGPT
) -> None:
    model = _moe_gpt(make_arch, aux_loss_coef=0.1, n_experts=4, top_k=2)
    idx, targets = _tokens(2, 16, seed=3), _tokens(2, 16, seed=4)
    logits, loss = model.train()(idx, targets)
    assert loss is not None
    cross_entropy = F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))
    metrics = model.aux_metrics()
    assert set(metrics) == {
        "moe/aux_loss",
        "moe/dropped_fraction",
        "moe/max_load",
        "moe/lm_loss",
        "moe/aux_loss_weighted",
    }
    assert all(not v.requires_grad and v.ndim == 0 for v in metrics.values())
    layer_aux = [block.ffn.aux_metrics()["moe/aux_loss"] for block in model.blocks]
    torch.testing.assert_close(metrics["moe/aux_loss"], torch.stack(layer_aux).mean())
    torch.testing.assert_close(metrics["moe/lm_loss"], cross_entropy.detach())
    torch.testing.assert_close(metrics["moe/aux_loss_weighted"], 0.1 * torch.stack(layer_aux).sum())
    torch.testing.assert_close(loss, cross_entropy + 0.1 * torch.stack(layer_aux).sum())
    loss.backward()
    assert model.blocks[0].ffn.router.weight.grad.abs().sum() > 0

    with torch.no_grad():
        eval_logits, eval_loss = model.eval()(idx, targets)
    assert eval_loss is not None
    torch.testing.assert_close(
        eval_loss, F.cross_entropy(eval_logits.reshape(-1, VOCAB), targets.reshape(-1))
    )
    assert "moe/aux_loss" in model.aux_metrics()
    dense = make_gpt("gqa", "qk_rmsnorm", "rope", "swiglu")
    dense(idx, targets)
    assert dense.aux_metrics() == {}


def test_router_learns_from_the_language_model_loss_with_top2(make_arch: MakeArch) -> None:
    model = _moe_gpt(make_arch, aux_loss_coef=0.0, n_experts=4, top_k=2).train()
    _, loss = model(_tokens(2, 16, seed=5), _tokens(2, 16, seed=6))
    assert loss is not None
    torch.testing.assert_close(loss, model.aux_metrics()["moe/lm_loss"])  # no aux term
    loss.backward()
    assert model.blocks[0].ffn.router.weight.grad.abs().sum() > 0
    assert model.blocks[0].ffn.w_down.grad.abs().sum() > 0


@pytest.mark.parametrize("attention", ATTENTION.names())
def test_moe_forward_causal_and_kv_cache(make_arch: MakeArch, attention: str) -> None:
    model = _moe_gpt(make_arch, attention, n_experts=4, top_k=2, capacity_factor=1.0)
    idx = _tokens(2, 16, seed=7)
    with torch.no_grad():
        full, _ = model(idx)
        changed = idx.clone()
        changed[:, 9:] = (changed[:, 9:] + 1) % VOCAB
        torch.testing.assert_close(model(changed)[0][:, :9], full[:, :9], atol=1e-5, rtol=0)
        cache = model.new_kv_cache()
        pieces = [model(idx[:, :5], kv_cache=cache)[0]]
        pieces += [model(idx[:, t : t + 1], kv_cache=cache)[0] for t in range(5, 16)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-4, rtol=0)


# --- accounting by hand ----------------------------------------------------------------------------


def test_active_params_and_flops_by_hand(make_arch: MakeArch) -> None:
    """2 layers, d 64, 4 experts of width 48, top-2, context 32. Per layer the FFN holds a router
    (4 x 64) and 4 experts of 3 x 48 x 64; a token uses the router and 2 experts."""
    n_layers, d, n_experts, top_k, hidden = 2, 64, 4, 2, 48
    model = _moe_gpt(make_arch, n_experts=n_experts, top_k=top_k, hidden_dim=hidden)
    router, expert = n_experts * d, 3 * hidden * d
    for block in model.blocks:
        assert block.ffn.n_params() == router + n_experts * expert == 37_120
        assert block.ffn.n_params(active=True) == router + top_k * expert == 18_688
    rest = sum(p.numel() for p in model.parameters()) - n_layers * 37_120
    assert model.n_params() == rest + n_layers * 37_120
    assert model.n_params(active=True) == rest + n_layers * 18_688
    assert model.n_params() - model.n_params(active=True) == 36_864
    assert model.n_params(non_embedding=True, active=True) == model.n_params(active=True) - 97 * d

    # FLOPs: 6 x matmul weights; the inactive experts' weights are 2 layers x 2 x 3 x 48 x 64.
    assert model.flops_per_token(32) == model.flops_per_token(32, active=True)
    assert model.flops_per_token(32, active=False) - model.flops_per_token(32) == 6 * 36_864
    # Against a dense SwiGLU of width top_k x 48 = 96 (same active expert weights): the router,
    # 6 x 2 layers x 4 x 64 FLOPs.
    dense_arch = make_arch("gqa", ffn="swiglu")
    dense_arch.ffn.hidden_dim = top_k * hidden
    dense = GPT(dense_arch, VOCAB)
    assert model.flops_per_token(32) - dense.flops_per_token(32) == 6 * n_layers * router
    assert dense.flops_per_token(32, active=False) == dense.flops_per_token(32)
    assert model.ffn_hidden_dim() == hidden


def test_default_expert_width_is_dense_width_over_top_k() -> None:
    small = ModelConfig(name="small", n_layers=8, d_model=512, n_heads=8, max_seq_len=512)
    assert SwiGLUConfig().resolved_hidden_dim(small) == 1376
    assert MoEConfig().resolved_hidden_dim(small) == 704  # ceil(1376 / 2) = 688 -> 704
    assert MoEConfig(top_k=1).resolved_hidden_dim(small) == 1376
    assert MoEConfig(top_k=4, n_experts=32).resolved_hidden_dim(small) == 352


# --- validation before allocation --------------------------------------------------------------------


@pytest.fixture
def no_allocation(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Building any module that owns parameters, or any expert tensor, fails the test."""

    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a module or tensor was allocated before the config was validated")

    for module in (nn.Linear, nn.Embedding, nn.RMSNorm):
        monkeypatch.setattr(module, "__init__", forbidden)
    monkeypatch.setattr(torch, "empty", forbidden)
    yield


BAD_MOE = [
    ("no_experts", {"n_experts": 0, "top_k": 1}, ["ffn.n_experts=0", ">= 1"]),
    ("top_k_above_experts", {"n_experts": 4, "top_k": 5}, ["ffn.top_k=5", "[1, ffn.n_experts=4]"]),
    ("top_k_zero", {"n_experts": 4, "top_k": 0}, ["ffn.top_k=0", "[1, ffn.n_experts=4]"]),
    ("zero_capacity", {"capacity_factor": 0.0}, ["ffn.capacity_factor=0.0", "> 0", "null"]),
    ("negative_capacity", {"capacity_factor": -1.0}, ["ffn.capacity_factor=-1.0", "> 0"]),
    ("negative_coef", {"aux_loss_coef": -0.1}, ["ffn.aux_loss_coef=-0.1", ">= 0"]),
    ("zero_width", {"hidden_dim": 0}, ["ffn.hidden_dim=0", "positive"]),
    ("multiple_of", {"multiple_of": 0}, ["ffn.multiple_of=0", "positive"]),
]


@pytest.mark.usefixtures("no_allocation")
@pytest.mark.parametrize(
    ("kwargs", "needles"), [c[1:] for c in BAD_MOE], ids=[c[0] for c in BAD_MOE]
)
def test_bad_moe_config_fails_before_allocation(
    make_arch: MakeArch, kwargs: dict[str, Any], needles: list[str]
) -> None:
    arch = make_arch(ffn="moe")
    arch.ffn = MoEConfig(**kwargs)
    builds = (
        arch.validate,
        lambda: GPT(arch, VOCAB),
        lambda: MixtureOfExperts(arch.ffn, arch.model),
    )
    for build in builds:
        with pytest.raises(ConfigError) as error:
            build()
        for needle in needles:
            assert needle in str(error.value), (needle, str(error.value))


# --- training ------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("capacity_factor", [None, 1.25], ids=["dropless", "capacity1.25"])
@pytest.mark.parametrize("optimizer", ["muon_adamw", "adamw"])
def test_moe_overfits_one_batch(
    make_arch: MakeArch, optimizer: str, capacity_factor: float | None
) -> None:
    arch = make_arch("gqa", ffn="moe", max_seq_len=16)
    arch.ffn = MoEConfig(n_experts=4, top_k=2, capacity_factor=capacity_factor)
    torch.manual_seed(0)
    model = GPT(arch, vocab_size=64)
    assert steps_to_overfit(model, optimizer) is not None
