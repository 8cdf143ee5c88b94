"""Component registries: one per Hydra config group, and the contract every component follows.

Each swappable component (an attention variant, a position encoding, an optimizer, a corpus...)
is a class registered under the name users type on the command line, together with the dataclass
that types its config. Registering also stores that dataclass in Hydra's ConfigStore as
``schema/<group>/<name>``, which the YAML file ``conf/<group>/<name>.yaml`` extends, so Hydra
type-checks every value a user sets.

The contract, the same in every group:

- the config class subclasses ``ComponentConfig``: a ``name`` and one ``validate(ctx)`` that
  raises ``ConfigError`` naming the bad value and the valid range, before anything is allocated;
- the component is built as ``Component(cfg, ctx)``, ``ctx`` being the group's context dataclass
  (documented next to the group's ``Protocol``);
- ``Registry.typed(node)`` turns a composed config node (or a plain dict) into the config class.

Adding a variant therefore takes one module (a config class and a class decorated with
``REGISTRY.register``) and one YAML file; the package's ``__init__`` discovers the module.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, is_dataclass
from typing import Any, Generic, TypeVar

from hydra.core.config_store import ConfigStore

from gpt5_ablate.errors import ConfigError

T = TypeVar("T")
S = TypeVar("S")


@dataclass
class ComponentConfig:
    """Base of every component config: the option name and one validation hook."""

    name: str = "?"

    def validate(self, ctx: Any = None) -> None:
        """Raise ``ConfigError`` for a bad value. ``ctx``: what the group's checks need to know
        about the rest of the config (the model preset for model parts), or None."""


class Component:
    """Base of the components that keep their config (corpora, tokenizers): the constructor
    shape ``Component(cfg, ctx)`` and the one ``validate`` every group has."""

    def __init__(self, cfg: Any, ctx: Any = None) -> None:
        self.cfg = cfg
        self.ctx = ctx

    @property
    def name(self) -> str:
        return str(self.cfg.name)

    def validate(self) -> None:
        """Cheap checks of the config (no reading, no downloading): ``ConfigError`` naming the
        bad value."""
        self.cfg.validate(self.ctx)


@dataclass
class RegistryEntry(Generic[T]):
    name: str
    component: T
    config_class: type


def as_typed(schema: type[S], node: Any) -> S:
    """A config node (DictConfig, plain mapping or the dataclass itself) as ``schema``, with
    Hydra's type checks applied to every value."""
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(node, schema):
        return node
    if is_dataclass(node) and not isinstance(node, type):
        node = OmegaConf.structured(node)
    try:
        if isinstance(node, DictConfig):
            # Resolved where it stands: interpolations may point anywhere in the whole config
            # (e.g. an optimizer's rate at ${model.default_lr.adamw}).
            node = OmegaConf.to_container(node, resolve=True)
        if isinstance(node, Mapping):
            node = OmegaConf.create(dict(node))
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), node))  # type: ignore[return-value]
    except OmegaConfBaseException as error:
        raise ConfigError(f"Invalid {schema.__name__} value: {error.msg}") from None


class Registry(Generic[T]):
    """Maps a config-group option name to the component that implements it."""

    def __init__(self, group: str) -> None:
        self.group = group
        self._entries: dict[str, RegistryEntry[T]] = {}

    def register(self, name: str, config_class: type) -> Callable[[T], T]:
        def decorator(component: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.group} option {name!r} is registered twice")
            self._entries[name] = RegistryEntry(name, component, config_class)
            ConfigStore.instance().store(group=f"schema/{self.group}", name=name, node=config_class)
            return component

        return decorator

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entry(self, name: str) -> RegistryEntry[T]:
        if name not in self._entries:
            raise ConfigError(
                f"Unknown {self.group} {name!r}. Valid choices: {', '.join(self.names())}."
            )
        return self._entries[name]

    def get(self, name: str) -> T:
        return self.entry(name).component

    def typed(self, node: Any) -> Any:
        """The typed config of a composed node with a ``name`` key (or a plain mapping, or an
        instance of a registered config class, returned as it is)."""
        if is_dataclass(node) and not isinstance(node, type):
            name = getattr(node, "name", None)
            if name in self._entries and isinstance(node, self._entries[name].config_class):
                return node
        name = node.get("name") if isinstance(node, Mapping) else getattr(node, "name", None)
        if name is None:
            raise ConfigError(
                f"The {self.group} config needs a 'name' key naming one of: "
                f"{', '.join(self.names())}."
            )
        return as_typed(self.entry(str(name)).config_class, node)

    def build(self, cfg: Any, ctx: Any = None) -> Any:
        """Construct the component a typed config names: ``Component(cfg, ctx)``."""
        return self.get(cfg.name)(cfg, ctx)  # type: ignore[operator]

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __repr__(self) -> str:
        return f"Registry({self.group!r}, {self.names()})"


def discover(package_name: str) -> None:
    """Import every module of a package, so their ``@REGISTRY.register`` decorators run: a new
    variant module is picked up without editing any list."""
    package = importlib.import_module(package_name)
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package_name}.{info.name}")
