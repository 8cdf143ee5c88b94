"""Optimizers. Importing this package registers every ``optimizer`` option.

- ``registries``: the ``OPTIMIZER`` registry and the contract of an option (config + builder);
- ``builders``: ``adamw`` and ``muon_adamw``, and ``split_parameters``, the documented rule that
  sends each parameter to Muon or AdamW (with or without weight decay);
- ``hints``: the per-parameter attributes model code sets for the optimizers
  (``optimizer_hint``, ``orthogonalize_blocks``);
- ``muon``: the Muon optimizer (per-block and per-expert orthogonalisation);
- ``schedule``: the learning-rate schedule.
"""

from gpt5_ablate.optim.builders import (
    AdamWConfig,
    MuonAdamWConfig,
    ParamSplit,
    build_adamw,
    build_muon_adamw,
    split_parameters,
)
from gpt5_ablate.optim.hints import collect_param_hints, restore_param_hints
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
    "collect_param_hints",
    "lr_multiplier",
    "newton_schulz_orthogonalize",
    "restore_param_hints",
    "split_parameters",
]
