"""Sliding-window attention: the layer pattern, exactness when the window cannot bind, the
receptive field it implies, validation before allocation, FLOP and KV-cache accounting, and the
``window`` / ``sinks`` config groups."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir

from gpt5_ablate.config import ModelConfig, register_configs
from gpt5_ablate.errors import ConfigError
from gpt5_ablate.model import ATTENTION, GPT, SINKS, WINDOW, ArchitectureConfig
from gpt5_ablate.registry import Registry

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
VOCAB = 97
MakeArch = Callable[..., ArchitectureConfig]
pytestmark = pytest.mark.usefixtures("single_thread")


def _arch(
    make_arch: MakeArch, attention: str, window: str, size: int, **kw: Any
) -> ArchitectureConfig:
    arch = make_arch(attention, **kw)
    arch.window = WINDOW.entry(window).config_class(size=size)
    return arch


def _model(make_arch: MakeArch, attention: str, window: str, size: int, **kw: Any) -> GPT:
    arch = _arch(make_arch, attention, window, size, **kw)
    torch.manual_seed(0)
    return GPT(arch, VOCAB).eval()


def _tokens(seq_len: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, seq_len), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("n_layers", [1, 4, 5])
def test_layer_patterns(n_layers: int) -> None:
    model = ModelConfig(name="t", n_layers=n_layers, d_model=64, n_heads=4, max_seq_len=32)
    patterns = {
        name: WINDOW.build(WINDOW.entry(name).config_class(size=7), model).layer_windows()
        for name in WINDOW.names()
    }
    assert patterns["all_full"] == [None] * n_layers
    assert patterns["all_sliding"] == [7] * n_layers
    assert patterns["alternate"] == [7 if i % 2 == 0 else None for i in range(n_layers)]


@pytest.mark.parametrize("size", [16, 17, 64])
@pytest.mark.parametrize("window", WINDOW.names())
@pytest.mark.parametrize("attention", ATTENTION.names())
def test_window_not_shorter_than_sequence_equals_full_attention_exactly(
    make_arch: MakeArch, attention: str, window: str, size: int
) -> None:
    idx = _tokens(16, seed=1)
    with torch.no_grad():
        sliding = _model(make_arch, attention, window, size, init_std=0.1)(idx)[0]
        full = _model(make_arch, attention, "all_full", size, init_std=0.1)(idx)[0]
    assert torch.equal(sliding, full)


@pytest.mark.parametrize("attention", ATTENTION.names())
def test_receptive_field_of_stacked_sliding_layers(make_arch: MakeArch, attention: str) -> None:
    """L sliding layers of window W: position t depends on tokens t - L (W - 1) .. t only."""
    n_layers, size, t = 2, 3, 12
    model = _model(make_arch, attention, "all_sliding", size, init_std=0.1, n_layers=n_layers)
    reach = n_layers * (size - 1)  # = 4
    idx = _tokens(16, seed=2)
    with torch.no_grad():
        base = model(idx)[0][:, t]
        for changed_pos, affects in ((t - reach - 1, False), (t - reach, True)):
            other = idx.clone()
            other[:, changed_pos] = (idx[:, changed_pos] + 1) % VOCAB
            delta = (model(other)[0][:, t] - base).abs().max().item()
            assert (delta > 1e-5) == affects, (changed_pos, delta)


@pytest.mark.usefixtures("no_allocation")
@pytest.mark.parametrize("size", [0, -5])
@pytest.mark.parametrize("window", WINDOW.names())
def test_bad_window_size_fails_before_allocation(
    make_arch: MakeArch, window: str, size: int
) -> None:
    arch = _arch(make_arch, "gqa", window, size)
    for build in (arch.validate, lambda: GPT(arch, VOCAB)):
        with pytest.raises(ConfigError) as error:
            build()
        assert f"window.size={size}" in str(error.value)
        assert "window.size >= 1" in str(error.value)  # the valid range


def test_unknown_window_and_sinks_options_name_the_choices(make_arch: MakeArch) -> None:
    for group, registry in (("window", WINDOW), ("sinks", SINKS)):
        arch = make_arch()
        getattr(arch, group).name = "nope"
        with pytest.raises(ConfigError, match=f"Unknown {group} 'nope'.*{registry.names()[0]}"):
            arch.validate()


@pytest.mark.parametrize("attention", ATTENTION.names())
def test_flops_use_min_of_window_and_context(make_arch: MakeArch, attention: str) -> None:
    full = _model(make_arch, attention, "all_full", 8)
    for window, sliding_layers in (("alternate", 1), ("all_sliding", 2)):
        sliding = _model(make_arch, attention, window, 8)
        for context in (4, 8, 32):
            per_layer = full.blocks[0].attn.attention_flops_per_token(context)
            saved = sliding_layers * 3 * (per_layer - per_layer * min(8, context) // context)
            assert sliding.flops_per_token(context) == full.flops_per_token(context) - saved


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("window", WINDOW.names())
@pytest.mark.parametrize("attention", ATTENTION.names())
def test_kv_cache_bytes_match_the_cache(
    make_arch: MakeArch, attention: str, window: str, dtype: torch.dtype
) -> None:
    model = _model(make_arch, attention, window, 5).to(dtype)
    per_token = model.kv_cache_bytes_per_token(dtype)
    cache = model.new_kv_cache()
    idx = _tokens(12, seed=3)
    with torch.no_grad():
        for t in range(12):
            model(idx[:, t : t + 1], kv_cache=cache)
            context = t + 1
            assert cache.nbytes() == model.kv_cache_bytes(context, dtype) * 2  # batch of 2
            if window == "all_full" or context <= 5:
                assert model.kv_cache_bytes(context, dtype) == per_token * context
    sliding = [b.attn.window is not None for b in model.blocks]
    per_layer = per_token // len(model.blocks)
    expected = sum(per_layer * (5 if s else 12) for s in sliding)
    assert model.kv_cache_bytes(12, dtype) == expected
    # What is allocated: sliding layers hold 5 positions, full ones max_seq_len (32).
    assert cache.allocated_nbytes() == 2 * sum(per_layer * (5 if s else 32) for s in sliding)


# --- the config groups --------------------------------------------------------------------------

GROUPS: dict[str, Registry[Any]] = {"window": WINDOW, "sinks": SINKS}


@pytest.fixture
def hydra_conf() -> Iterator[None]:
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        yield


def test_group_files_match_registries() -> None:
    for group, registry in GROUPS.items():
        assert {p.stem for p in (CONF_DIR / group).glob("*.yaml")} == set(registry.names())


@pytest.mark.usefixtures("hydra_conf")
@pytest.mark.parametrize(
    "config_name",
    [f"{group}/{name}" for group, registry in GROUPS.items() for name in registry.names()],
)
def test_group_yaml_types_to_its_dataclass(config_name: str) -> None:
    group, option = config_name.split("/")
    typed = GROUPS[group].typed(compose(config_name=config_name)[group])
    config_class = GROUPS[group].entry(option).config_class
    assert type(typed) is config_class and typed == config_class()


@pytest.mark.usefixtures("hydra_conf")
def test_window_size_is_type_checked_at_composition() -> None:
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):
        compose(config_name="window/alternate", overrides=["window.size=wide"])


def test_from_config_defaults_for_configs_without_the_new_groups(make_arch: MakeArch) -> None:
    """Configs saved before these groups existed (old checkpoints) mean all_full and none."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(
        {
            "model": {"name": "t", "n_layers": 2, "d_model": 64, "n_heads": 4, "max_seq_len": 32},
            "attention": {"name": "mha"},
            "norm": {"name": "none"},
            "pos": {"name": "rope"},
            "ffn": {"name": "swiglu"},
        }
    )
    OmegaConf.set_struct(cfg, True)
    arch = ArchitectureConfig.from_config(cfg)
    assert (arch.window.name, arch.sinks.name) == ("all_full", "none")
    assert arch.factors()["window"] == "all_full" and arch.factors()["sinks"] == "none"
