"""Model and optimizer configuration: bad values fail with a ConfigError naming the value and what is
valid, before any tensor is allocated; the real YAML groups compose and convert to their dataclasses."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf

import gpt5_ablate.data  # noqa: F401  (registers the data and tokenizer schemas)
from gpt5_ablate.config import ModelConfig, register_configs
from gpt5_ablate.errors import ConfigError
from gpt5_ablate.model import ATTENTION, FFN, GPT, POSITIONS, QK_NORM, ArchitectureConfig
from gpt5_ablate.optim import OPTIMIZER
from gpt5_ablate.registry import Registry

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
MakeArch = Callable[..., ArchitectureConfig]
pytestmark = pytest.mark.usefixtures("single_thread")

# (id, make_arch arguments, substrings the message must contain: the bad value and what is valid)
BAD_CONFIGS: list[tuple[str, dict[str, Any], list[str]]] = [
    (
        "kv_heads_not_dividing_heads",
        dict(attention="gqa", attention_kwargs={"n_kv_heads": 3}),
        ["n_kv_heads=3", "n_heads=4", "valid n_kv_heads: 1, 2, 4"],
    ),
    (
        "kv_heads_above_heads",
        dict(attention="gqa", attention_kwargs={"n_kv_heads": 8}),
        ["n_kv_heads=8", "n_heads=4", "1 <= n_kv_heads <= n_heads"],
    ),
    (
        "kv_heads_zero",
        dict(attention="gqa", attention_kwargs={"n_kv_heads": 0}),
        ["n_kv_heads=0", "positive"],
    ),
    (
        "odd_head_dim_rope_mha",
        dict(attention="mha", pos="rope", d_model=60),
        ["model.d_model=60", "= 15", "even", "pos=learned"],
    ),
    (
        "odd_head_dim_rope_gqa",
        dict(attention="gqa", pos="rope", d_model=60),
        ["model.d_model=60", "= 15", "even", "pos=learned"],
    ),
    (
        "odd_head_dim_rope_mla",  # rotary part = 15 // 2 = 7
        dict(attention="mla", pos="rope", d_model=60),
        ["qk_rope_head_dim=7", "even"],
    ),
    ("n_layers_zero", dict(n_layers=0), ["model.n_layers=0", "positive"]),
    ("d_model_negative", dict(d_model=-1), ["model.d_model=-1", "positive"]),
    ("n_heads_zero", dict(n_heads=0), ["model.n_heads=0", "positive"]),
    ("max_seq_len_zero", dict(max_seq_len=0), ["model.max_seq_len=0", "positive"]),
    (
        "d_model_not_divisible_by_heads",
        dict(d_model=64, n_heads=5),
        ["model.d_model=64", "model.n_heads=5", "1, 2, 4, 8, 16, 32, 64"],
    ),
    (
        "mla_kv_lora_rank_too_large",
        dict(attention="mla", attention_kwargs={"kv_lora_rank": 65}),
        ["kv_lora_rank=65", "model.d_model=64", "1..64"],
    ),
    (
        "mla_q_lora_rank_too_large",
        dict(attention="mla", attention_kwargs={"q_lora_rank": 100}),
        ["q_lora_rank=100", "model.d_model=64", "1..64", "0 to disable"],
    ),
    (
        "mla_odd_rope_dim",
        dict(attention="mla", attention_kwargs={"qk_rope_head_dim": 5}),
        ["qk_rope_head_dim=5", "even"],
    ),
    (
        "mla_zero_rope_dim_with_rope",
        dict(attention="mla", attention_kwargs={"qk_rope_head_dim": 0}),
        ["qk_rope_head_dim=0", "pos=learned"],
    ),
]


def _assert_message(error: pytest.ExceptionInfo[ConfigError], needles: list[str]) -> None:
    message = str(error.value)
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"


@pytest.mark.parametrize(
    ("kwargs", "needles"), [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS]
)
def test_bad_config_fails_validate(
    make_arch: MakeArch, kwargs: dict[str, Any], needles: list[str]
) -> None:
    with pytest.raises(ConfigError) as error:
        make_arch(**kwargs).validate()
    _assert_message(error, needles)


@pytest.mark.usefixtures("no_allocation")
@pytest.mark.parametrize(
    ("kwargs", "needles"), [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS]
)
def test_bad_config_fails_before_allocation(
    make_arch: MakeArch, kwargs: dict[str, Any], needles: list[str]
) -> None:
    arch = make_arch(**kwargs)
    with pytest.raises(ConfigError) as error:
        GPT(arch, vocab_size=97)
    _assert_message(error, needles)


@pytest.mark.usefixtures("no_allocation")
def test_no_allocation_guard_is_effective(make_arch: MakeArch) -> None:
    """Control for the test above: a valid config does reach the guarded constructors."""
    arch = make_arch()
    arch.validate()
    with pytest.raises(AssertionError, match="before the config was validated"):
        GPT(arch, vocab_size=97)


def test_odd_head_dim_is_fine_with_learned_positions(make_arch: MakeArch) -> None:
    for attention in ("mha", "gqa", "mla"):
        make_arch(attention=attention, pos="learned", d_model=60).validate()


@pytest.mark.parametrize(
    ("group", "registry"),
    [("attention", ATTENTION), ("norm", QK_NORM), ("pos", POSITIONS), ("ffn", FFN)],
)
def test_unknown_component_name(
    make_arch: MakeArch, group: str, registry: Registry[Any], no_allocation: None
) -> None:
    arch = make_arch()
    getattr(arch, group).name = "no_such_variant"
    for build in (arch.validate, lambda: GPT(arch, vocab_size=97)):
        with pytest.raises(ConfigError) as error:
            build()
        _assert_message(error, [f"Unknown {group} 'no_such_variant'", *registry.names()])


def test_unknown_optimizer_name() -> None:
    with pytest.raises(ConfigError) as error:
        OPTIMIZER.entry("sgd")
    _assert_message(error, ["Unknown optimizer 'sgd'", "adamw", "muon_adamw"])


def test_rope_theta_must_be_positive(make_arch: MakeArch) -> None:
    arch = make_arch()
    arch.pos.rope_theta = 0.0
    with pytest.raises(ConfigError, match=r"rope_theta=0\.0"):
        arch.validate()


def test_ffn_hidden_dim_must_be_positive(make_arch: MakeArch) -> None:
    for ffn in ("swiglu", "gelu"):
        arch = make_arch(ffn=ffn)
        arch.ffn.hidden_dim = 0
        with pytest.raises(ConfigError, match="hidden_dim=0"):
            arch.validate()


# --- Hydra composition of the real config groups ------------------------------------------------

GROUP_REGISTRIES: dict[str, Registry[Any]] = {
    "attention": ATTENTION,
    "norm": QK_NORM,
    "pos": POSITIONS,
    "ffn": FFN,
    "optimizer": OPTIMIZER,
}
GROUP_FILES = sorted(
    f"{group}/{path.stem}"
    for group in GROUP_REGISTRIES
    for path in (CONF_DIR / group).glob("*.yaml")
)
MODEL_FILES = sorted(f"model/{path.stem}" for path in (CONF_DIR / "model").glob("*.yaml"))
# A primary config that only lists the groups the model and optimizer are built from; it does not
# depend on conf/config.yaml, which also selects data, tokenizer, trainer and tracking.
PRIMARY = "_test_model_primary"


@pytest.fixture
def hydra_conf() -> Iterator[None]:
    register_configs()  # schema/model/base etc.; component schemas register on import
    ConfigStore.instance().store(
        name=PRIMARY,
        node={
            "defaults": [
                {"attention": "gqa"},
                {"norm": "qk_rmsnorm"},
                {"pos": "rope"},
                {"ffn": "swiglu"},
                {"model": "tiny"},
                {"optimizer": "muon_adamw"},
                "_self_",
            ]
        },
    )
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        yield


def test_conf_groups_are_present() -> None:
    for group in GROUP_REGISTRIES:
        options = {path.stem for path in (CONF_DIR / group).glob("*.yaml")}
        assert options == set(GROUP_REGISTRIES[group].names()), group
    assert {"tiny", "small", "gpt2_124m"} <= {path.split("/")[1] for path in MODEL_FILES}


@pytest.mark.usefixtures("hydra_conf")
@pytest.mark.parametrize("config_name", GROUP_FILES)
def test_group_yaml_converts_to_its_dataclass(config_name: str) -> None:
    group, option = config_name.split("/")
    # In the full config: a group's values may refer to others (the optimizers' rates to the
    # model preset's default_lr).
    node = compose(config_name="config", overrides=[f"{group}={option}"])[group]
    assert isinstance(node, DictConfig) and node.name == option
    typed = GROUP_REGISTRIES[group].typed(node)
    config_class = GROUP_REGISTRIES[group].entry(option).config_class
    assert type(typed) is config_class
    # The YAML states the dataclass defaults (None where derived from the model preset), apart
    # from values it takes from the preset by interpolation (an optimizer's default rates).
    raw = OmegaConf.load(CONF_DIR / f"{config_name}.yaml")
    from_preset = [k for k in raw if OmegaConf.is_interpolation(raw, k)]
    defaults = config_class()
    assert dataclasses.replace(typed, **{k: getattr(defaults, k) for k in from_preset}) == defaults


@pytest.mark.usefixtures("hydra_conf")
@pytest.mark.parametrize("config_name", MODEL_FILES)
def test_model_yaml_converts_to_model_config(config_name: str) -> None:
    node = compose(config_name=config_name)["model"]
    model = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), node))
    assert isinstance(model, ModelConfig) and model.name == config_name.split("/")[1]
    model.validate()


@pytest.mark.usefixtures("hydra_conf")
@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["attention=mha", "norm=none", "pos=learned", "ffn=gelu", "optimizer=adamw"],
        ["attention=mla", "attention.q_lora_rank=32", "model.n_layers=2"],
    ],
    ids=["defaults", "mha_none_learned_gelu", "mla_low_rank_q"],
)
def test_composed_config_builds_a_model(overrides: list[str]) -> None:
    cfg = compose(config_name=PRIMARY, overrides=overrides)
    arch = ArchitectureConfig.from_config(cfg)
    arch.validate()
    assert arch.factors()["attention"] == cfg.attention.name
    optimizer = OPTIMIZER.typed(cfg.optimizer)
    optimizer.validate()
    model = GPT(arch, vocab_size=97)
    optimizers = OPTIMIZER.get(optimizer.name)(optimizer, model)
    assert optimizers and model(torch.zeros(1, 4, dtype=torch.long))[0].shape == (1, 4, 97)


@pytest.mark.usefixtures("hydra_conf")
@pytest.mark.parametrize(
    "override",
    ["attention.n_kv_heads=abc", "model.d_model=wide", "norm.eps=tiny", "optimizer.nesterov=maybe"],
)
def test_wrong_type_fails_at_composition(override: str) -> None:
    with pytest.raises(ConfigCompositionException):
        compose(config_name=PRIMARY, overrides=[override])


@pytest.mark.usefixtures("hydra_conf")
def test_unknown_key_fails_at_composition() -> None:
    with pytest.raises(ConfigCompositionException):
        compose(config_name=PRIMARY, overrides=["attention.n_kv_head=2"])  # typo


@pytest.mark.usefixtures("hydra_conf")
def test_well_typed_but_invalid_value_composes_then_fails_validation() -> None:
    cfg = compose(config_name=PRIMARY, overrides=["attention.n_kv_heads=3"])
    with pytest.raises(ConfigError, match="n_kv_heads=3"):
        ArchitectureConfig.from_config(cfg).validate()


def test_wrong_type_in_a_yaml_file_fails_at_composition(tmp_path: Path) -> None:
    register_configs()
    (tmp_path / "attention").mkdir()
    (tmp_path / "attention" / "bad.yaml").write_text(
        "defaults:\n  - /schema/attention/gqa@_here_\n  - _self_\nname: gqa\nn_kv_heads: abc\n"
    )
    with (
        initialize_config_dir(config_dir=str(tmp_path), version_base="1.3"),
        pytest.raises(ConfigCompositionException),
    ):
        compose(config_name="attention/bad")


@pytest.mark.skipif(
    not (CONF_DIR / "config.yaml").exists(), reason="conf/config.yaml not written yet"
)
def test_primary_config_yaml_composes(hydra_conf: None) -> None:

    cfg = compose(config_name="config")
    arch = ArchitectureConfig.from_config(cfg)
    arch.validate()
    assert set(arch.factors()) == {"attention", "norm", "pos", "ffn", "window", "sinks", "model"}
    OPTIMIZER.typed(cfg.optimizer).validate()
