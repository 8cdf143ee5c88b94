"""Parameter matching across arms: ``ffn.match_non_embedding_params=<attention>/<ffn>``.

Arms that differ in attention or FFN differ in parameter count, which confounds a comparison of
their losses. With the option set, the arm's FFN hidden width is chosen so that the model's
non-embedding parameter count (``GPT.n_params(non_embedding=True)``) equals that of a reference
model: the same model preset, norm and pos, with the reference attention and FFN options at their
registered defaults (``gqa/swiglu`` is the harness's default arm).

How. Every FFN's parameter count is affine in its hidden width h (per layer: swiglu 3 d h, gelu
2 d h + h + d, moe E (3 d h + d)), and nothing else in the model depends on h. So two builds of the
arm on the ``meta`` device (no memory, no random draws), at h = 1 and h = 2, give its count as
a + b h; the matched width is the integer h >= 1 nearest to (reference - a) / b. The remaining
error is at most b / 2, half the parameters of one hidden unit summed over the layers: under 1% at
every preset in conf/model/ for every attention and FFN option (tested in tests/test_ffn_matching.py).
The width is an integer, not a multiple of ``multiple_of``: a coarser grid could not match within 1%
at the tiny preset (one step of 32 SwiGLU units there is 7% of the model).

All of it runs before any real tensor is allocated; ``GPT`` applies it in its constructor and
reports the result as ``GPT.ffn_hidden_dim()``.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch

from gpt5_ablate.errors import ConfigError
from gpt5_ablate.model.ffn.base import reference_arm
from gpt5_ablate.model.registries import ATTENTION, FFN

if TYPE_CHECKING:
    from gpt5_ablate.model.gpt import ArchitectureConfig


def non_embedding_params(arch: ArchitectureConfig) -> int:
    """``GPT(arch).n_params(non_embedding=True)``, computed on the meta device."""
    from gpt5_ablate.model.gpt import GPT  # gpt.py imports this module

    with torch.device("meta"):
        return GPT(arch, vocab_size=1).n_params(non_embedding=True)


def reference_architecture(arch: ArchitectureConfig, spec: str) -> ArchitectureConfig:
    """``arch`` with the reference arm's attention and FFN (registered defaults)."""
    attention, ffn = reference_arm(spec)
    return dataclasses.replace(
        arch,
        attention=ATTENTION.entry(attention).config_class(),
        ffn=FFN.entry(ffn).config_class(),
    )


def matched_hidden_dim(arch: ArchitectureConfig) -> int:
    """The FFN hidden width that matches ``arch.ffn.match_non_embedding_params`` (module docstring)."""
    spec = arch.ffn.match_non_embedding_params
    target = non_embedding_params(reference_architecture(arch, spec))

    def count(hidden: int) -> int:
        ffn = dataclasses.replace(arch.ffn, hidden_dim=hidden, match_non_embedding_params=None)
        return non_embedding_params(dataclasses.replace(arch, ffn=ffn))

    base, slope = count(1), count(2) - count(1)  # params = base + slope * (hidden - 1)
    hidden = 1 + round((target - base) / slope)
    if hidden < 1:
        raise ConfigError(
            f"ffn.match_non_embedding_params={spec!r} cannot be met: with ffn={arch.ffn.name} at "
            f"hidden_dim=1 the model already has {base:,} non-embedding parameters, more than the "
            f"reference's {target:,}. Match against a larger reference or drop the match."
        )
    return hidden


def match_ffn_width(arch: ArchitectureConfig) -> ArchitectureConfig:
    """``arch`` with ``ffn.hidden_dim`` set to the matched width and the match key cleared (so
    building from the result gives the same model); ``arch`` itself when no match is asked."""
    if arch.ffn.match_non_embedding_params is None:
        return arch
    hidden = matched_hidden_dim(arch)
    ffn = dataclasses.replace(arch.ffn, hidden_dim=hidden, match_non_embedding_params=None)
    return dataclasses.replace(arch, ffn=ffn)
