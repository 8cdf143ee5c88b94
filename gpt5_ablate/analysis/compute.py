"""Compute multiplier: how much more training compute the worse arm needs to match the better.

Across model sizes each arm's loss is fitted as a line in log-compute,
``loss = a + b·log10(C)`` (C = training FLOPs = ``flops_per_token × tokens``, from the
parameter count). The worse arm reaches the better arm's loss at compute ``C`` when
``a_w + b_w·log10(C') = a_b + b_b·log10(C)``, so the multiplier is

    m(C) = C' / C = 10 ** ((a_b − a_w + (b_b − b_w)·log10 C) / b_w)

evaluated at a reference compute (the geometric mean of the compute values measured); with
equal slopes it is the same at every C. The interval is a percentile bootstrap that resamples
runs within each (arm, compute) cell and refits both lines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

DEFAULT_RESAMPLES = 1000


@dataclass(frozen=True)
class MultiplierResult:
    better: str
    worse: str
    multiplier: float
    low: float
    high: float
    reference_flops: float
    slopes: tuple[float, float]
    n_sizes: int

    def text(self) -> str:
        if math.isnan(self.multiplier):
            return f"{self.worse} vs {self.better}: no multiplier (a fitted slope is not negative)"
        interval = "" if math.isnan(self.low) else f" [{self.low:.3g}, {self.high:.3g}]"
        return (
            f"{self.worse} needs {self.multiplier:.3g}×{interval} the training compute of "
            f"{self.better} to reach its loss (at {self.reference_flops:.3g} FLOPs; "
            f"{self.n_sizes} sizes)"
        )


def _fit(log_c: np.ndarray, loss: np.ndarray) -> tuple[float, float]:
    """``(intercept, slope)`` of the least-squares line of ``loss`` on ``log_c``."""
    slope, intercept = np.polyfit(log_c, loss, 1)
    return float(intercept), float(slope)


def multiplier_from_fits(
    better: tuple[float, float], worse: tuple[float, float], log_c: float
) -> float:
    (a_b, b_b), (a_w, b_w) = better, worse
    if b_w >= 0:
        return math.nan
    return float(10 ** ((a_b - a_w + (b_b - b_w) * log_c) / b_w))


def compute_multiplier(
    runs: pd.DataFrame,
    column: str,
    better: str,
    worse: str,
    loss: str = "loss",
    flops: str = "train_flops",
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> MultiplierResult | None:
    """The multiplier of ``worse`` relative to ``better`` (levels of ``column``), or None when
    either arm was measured at fewer than two compute values."""
    frame = runs[[column, loss, flops]].dropna()
    frame = frame[frame[flops] > 0].assign(log_c=lambda f: np.log10(f[flops].astype(float)))
    arms = {level: frame[frame[column] == level] for level in (better, worse)}
    if any(arm["log_c"].round(6).nunique() < 2 for arm in arms.values()):
        return None
    reference = float(frame["log_c"].mean())
    fits = {k: _fit(v["log_c"].to_numpy(), v[loss].to_numpy(dtype=float)) for k, v in arms.items()}
    estimate = multiplier_from_fits(fits[better], fits[worse], reference)
    rng = np.random.default_rng(seed)
    cells = {
        level: [
            (g["log_c"].to_numpy(), g[loss].to_numpy(dtype=float))
            for _, g in arm.groupby(arm["log_c"].round(6))
        ]
        for level, arm in arms.items()
    }
    draws = []
    for _ in range(n_resamples):
        refits = {}
        for level, groups in cells.items():
            picks = [rng.integers(0, len(y), len(y)) for _, y in groups]
            x = np.concatenate([c[i] for (c, _), i in zip(groups, picks, strict=True)])
            y = np.concatenate([v[i] for (_, v), i in zip(groups, picks, strict=True)])
            refits[level] = _fit(x, y)
        draws.append(multiplier_from_fits(refits[better], refits[worse], reference))
    values = np.asarray(draws, dtype=float)
    values = values[np.isfinite(values)]
    low, high = (
        (float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5)))
        if len(values) >= max(20, n_resamples // 2)
        else (math.nan, math.nan)
    )
    return MultiplierResult(
        better,
        worse,
        estimate,
        low,
        high,
        10**reference,
        (fits[better][1], fits[worse][1]),
        int(frame["log_c"].round(6).nunique()),
    )
