"""Power of a contrast from the linear model: what these seeds can detect, and what more would.

A contrast estimated with standard error ``se`` on ``ν`` residual degrees of freedom is tested
with ``t = Δ̂ / se``; under a true effect ``Δ`` that statistic follows a noncentral t with
noncentrality ``Δ / se``. ``statsmodels``' one-sample ``TTestPower`` computes exactly that power
when given ``nobs = ν + 1`` (so its df is ν) and effect size ``d = Δ / (se·√(ν+1))`` (so its
noncentrality ``d·√nobs`` is ``Δ/se``); the functions below only translate.

Seeds needed: with ``s`` seeds per arm now, ``s'`` seeds shrink every contrast's standard error
by ``√(s/s')`` (each arm's mean averages ``s'`` runs) and add ``(s' − s)`` runs per arm to the
residual df (less the extra seed-block columns). The residual variance is taken as observed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from statsmodels.stats.power import TTestPower

TARGET_POWER = 0.8
MAX_SEEDS = 1000


def power(effect: float, se: float, df: float, alpha: float) -> float:
    """Probability that a two-sided level-``alpha`` t-test detects a true ``effect``."""
    if not (se > 0 and df > 0) or math.isnan(effect):
        return math.nan
    nobs = df + 1.0
    d = abs(effect) / (se * math.sqrt(nobs))
    return float(TTestPower().power(effect_size=d, nobs=nobs, alpha=alpha))


def minimum_detectable_effect(
    se: float, df: float, alpha: float, target: float = TARGET_POWER
) -> float:
    """Smallest |effect| detected with probability ``target`` at level ``alpha``."""
    if not (se > 0 and df > 0):
        return math.nan
    nobs = df + 1.0
    d = TTestPower().solve_power(effect_size=None, nobs=nobs, alpha=alpha, power=target)
    return float(d) * se * math.sqrt(nobs)


def seeds_needed(
    effect: float,
    se: float,
    df: float,
    alpha: float,
    seeds_now: int,
    n_arms: int,
    seed_block: bool,
    target: float = TARGET_POWER,
) -> int | None:
    """Fewest seeds per arm that detect ``effect`` with probability ``target`` (None: > MAX)."""
    if not (se > 0 and df > 0 and seeds_now > 0) or effect == 0:
        return None
    for seeds in range(max(seeds_now, 1), MAX_SEEDS + 1):
        extra = seeds - seeds_now
        df_new = df + extra * n_arms - (extra if seed_block else 0)
        if power(effect, se * math.sqrt(seeds_now / seeds), df_new, alpha) >= target:
            return seeds
    return None


@dataclass(frozen=True)
class PowerLine:
    """One factor's power statement (its least precise comparison decides)."""

    se: float
    df: float
    alpha: float
    detectable: float
    margin: float
    seeds_now: int
    seeds_for_margin: int | None

    def text(self) -> str:
        if math.isnan(self.detectable):
            return "no power estimate (no residual degrees of freedom)"
        seeds = (
            f"{self.seeds_for_margin} seeds per arm"
            if self.seeds_for_margin is not None
            else f"more than {MAX_SEEDS} seeds per arm"
        )
        return (
            f"80% power to detect |effect| ≥ {self.detectable:.3f} nats at α = {self.alpha:.2g} "
            f"(se {self.se:.3f}, {self.df:g} df, {self.seeds_now} seed(s) per arm); detecting "
            f"±{self.margin:g} needs {seeds}"
        )


def power_line(
    se: float,
    df: float,
    alpha: float,
    margin: float,
    seeds_now: int,
    n_arms: int,
    seed_block: bool,
) -> PowerLine:
    return PowerLine(
        se,
        df,
        alpha,
        minimum_detectable_effect(se, df, alpha),
        margin,
        seeds_now,
        seeds_needed(margin, se, df, alpha, seeds_now, n_arms, seed_block),
    )
