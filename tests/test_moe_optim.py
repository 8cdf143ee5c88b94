"""Optimizers with a mixture of experts: the expert tensors are batches of matrices for Muon, the
router goes to AdamW (also after a parameter swap such as FSDP2's)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from gpt5_ablate.model import ATTENTION, GPT, ArchitectureConfig
from gpt5_ablate.model.ffn import MoEConfig
from gpt5_ablate.optim import Muon, MuonAdamWConfig, build_muon_adamw, split_parameters

MakeArch = Callable[..., ArchitectureConfig]
pytestmark = pytest.mark.usefixtures("single_thread")


def _gaussian(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _ids(named: list[tuple[str, nn.Parameter]]) -> set[int]:
    return {id(p) for _, p in named}


def _optimizer_ids(opt: torch.optim.Optimizer) -> set[int]:
    return {id(p) for group in opt.param_groups for p in group["params"]}


def test_muon_expert_batch_equals_separate_matrices() -> None:
    """A 3-D [experts, out, in] parameter is a batch of matrices, each orthogonalised alone."""
    experts = nn.Parameter(_gaussian(3, 10, 4, seed=1))
    separate = [nn.Parameter(t.clone()) for t in experts.detach().unbind(0)]
    opt_experts = Muon([experts], lr=0.1, momentum=0.9, ns_dtype="fp32")
    opt_separate = Muon(separate, lr=0.1, momentum=0.9, ns_dtype="fp32")
    for step in range(2):
        grad = _gaussian(3, 10, 4, seed=20 + step)
        experts.grad = grad.clone()
        for p, g in zip(separate, grad.unbind(0), strict=True):
            p.grad = g.clone()
        opt_experts.step()
        opt_separate.step()
    torch.testing.assert_close(
        experts.detach(), torch.stack([p.detach() for p in separate]), atol=1e-7, rtol=0
    )


@pytest.mark.parametrize("attention", sorted(ATTENTION.names()))
def test_split_sends_router_to_adamw_and_experts_to_muon(
    make_arch: MakeArch, attention: str
) -> None:
    arch = make_arch(attention, ffn="moe")
    arch.ffn = MoEConfig(n_experts=4, top_k=2)
    model = GPT(arch, vocab_size=97)
    split = split_parameters(model)
    routers = {id(b.ffn.router.weight) for b in model.blocks}
    experts = {id(getattr(b.ffn, w)) for b in model.blocks for w in ("w_gate", "w_up", "w_down")}
    assert routers <= _ids(split.embeddings_and_head) and not routers & _ids(split.hidden_matrices)
    assert experts <= _ids(split.hidden_matrices)
    assert all(p.ndim in (2, 3) for _, p in split.hidden_matrices)
    muon, adamw = build_muon_adamw(MuonAdamWConfig(), model)
    assert experts <= _optimizer_ids(muon) and routers <= _optimizer_ids(adamw)
    decayed = {id(p) for g in adamw.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert routers <= decayed
    assert _optimizer_ids(muon) | _optimizer_ids(adamw) == {id(p) for p in model.parameters()}


def test_router_hint_survives_a_parameter_swap(make_arch: MakeArch) -> None:
    """The router's hint sits on its module, which FSDP2's fully_shard keeps (it swaps only the
    parameters): a new weight object still goes to AdamW."""
    arch = make_arch("gqa", ffn="moe")
    model = GPT(arch, vocab_size=97)
    router = model.blocks[0].ffn.router
    router.weight = nn.Parameter(router.weight.detach().clone())
    assert id(router.weight) in _ids(split_parameters(model).embeddings_and_head)
