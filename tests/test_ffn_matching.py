"""``ffn.match_non_embedding_params``: every registered attention x FFN option at every model preset
in conf/model/ matches the reference arm's non-embedding parameter count within 1%."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from gpt5_ablate.config import ModelConfig
from gpt5_ablate.errors import ConfigError
from gpt5_ablate.model import ATTENTION, FFN, GPT, POSITIONS, QK_NORM, ArchitectureConfig
from gpt5_ablate.model.ffn.matching import (
    match_ffn_width,
    non_embedding_params,
    reference_architecture,
)

MakeArch = Callable[..., ArchitectureConfig]
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
REFERENCE = "gqa/swiglu"
pytestmark = pytest.mark.usefixtures("single_thread")


def _preset(path: Path) -> ModelConfig:
    node = OmegaConf.to_container(OmegaConf.load(path))
    assert isinstance(node, dict)
    node.pop("defaults", None)
    return ModelConfig(**node)


PRESETS = {path.stem: _preset(path) for path in sorted((CONF_DIR / "model").glob("*.yaml"))}
ARMS = list(itertools.product(PRESETS, ATTENTION.names(), FFN.names()))


def _arch(
    preset: str, attention: str, ffn: str, match: str | None = REFERENCE
) -> ArchitectureConfig:
    return ArchitectureConfig(
        model=PRESETS[preset],
        attention=ATTENTION.entry(attention).config_class(),
        norm=QK_NORM.entry("qk_rmsnorm").config_class(),
        pos=POSITIONS.entry("rope").config_class(),
        ffn=FFN.entry(ffn).config_class(match_non_embedding_params=match),
    )


def test_presets_are_found() -> None:
    assert {"tiny", "small", "gpt2_124m"} <= set(PRESETS)


@pytest.mark.parametrize(("preset", "attention", "ffn"), ARMS, ids=["-".join(a) for a in ARMS])
def test_matched_params_within_one_percent(preset: str, attention: str, ffn: str) -> None:
    arch = _arch(preset, attention, ffn)
    matched = match_ffn_width(arch)
    assert matched.ffn.match_non_embedding_params is None
    assert matched.ffn.hidden_dim is not None and matched.ffn.hidden_dim >= 1
    reference = non_embedding_params(reference_architecture(arch, REFERENCE))
    got = non_embedding_params(matched)
    assert abs(got - reference) / reference < 0.01, (got, reference, matched.ffn.hidden_dim)
    # One hidden unit more or less would not be closer: the width is the best integer.
    for step in (-1, 1):
        other = dataclasses.replace(matched.ffn, hidden_dim=matched.ffn.hidden_dim + step)
        if other.hidden_dim >= 1:
            neighbour = non_embedding_params(dataclasses.replace(matched, ffn=other))
            assert abs(got - reference) <= abs(neighbour - reference)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_reference_arm_matches_itself_exactly(preset: str) -> None:
    arch = _arch(preset, "gqa", "swiglu")
    default = FFN.entry("swiglu").config_class().resolved_hidden_dim(PRESETS[preset])
    assert match_ffn_width(arch).ffn.hidden_dim == default


def test_gpt_applies_the_match_without_touching_the_rng(make_arch: MakeArch) -> None:
    arch = make_arch("mla", ffn="gelu")
    arch.ffn.match_non_embedding_params = REFERENCE
    torch.manual_seed(0)
    model = GPT(arch, vocab_size=97)
    width = model.ffn_hidden_dim()
    assert model.arch.ffn.hidden_dim == width and width != 4 * 64
    reference = make_arch("gqa", ffn="swiglu")
    with torch.device("meta"):
        expected = GPT(reference, vocab_size=97).n_params(non_embedding=True)
    assert abs(model.n_params(non_embedding=True) - expected) / expected < 0.01
    # Same seed, width given explicitly: the same weights (the meta-device probes draw nothing).
    explicit = make_arch("mla", ffn="gelu")
    explicit.ffn.hidden_dim = width
    torch.manual_seed(0)
    same = GPT(explicit, vocab_size=97)
    for (name, a), (_, b) in zip(
        model.state_dict().items(), same.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("spec", ["gqa", "nope/swiglu", "gqa/nope", "gqa/swiglu/x"])
def test_bad_reference_is_rejected(make_arch: MakeArch, spec: str) -> None:
    arch = make_arch(ffn="swiglu")
    arch.ffn.match_non_embedding_params = spec
    with pytest.raises(ConfigError) as error:
        arch.validate()
    message = str(error.value)
    assert f"ffn.match_non_embedding_params={spec!r}" in message
    assert all(name in message for name in ATTENTION.names() + FFN.names())


def test_width_and_match_are_exclusive(make_arch: MakeArch) -> None:
    arch = make_arch(ffn="moe")
    arch.ffn.hidden_dim, arch.ffn.match_non_embedding_params = 32, REFERENCE
    with pytest.raises(ConfigError, match=r"ffn\.hidden_dim=32 and ffn\.match_non_embedding"):
        arch.validate()
