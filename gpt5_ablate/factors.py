"""The factors an ablation varies: one definition, read by the run-dir name, the MLflow tags,
the run name and the analysis.

A factor is a config group whose options are alternatives for one design decision. The order
here is the order of the run-dir name and of the report's tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

FACTORS: tuple[str, ...] = ("attention", "optimizer", "norm", "pos", "ffn", "window", "sinks")


def factor_levels(cfg: Any) -> dict[str, str]:
    """``{factor: option name}`` of a composed config (a missing group reads as ``?``)."""
    levels = {}
    for factor in FACTORS:
        node = cfg.get(factor) if isinstance(cfg, Mapping) else getattr(cfg, factor, None)
        name = node.get("name") if isinstance(node, Mapping) else getattr(node, "name", None)
        levels[factor] = str(name) if name is not None else "?"
    return levels


def arm_name(cfg: Any) -> str:
    """The factor levels joined by ``-``: ``gqa-muon_adamw-qk_rmsnorm-rope-swiglu``."""
    return "-".join(factor_levels(cfg).values())
