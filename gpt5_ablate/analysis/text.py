"""Number and list formatting shared by the report, the warnings and the notebook."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pandas as pd


def si(value: float | None, digits: int = 3) -> str:
    """1234567 -> '1.23M'; keeps big counts (params, tokens, FLOPs) readable."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or pd.isna(value):
        return "n/a"
    for threshold, suffix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= threshold:
            return f"{value / threshold:.{digits}g}{suffix}"
    return f"{value:.{digits}g}"


def range_text(values: pd.Series, fmt: Callable[[float], str] = si) -> str:
    data = pd.to_numeric(values, errors="coerce").dropna()
    if data.empty:
        return "n/a"
    low, high = data.min(), data.max()
    return fmt(low) if low == high else f"{fmt(low)}–{fmt(high)}"


def listing(names: Sequence[str], limit: int = 8) -> str:
    """``a, b, c`` with at most ``limit`` names, then ``and N more``."""
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def p_text(p: float) -> str:
    if math.isnan(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"
