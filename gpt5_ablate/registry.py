"""Component registries: one per Hydra config group.

Each swappable component (an attention variant, a position encoding, an optimizer...) is a class
registered under the name users type on the command line, together with the dataclass that types
its config. Registering also stores that dataclass in Hydra's ConfigStore as
``schema/<group>/<name>``, which the YAML file ``conf/<group>/<name>.yaml`` extends, so Hydra
type-checks every value a user sets.

Adding a variant therefore takes one class (decorated with ``REGISTRY.register``) and one YAML
file; nothing else in the code base changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from hydra.core.config_store import ConfigStore

from gpt5_ablate.errors import ConfigError

T = TypeVar("T")


@dataclass
class RegistryEntry(Generic[T]):
    name: str
    component: T
    config_class: type


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

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __repr__(self) -> str:
        return f"Registry({self.group!r}, {self.names()})"


def to_dataclass(registry: Registry[Any], cfg: Any) -> Any:
    """Turn a composed DictConfig node (with a ``name`` key) into its typed dataclass."""
    from omegaconf import DictConfig, OmegaConf

    if not isinstance(cfg, DictConfig):
        return cfg
    entry = registry.entry(str(cfg.name))
    merged = OmegaConf.merge(OmegaConf.structured(entry.config_class), cfg)
    return OmegaConf.to_object(merged)
