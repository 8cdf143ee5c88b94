"""Learning-rate grids: the best rate per arm, whether it is interior, and where to look next.

A best rate at the edge of the grid is only a bound: the true optimum may lie beyond it, and an
arm compared at an edge rate may be compared at a worse rate than its rivals. The remedy is to
extend the grid by one step (a factor of 2, one log2 step) on that side, up to a limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

#: Multiplicative grid step (one log2 step).
STEP = 2.0
#: The grid is never extended beyond these lr_scale values.
MIN_SCALE = 2.0**-6
MAX_SCALE = 2.0**6


@dataclass(frozen=True)
class LrChoice:
    arm: str
    best: float
    #: ``None`` when the best rate is interior, else ``"low"``, ``"high"`` or ``"single"``.
    edge: str | None
    #: The rate to try next (``None``: interior, or the limit is reached).
    next_rate: float | None
    n_rates: int

    @property
    def interior(self) -> bool:
        return self.edge is None

    def text(self) -> str:
        if self.n_rates < 2:
            return f"{self.best:g} (single rate: untuned)"
        if self.interior:
            return f"{self.best:g} (interior of {self.n_rates} rates)"
        hint = f"; try {self.next_rate:g} next" if self.next_rate else "; grid limit reached"
        return f"{self.best:g} (at the {self.edge} edge{hint})"


def lr_table(runs: pd.DataFrame, metric: str = "loss", rate: str = "lr_scale") -> pd.DataFrame:
    """Mean ``metric`` over seeds per (arm, rate)."""
    return (
        runs.groupby(["arm", rate])[metric]
        .agg(mean="mean", n_seeds="count")
        .reset_index()
        .rename(columns={rate: "rate"})
    )


def propose_next(rates: list[float], best: float) -> tuple[str | None, float | None]:
    """``(edge, next rate)`` for a best rate at an edge of ``rates``; ``(None, None)`` inside."""
    grid = sorted(set(rates))
    if len(grid) < 2:
        return ("single" if grid else None), None
    if math.isclose(best, grid[0]):
        candidate = grid[0] / STEP
        return "low", candidate if candidate >= MIN_SCALE * (1 - 1e-9) else None
    if math.isclose(best, grid[-1]):
        candidate = grid[-1] * STEP
        return "high", candidate if candidate <= MAX_SCALE * (1 + 1e-9) else None
    return None, None


def best_rates(table: pd.DataFrame) -> list[LrChoice]:
    """One :class:`LrChoice` per arm of an :func:`lr_table`."""
    choices = []
    for arm, rows in table.dropna(subset=["mean"]).groupby("arm", sort=True):
        best = float(rows.loc[rows["mean"].idxmin(), "rate"])
        rates = rows["rate"].astype(float).tolist()
        edge, next_rate = propose_next(rates, best)
        choices.append(LrChoice(str(arm), best, edge, next_rate, len(set(rates))))
    return choices
