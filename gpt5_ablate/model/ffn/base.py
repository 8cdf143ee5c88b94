"""The ``ffn`` group's contract: the config base class, the module protocol, the dense base class
and the helper that folds FFN auxiliary losses into the model's loss.

Every FFN option is

- a config class subclassing ``FFNConfig`` (itself a ``ComponentConfig``), whose
  ``validate(ctx)`` raises ``ConfigError`` naming the bad value and the valid range;
- a module built as ``Component(cfg, ctx)``. For this group ``ctx`` is the model preset, a
  ``ModelConfig`` (``d_model``, ``n_layers``, ``init_std``...): an FFN needs nothing else from the
  rest of the model.

The module follows ``FeedForward`` below, which is all ``gpt.py`` relies on: it never asks which FFN
it holds. Dense FFNs subclass ``DenseFFN``, which implements the accounting and the (absent)
auxiliary loss for them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from gpt5_ablate.config import ModelConfig
from gpt5_ablate.errors import ConfigError
from gpt5_ablate.model.registries import ATTENTION, FFN
from gpt5_ablate.registry import ComponentConfig

# The key of the pure next-token cross-entropy in ``GPT.aux_metrics()`` when an FFN adds an
# auxiliary loss (then the ``loss`` a training forward returns is not the pure cross-entropy).
LM_LOSS_METRIC = "moe/lm_loss"
WEIGHTED_AUX_METRIC = "moe/aux_loss_weighted"


@dataclass
class FFNConfig(ComponentConfig):
    """Keys every FFN option has.

    ``hidden_dim``: the hidden width (per expert for a mixture of experts); None picks the
    option's documented default.

    ``match_non_embedding_params``: None, or a reference arm ``"<attention>/<ffn>"`` (e.g.
    ``"gqa/swiglu"``, both options at their registered defaults). When set, ``hidden_dim`` is
    chosen so that the model's non-embedding parameter count equals the reference model's (same
    model preset, same norm and pos) as closely as an integer width allows; see
    ``gpt5_ablate.model.ffn.matching``.
    """

    hidden_dim: int | None = None
    match_non_embedding_params: str | None = None

    def validate(self, ctx: ModelConfig | None = None) -> None:
        if self.hidden_dim is not None and self.hidden_dim <= 0:
            raise ConfigError(
                f"ffn.hidden_dim={self.hidden_dim} is invalid: it must be a positive integer "
                "(or null for the default width)."
            )
        if self.match_non_embedding_params is not None:
            if self.hidden_dim is not None:
                raise ConfigError(
                    f"ffn.hidden_dim={self.hidden_dim} and ffn.match_non_embedding_params="
                    f"{self.match_non_embedding_params!r} are both set: parameter matching "
                    "chooses the hidden width, so set ffn.hidden_dim=null (or drop the match)."
                )
            reference_arm(self.match_non_embedding_params)  # raises on a bad reference


def reference_arm(spec: str) -> tuple[str, str]:
    """``"<attention>/<ffn>"`` -> (attention option, ffn option), both registered."""
    parts = spec.split("/")
    if len(parts) != 2 or parts[0] not in ATTENTION or parts[1] not in FFN:
        raise ConfigError(
            f"ffn.match_non_embedding_params={spec!r} is invalid: it must be "
            f"'<attention>/<ffn>' with attention in {{{', '.join(ATTENTION.names())}}} and ffn "
            f"in {{{', '.join(FFN.names())}}} (e.g. 'gqa/swiglu'), or null."
        )
    return parts[0], parts[1]


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def dense_swiglu_width(d_model: int, multiple_of: int) -> int:
    """8/3 x d_model rounded up to ``multiple_of``: the parameter count of a 4 x d_model two-matrix
    MLP in three matrices (as in LLaMA, Touvron et al. 2023)."""
    return round_up(8 * d_model // 3, multiple_of)


@runtime_checkable
class FeedForward(Protocol):
    """What the model needs from an FFN module."""

    hidden_dim: int  # the resolved hidden width (per expert for a mixture of experts)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, d_model] -> [B, T, d_model]."""
        ...

    def n_params(self, active: bool = False) -> int:
        """Parameters of the module; ``active``: only those one token uses."""
        ...

    def matmul_params_per_token(self, active: bool = True) -> int:
        """Weights one token multiplies by in the forward pass (2 FLOPs each); ``active=False``
        counts every weight, as if every expert saw every token."""
        ...

    def aux_loss(self) -> torch.Tensor | None:
        """The coefficient-weighted auxiliary loss of the last forward (with its graph), or None."""
        ...

    def aux_metrics(self) -> dict[str, torch.Tensor]:
        """Detached scalars from the last forward (e.g. load balance); empty for dense FFNs."""
        ...


class DenseFFN(nn.Module):
    """Base of FFNs that apply every weight to every token and add no auxiliary loss."""

    hidden_dim: int

    def n_params(self, active: bool = False) -> int:
        return sum(p.numel() for p in self.parameters())

    def matmul_params_per_token(self, active: bool = True) -> int:
        return sum(m.weight.numel() for m in self.modules() if isinstance(m, nn.Linear))

    def aux_loss(self) -> torch.Tensor | None:
        return None

    def aux_metrics(self) -> dict[str, torch.Tensor]:
        return {}


def add_aux_losses(
    lm_loss: torch.Tensor, ffns: Iterable[FeedForward], training: bool
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss a forward returns, and the detached metrics ``GPT.aux_metrics()`` reports.

    In training the loss is ``lm_loss + sum of the layers' weighted auxiliary losses`` (each FFN
    weights its own, e.g. ``aux_loss_coef x balance loss``), so optimising it needs no change in
    the trainer. In evaluation it is the pure ``lm_loss``, comparable across arms. Metrics: each
    key the FFNs report, averaged over the layers reporting it, plus ``moe/lm_loss`` (the pure
    cross-entropy) and ``moe/aux_loss_weighted`` (the summed auxiliary term, added in training)
    whenever some FFN reports metrics. Dense models get an empty dict.
    """
    terms: list[torch.Tensor] = []
    per_key: dict[str, list[torch.Tensor]] = {}
    for ffn in ffns:
        term = ffn.aux_loss()
        if term is not None:
            terms.append(term)
        for key, value in ffn.aux_metrics().items():
            per_key.setdefault(key, []).append(value)
    if not per_key and not terms:
        return lm_loss, {}
    metrics = {key: torch.stack(values).mean() for key, values in per_key.items()}
    aux = torch.stack(terms).sum() if terms else torch.zeros_like(lm_loss)
    metrics[LM_LOSS_METRIC] = lm_loss.detach()
    metrics[WEIGHTED_AUX_METRIC] = aux.detach()
    return (lm_loss + aux if training and terms else lm_loss), metrics
