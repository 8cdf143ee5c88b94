"""``ffn=moe``: a sparse mixture of SwiGLU experts with a learned top-k router.

    p = softmax(router(x))                       router: Linear d_model -> n_experts, no bias
    y = sum over x's top_k experts e of gate_e(x) * SwiGLU_e(x)

(Shazeer et al. 2017, "Outrageously Large Neural Networks"; Switch Transformer, Fedus et al.
2021; Mixtral, Jiang et al. 2024, which routes each token to 2 of 8 SwiGLU experts; gpt-oss,
OpenAI 2025 model card, which routes to 4 of 32 (20b) or 128 (120b) experts.) Routing, capacity and
the load-balancing loss are documented in ``moe_routing``.

Sizes. ``hidden_dim`` is each expert's width; None means the dense SwiGLU width (8/3 d_model,
rounded up to ``multiple_of``) divided by ``top_k`` and rounded up to ``multiple_of`` again, so that
the experts a token uses cost about what ``ffn=swiglu`` costs (compute-matched active FLOPs), while
the layer holds ``n_experts / top_k`` times the dense FFN's parameters (4x with the defaults).

Weights. Expert weights are stored as three 3-D tensors, ``w_gate`` and ``w_up`` [E, hidden, d]
and ``w_down`` [E, d, hidden], each slice laid out like an ``nn.Linear`` weight [out, in]: Muon
orthogonalises every expert's matrix on its own (it treats dim 0 of a 3-D parameter as a batch).
The router module carries ``optimizer_hint = "adamw"``: its weight is a small classifier over
experts, an output layer rather than a hidden one, and Muon is meant for hidden layers (Jordan et
al. 2024 leave classifier heads and embeddings to AdamW); it goes with the embeddings and the head.

Dropping only happens in training (``model.train()``): evaluation and generation route every
token, so validation losses and KV-cache decoding do not depend on how a batch is composed.

The expert computation gathers each expert's tokens and loops over experts (not tokens): one
gather, E small SwiGLUs and one scatter-add per layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gpt5_ablate.config import ModelConfig
from gpt5_ablate.errors import ConfigError
from gpt5_ablate.model.ffn.base import FFNConfig, dense_swiglu_width, round_up
from gpt5_ablate.model.ffn.moe_routing import (
    expert_capacity,
    load_balancing_loss,
    plan_dispatch,
    route,
)
from gpt5_ablate.model.registries import FFN


@dataclass
class MoEConfig(FFNConfig):
    name: str = "moe"
    n_experts: int = 8
    top_k: int = 2
    # hidden_dim (per expert) None: dense SwiGLU width / top_k, rounded up to multiple_of.
    multiple_of: int = 32
    aux_loss_coef: float = 0.01  # weight of the load-balancing loss (Switch Transformer: 0.01)
    capacity_factor: float | None = None  # None: no dropping; else ceil(cf N k / E) per expert
    renormalize: bool = True  # gates = top-k probabilities rescaled to sum to 1

    def validate(self, ctx: ModelConfig | None = None) -> None:
        super().validate(ctx)
        if self.n_experts < 1:
            raise ConfigError(
                f"ffn.n_experts={self.n_experts} is invalid: it must be an integer >= 1."
            )
        if not 1 <= self.top_k <= self.n_experts:
            raise ConfigError(
                f"ffn.top_k={self.top_k} is invalid: it must be within [1, ffn.n_experts="
                f"{self.n_experts}]."
            )
        if self.capacity_factor is not None and not self.capacity_factor > 0:
            raise ConfigError(
                f"ffn.capacity_factor={self.capacity_factor} is invalid: it must be > 0 "
                "(or null for no token dropping)."
            )
        if not self.aux_loss_coef >= 0:
            raise ConfigError(
                f"ffn.aux_loss_coef={self.aux_loss_coef} is invalid: it must be >= 0."
            )
        if self.multiple_of <= 0:
            raise ConfigError(
                f"ffn.multiple_of={self.multiple_of} is invalid: it must be a positive integer."
            )

    def resolved_hidden_dim(self, model: ModelConfig) -> int:
        if self.hidden_dim is not None:
            return self.hidden_dim
        dense = dense_swiglu_width(model.d_model, self.multiple_of)
        return round_up(-(-dense // self.top_k), self.multiple_of)


@FFN.register("moe", MoEConfig)
class MixtureOfExperts(nn.Module):
    def __init__(self, cfg: MoEConfig, ctx: ModelConfig) -> None:
        super().__init__()
        cfg.validate(ctx)  # also when built directly, before allocating anything
        self.n_experts, self.top_k = cfg.n_experts, cfg.top_k
        self.aux_loss_coef, self.capacity_factor = cfg.aux_loss_coef, cfg.capacity_factor
        self.renormalize = cfg.renormalize
        self.hidden_dim = cfg.resolved_hidden_dim(ctx)
        d, hidden, n = ctx.d_model, self.hidden_dim, cfg.n_experts
        self.router = nn.Linear(d, n, bias=False)
        self.router.optimizer_hint = "adamw"  # its weight goes to AdamW (gpt5_ablate.optim.hints)
        self.w_gate = nn.Parameter(torch.empty(n, hidden, d))  # [E, hidden, d]
        self.w_up = nn.Parameter(torch.empty(n, hidden, d))  # [E, hidden, d]
        self.w_down = nn.Parameter(torch.empty(n, d, hidden))  # [E, d, hidden]
        self.reset_expert_parameters(ctx.init_std, ctx.n_layers)
        self._aux_loss: torch.Tensor | None = None
        self._metrics: dict[str, torch.Tensor] = {}

    def reset_expert_parameters(self, std: float, n_layers: int) -> None:
        """N(0, std), the down projection scaled by 1/sqrt(2 n_layers): the rule ``GPT`` applies to
        ``nn.Linear`` layers (the router is one), here for the raw expert tensors."""
        nn.init.normal_(self.w_gate, mean=0.0, std=std)
        nn.init.normal_(self.w_up, mean=0.0, std=std)
        nn.init.normal_(self.w_down, mean=0.0, std=std / math.sqrt(2 * n_layers))

    def expert(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Expert ``index``'s SwiGLU on ``x`` [M, d] -> [M, d]."""
        hidden = F.silu(F.linear(x, self.w_gate[index])) * F.linear(x, self.w_up[index])
        return F.linear(hidden, self.w_down[index])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.reshape(-1, x.size(-1))  # [N, d]
        n_tokens = tokens.size(0)
        routing = route(self.router(tokens), self.top_k, self.renormalize)  # gates/experts [N, k]
        capacity = (
            expert_capacity(n_tokens, self.top_k, self.n_experts, self.capacity_factor)
            if self.training
            else None
        )
        plan = plan_dispatch(routing.experts, self.n_experts, capacity)
        token_ids = plan.assignments // self.top_k  # [M] token of each kept assignment
        gates = routing.gates.reshape(-1)[plan.assignments]  # [M]
        chunks = tokens[token_ids].split(plan.counts)  # E pieces [M_e, d], expert order
        pieces = [self.expert(e, chunk) for e, chunk in enumerate(chunks) if chunk.size(0)]
        out = tokens.new_zeros(tokens.shape)  # [N, d]; a token no expert kept adds nothing
        if pieces:
            weighted = (torch.cat(pieces) * gates.unsqueeze(-1)).to(x.dtype)  # [M, d]
            out = out.index_add(0, token_ids, weighted)
        self._record(routing.probs, plan.routed, plan.dropped, n_tokens)
        return out.view_as(x)

    def _record(
        self, probs: torch.Tensor, routed: torch.Tensor, dropped: torch.Tensor, n_tokens: int
    ) -> None:
        balance = load_balancing_loss(probs, routed, self.top_k)
        self._aux_loss = self.aux_loss_coef * balance if self.aux_loss_coef > 0 else None
        assignments = n_tokens * self.top_k
        self._metrics = {
            "moe/aux_loss": balance.detach(),  # 1 = balanced, larger = more concentrated
            "moe/dropped_fraction": dropped.float() / assignments,
            "moe/max_load": self.n_experts * routed.max().float() / assignments,  # 1 = balanced
        }

    # --- the FeedForward contract --------------------------------------------------------------

    def _expert_params(self) -> int:
        return self.w_gate.numel() + self.w_up.numel() + self.w_down.numel()

    def n_params(self, active: bool = False) -> int:
        experts = self._expert_params()
        if active:
            experts = experts // self.n_experts * self.top_k
        return self.router.weight.numel() + experts

    def matmul_params_per_token(self, active: bool = True) -> int:
        return self.n_params(active)  # every parameter is a matmul weight (no biases)

    def aux_loss(self) -> torch.Tensor | None:
        return self._aux_loss

    def aux_metrics(self) -> dict[str, torch.Tensor]:
        return dict(self._metrics)

    def extra_repr(self) -> str:
        return (
            f"n_experts={self.n_experts}, top_k={self.top_k}, hidden_dim={self.hidden_dim}, "
            f"capacity_factor={self.capacity_factor}, aux_loss_coef={self.aux_loss_coef}"
        )
