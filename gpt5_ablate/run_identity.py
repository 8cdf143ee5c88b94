"""What identifies a run: the resolved configuration, minus the settings that cannot change its
result.

The run dir is named by a hash of that identity, so the same configuration finds the same run dir
however it was launched (a single run, one job of a sweep, overrides that restate a default,
another tracking store): it resumes there, or reports that it already finished. Anything that can
change a number the run produces (the model, a logged curve, the samples) stays in the identity.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from omegaconf import Container, DictConfig, OmegaConf

# The settings left out of a run's identity, each with why it cannot change the run's result.
# A key here also never blocks a resume (gpt5_ablate.train.checkpoint.check_config).
COSMETIC_KEYS: dict[str, str] = {
    # launcher=joblib / submitit_slurm set only hydra.launcher, so they are left out with it.
    "hydra": "Hydra's own settings: where files go, how sweep jobs are launched, logging",
    "tracking": (
        "where and how results are recorded: the store's URI and credentials, the MLflow "
        "experiment (already part of the run dir's path), run name, flush batch size, whether "
        "the checkpoint is uploaded"
    ),
    "cache_dir": "where the shared data cache lives; its entries are keyed by the data settings",
    "trainer.progress": "the progress bar only",
    "trainer.resume": "whether to pick up the run dir's checkpoint, not what is computed",
    "trainer.trust_checkpoint": "permission to load an old pickled checkpoint, not what it holds",
}


# Settings added after runs were recorded, each with the default that reproduces what those runs
# did: left out of the identity while at that default, so an older run dir is still found
# (resumed, or reported finished) by the same command.
ADDED_LATER: dict[str, Any] = {
    "optimizer.embed_lr": None,  # AdamW's separate embedding/head rate; None = one rate (lr)
}


def is_cosmetic(key: str) -> bool:
    """Whether a dotted key (``tracking.uri``, ``trainer.progress``) is in ``COSMETIC_KEYS`` or
    under one of them."""
    return any(key == name or key.startswith(f"{name}.") for name in COSMETIC_KEYS)


def run_identity(cfg: Mapping[str, Any] | DictConfig) -> dict[str, Any]:
    """The resolved configuration without its cosmetic keys, as plain containers."""
    if isinstance(cfg, DictConfig):
        # Resolve node by node, leaving out the ``hydra`` node, which refers to this very value
        # (the run dir is made of it).
        plain = {}
        for key in cfg:
            if str(key) == "hydra":
                continue
            value = cfg[key]
            if isinstance(value, Container):
                value = OmegaConf.to_container(value, resolve=True)
            plain[str(key)] = value
    else:
        plain = dict(cfg)
    return _without_cosmetic(plain, "")


def _without_cosmetic(node: dict[str, Any], prefix: str) -> dict[str, Any]:
    kept = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        if is_cosmetic(name) or (name in ADDED_LATER and value == ADDED_LATER[name]):
            continue
        kept[key] = _without_cosmetic(value, f"{name}.") if isinstance(value, dict) else value
    return kept


def run_hash(cfg: Mapping[str, Any] | DictConfig) -> str:
    """Eight hex digits of the SHA-1 of the run's identity (``run_identity``)."""
    text = json.dumps(run_identity(cfg), sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:8]
