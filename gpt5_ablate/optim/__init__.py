"""Optimizers. Importing this package registers every ``optimizer`` option."""

from gpt5_ablate.optim.builders import (
    AdamWConfig,
    MuonAdamWConfig,
    ParamSplit,
    build_adamw,
    build_muon_adamw,
    split_parameters,
)
from gpt5_ablate.optim.muon import Muon, newton_schulz_orthogonalize
from gpt5_ablate.optim.registries import OPTIMIZER
from gpt5_ablate.optim.schedule import lr_multiplier

__all__ = [
    "OPTIMIZER",
    "AdamWConfig",
    "Muon",
    "MuonAdamWConfig",
    "ParamSplit",
    "build_adamw",
    "build_muon_adamw",
    "lr_multiplier",
    "newton_schulz_orthogonalize",
    "split_parameters",
]
