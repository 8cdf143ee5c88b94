"""Token routing for the mixture-of-experts FFN: top-k gating, expert capacity, dispatch order and
the load-balancing loss. Pure tensor functions, with no Python loop over tokens.

Notation: N tokens, E experts, k experts per token, a token-assignment = one (token, choice) pair,
N k of them, numbered token-major: assignment ``n * k + j`` is token n's j-th choice.

Gating. The router's logits [N, E] go through a softmax over experts, p = softmax(logits); each
token keeps its k most probable experts and, with ``renormalize=True`` (the default), their
probabilities are rescaled to sum to 1 (as in Mixtral, Jiang et al. 2024, and gpt-oss, OpenAI
2025, which takes the softmax over the top-k logits: the same numbers). The token's output is the
gate-weighted sum of its experts' outputs. Renormalising keeps the FFN output's scale independent
of how peaked the router is; with k = 1 it makes the gate exactly 1, so the router then learns only
from the load-balancing loss (Switch Transformer instead scales by the raw top-1 probability: set
``renormalize=False`` for that).

Capacity. With a capacity C, each expert processes at most C assignments; the others are dropped
(the token's output lacks that expert's term; a token with every choice dropped passes through the
residual connection unchanged). Priority is token order: an expert keeps the assignments of the
earliest tokens (in the flattened [B * T] order), so a later token in a sequence never displaces
an earlier one, and dropping leaks nothing from the future of a sequence.

Load balance (Switch Transformer, Fedus et al. 2021, eq. 4, generalised to top-k):

    f_i = (1 / (N k)) sum_n sum_j 1[expert(n, j) = i]     fraction of token-assignments to i
    P_i = (1 / N) sum_n p_{n,i}                           mean router probability of i
    L   = E sum_i f_i P_i

f is counted before dropping (the router's choices) and carries no gradient; P does. Sum_i f_i =
sum_i P_i = 1, so L = 1 when routing is uniform (f_i = P_i = 1/E), whatever k is, and it grows as
routing concentrates (up to E for k = 1, every token sent to one expert with probability 1).
Normalising f by N k rather than N keeps that scale for k > 1; implementations that count "tokens
that chose i" instead get k times this value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class Routing:
    probs: torch.Tensor  # [N, E] fp32 softmax over experts
    experts: torch.Tensor  # [N, k] int64, each token's chosen experts, most probable first
    gates: torch.Tensor  # [N, k] fp32 weights of those experts' outputs


def route(logits: torch.Tensor, top_k: int, renormalize: bool = True) -> Routing:
    """Softmax over experts, top-k, optionally renormalised gates. ``logits``: [N, E]."""
    probs = logits.float().softmax(dim=-1)  # [N, E], fp32 even under autocast
    gates, experts = probs.topk(top_k, dim=-1)  # [N, k] each
    if renormalize:
        gates = gates / gates.sum(dim=-1, keepdim=True)
    return Routing(probs=probs, experts=experts, gates=gates)


def expert_capacity(
    n_tokens: int, top_k: int, n_experts: int, capacity_factor: float | None
) -> int | None:
    """ceil(capacity_factor x N x k / E) assignments per expert, or None (no limit)."""
    if capacity_factor is None:
        return None
    return math.ceil(capacity_factor * n_tokens * top_k / n_experts)


@dataclass
class DispatchPlan:
    """Which assignments each expert processes, grouped by expert."""

    assignments: torch.Tensor  # [M] kept assignment ids (n * k + j), expert 0's first, token order
    counts: list[int]  # [E] kept assignments per expert (sum = M); sizes to split the M rows by
    routed: torch.Tensor  # [E] assignments the router sent to each expert, before dropping
    dropped: torch.Tensor  # [] number of assignments dropped for capacity


def plan_dispatch(experts: torch.Tensor, n_experts: int, capacity: int | None) -> DispatchPlan:
    """Group the assignments of ``experts`` [N, k] by expert and drop those beyond ``capacity``."""
    flat = experts.reshape(-1)  # [N k], token-major
    # A stable sort keeps token order within each expert's group: that order is the priority.
    order = torch.argsort(flat, stable=True)  # [N k]
    routed = torch.bincount(flat, minlength=n_experts)  # [E]
    if capacity is None:
        kept_counts = routed
        dropped = flat.new_zeros(())
    else:
        first_of_expert = routed.cumsum(0) - routed  # [E] where each expert's group starts
        place = torch.arange(flat.numel(), device=flat.device) - first_of_expert[flat[order]]
        order = order[place < capacity]  # [M]
        kept_counts = routed.clamp(max=capacity)
        dropped = routed.sum() - kept_counts.sum()
    return DispatchPlan(
        assignments=order, counts=kept_counts.tolist(), routed=routed, dropped=dropped
    )


def load_balancing_loss(probs: torch.Tensor, routed: torch.Tensor, top_k: int) -> torch.Tensor:
    """E sum_i f_i P_i (module docstring). ``probs`` [N, E]; ``routed`` [E] assignment counts."""
    n_tokens, n_experts = probs.shape
    fraction = routed.to(probs.dtype) / (n_tokens * top_k)  # f [E], no gradient
    mean_prob = probs.mean(dim=0)  # P [E]
    return n_experts * (fraction * mean_prob).sum()
