"""Per-factor outcomes from the fitted model: favoured, equivalent, inconclusive, or conditional.

For each varied factor:

1. **Comparisons with the best.** The level with the lowest marginal mean is the candidate; every
   other level is compared with it (``best − other``; negative = the best lowers the loss). For a
   three-level factor that is two comparisons, the "all levels against the best" family that
   Dunnett's and Hsu's procedures address; here their multiplicity is handled by the Holm step
   below (documented simplification: the best is picked from the same data, so the comparisons
   lean slightly towards finding a winner; Holm over them is what the report claims, not MCB).
2. **Interactions.** For every other factor the model has an interaction with, the interaction is
   *material* when its joint Wald F-test rejects at the unadjusted level α (screening at the
   unadjusted level errs towards conditioning, i.e. towards *not* pooling), or when its *size*
   exceeds half the pooled effect. The size is how far a conditional effect moves from the
   pooled one, taken conservatively as ``|move| − se(move)`` so that noise alone (a move about
   as large as its own standard error) does not split a factor into underpowered cells; a size
   below half the equivalence margin never counts, as it cannot move a conditional effect
   across the margin's scale.
3. **Conditioning.** With a material interaction the factor gets NO pooled verdict: it is judged
   separately in each combination of the levels of the factors it interacts with.
4. **Tests and Holm.** Each comparison used (pooled, or per condition) has a two-sided t-test of
   "no difference" and a TOST equivalence test (Schuirmann 1987: two one-sided tests of
   ``Δ ≤ −margin`` and ``Δ ≥ margin``; p = the larger). All of them, over all factors, form one
   family adjusted by Holm's step-down method (``statsmodels.stats.multitest.multipletests``).
   Intervals shown are simultaneous Bonferroni intervals at level ``1 − α/m`` (m tests): an
   interval that excludes 0 always means a Holm rejection (Holm is the more powerful of the two).
5. **Outcome, read from the intervals shown.** *Favoured (best)* only when every comparison's
   simultaneous interval (level ``1 − α/m``) lies below zero; *equivalent within ±margin* only
   when every comparison's TOST interval (level ``1 − 2α/m``, the interval form of a Bonferroni
   TOST) lies inside ±margin; otherwise *inconclusive*. Holm's p-values are shown beside them,
   but a Holm rejection whose interval still touches zero is reported as inconclusive, so no
   cell claims more than the interval printed next to it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats
from statsmodels.stats.multitest import multipletests

from gpt5_ablate.analysis.design import DesignFit, Estimate
from gpt5_ablate.analysis.power import PowerLine, power_line

DEFAULT_MARGIN = 0.02  # nats/token
DEFAULT_ALPHA = 0.05
#: An interaction whose effect on a comparison exceeds this share of the pooled effect is material.
INTERACTION_SHARE = 0.5

Condition = tuple[tuple[str, str], ...]


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-adjusted p-values (NaN stays NaN and does not count towards the family size)."""
    values = np.asarray(p_values, dtype=float)
    out = np.full(values.shape, math.nan)
    finite = ~np.isnan(values)
    if finite.any():
        out[finite] = multipletests(values[finite], method="holm")[1]
    return out


def tost_p(estimate: float, se: float, df: float, margin: float) -> float:
    """Two one-sided tests of ``|Δ| ≥ margin``: the larger of the two one-sided p-values."""
    if not (se > 0 and df > 0) or math.isnan(estimate):
        return math.nan
    lower = float(scipy_stats.t.sf((estimate + margin) / se, df))  # H0: Δ ≤ −margin
    upper = float(scipy_stats.t.cdf((estimate - margin) / se, df))  # H0: Δ ≥ +margin
    return max(lower, upper)


def condition_text(condition: Condition) -> str:
    return ", ".join(f"{f}={v}" for f, v in condition) if condition else "pooled"


@dataclass
class Comparison:
    """``best − reference`` within one condition, with its tests (negative = best is better)."""

    factor: str
    level: str
    reference: str
    condition: Condition
    effect: Estimate
    tost_p: float
    p_holm: float = math.nan
    tost_p_holm: float = math.nan
    ci: tuple[float, float] = (math.nan, math.nan)
    #: The ``1 − 2α/m`` interval whose inclusion in ±margin is the (Bonferroni) TOST.
    tost_ci: tuple[float, float] = (math.nan, math.nan)
    #: Document-level bootstrap interval (evaluation-set noise only), filled in by docboot.
    doc_ci: tuple[float, float] | None = None

    @property
    def estimate(self) -> float:
        return self.effect.estimate

    @property
    def below_zero(self) -> bool:
        """The simultaneous interval excludes zero on the side of the best level."""
        return not math.isnan(self.ci[1]) and self.ci[1] < 0

    def within(self, margin: float) -> bool:
        """The TOST interval lies inside ±margin."""
        low, high = self.tost_ci
        return not math.isnan(low) and -margin < low and high < margin

    def text(self, digits: int = 3) -> str:
        low, high = self.ci
        interval = "" if math.isnan(low) else f" [{low:+.{digits}f}, {high:+.{digits}f}]"
        tlow, thigh = self.tost_ci
        tost = (
            "" if math.isnan(tlow) else f", TOST interval [{tlow:+.{digits}f}, {thigh:+.{digits}f}]"
        )
        return (
            f"{self.level} − {self.reference}: {self.estimate:+.{digits}f}{interval}{tost}, "
            f"Holm p={self.p_holm:.2g}, TOST p={self.tost_p_holm:.2g}"
        )


@dataclass
class CellVerdict:
    """The outcome for one factor within one condition (``()`` = pooled over the others)."""

    condition: Condition
    best: str
    means: dict[str, float]
    comparisons: list[Comparison]
    outcome: str = "inconclusive"  # favoured | equivalent | inconclusive | untestable
    alpha: float = DEFAULT_ALPHA
    margin: float = DEFAULT_MARGIN

    def label(self, margin: float) -> str:
        if self.outcome == "favoured":
            return f"favoured {self.best}"
        if self.outcome == "equivalent":
            return f"equivalent within ±{margin:g}"
        if self.outcome == "untestable":
            return f"untestable (lowest mean: {self.best})"
        beaten = [c.reference for c in self.comparisons if c.below_zero]
        tail = f"; {self.best} beats {', '.join(beaten)}" if beaten else ""
        return f"inconclusive (lowest mean: {self.best}{tail})"


@dataclass
class InteractionCheck:
    factor: str
    other: str
    f_pvalue: float
    #: Largest |conditional − pooled| effect over the factor's comparisons and ``other``'s levels.
    move: float
    #: Largest conservative size of such a move, ``|move| − se(move)`` (may be negative).
    size: float
    #: The pooled |effect| of the comparison with that largest size.
    pooled: float
    material: bool
    #: ``{level of other: {reference: conditional effect}}``.
    conditional: dict[str, dict[str, Estimate]] = field(default_factory=dict)

    def text(self) -> str:
        return (
            f"{self.factor} × {self.other}: F-test p={self.f_pvalue:.2g}; conditional effects "
            f"move by up to {self.move:.3f} ({max(self.size, 0.0):.3f} beyond one se) around a "
            f"pooled {self.pooled:.3f}" + (" (material)" if self.material else "")
        )


@dataclass
class FactorResult:
    factor: str
    levels: list[str]
    pooled: CellVerdict
    interactions: list[InteractionCheck] = field(default_factory=list)
    cells: list[CellVerdict] = field(default_factory=list)
    power: PowerLine | None = None
    reason: str = ""

    @property
    def conditional_on(self) -> list[str]:
        return [check.other for check in self.interactions if check.material]

    @property
    def used(self) -> list[CellVerdict]:
        """The verdicts the report stands by: per condition when conditional, else pooled."""
        return self.cells if self.conditional_on else [self.pooled]

    @property
    def category(self) -> str:
        """favoured | equivalent | inconclusive | untestable | depends."""
        used = self.used
        kinds = {(c.outcome, c.best if c.outcome == "favoured" else "") for c in used}
        if len(kinds) == 1:
            return used[0].outcome
        return "depends"

    @property
    def favoured(self) -> str | None:
        return self.used[0].best if self.category == "favoured" else None

    def outcome_text(self, margin: float) -> str:
        used = self.used
        if not self.conditional_on:
            return self.pooled.label(margin)
        others = " × ".join(self.conditional_on)
        if self.category == "favoured":
            return f"{used[0].label(margin)} at every level of {others} (no pooled verdict)"
        if self.category != "depends":
            return f"{self.category} at every level of {others} (no pooled verdict)"
        parts = [f"{condition_text(c.condition)}: {c.label(margin)}" for c in used]
        return f"depends on {others} (no pooled verdict): " + "; ".join(parts)


@dataclass
class VerdictSet:
    fit: DesignFit
    factors: list[FactorResult]
    alpha: float
    margin: float
    n_tests: int

    @property
    def comparisons(self) -> list[Comparison]:
        return [c for f in self.factors for cell in f.used for c in cell.comparisons]


def _cell(fit: DesignFit, factor: str, condition: Condition, margin: float) -> CellVerdict:
    means = {lv: fit.marginal_mean(factor, lv, dict(condition)) for lv in fit.levels[factor]}
    best = min(means, key=lambda lv: means[lv].estimate)
    comparisons = []
    for other in fit.levels[factor]:
        if other == best:
            continue
        effect = fit.contrast(factor, best, other, dict(condition))
        p_equiv = tost_p(effect.estimate, effect.se, effect.df, margin)
        comparisons.append(Comparison(factor, best, other, condition, effect, p_equiv))
    return CellVerdict(condition, best, {k: v.estimate for k, v in means.items()}, comparisons)


def _interaction(
    fit: DesignFit, factor: str, other: str, pooled: CellVerdict, alpha: float, margin: float
) -> InteractionCheck:
    _, _, p_value = fit.interaction_test(*fit.ordered_pair(factor, other))
    conditional: dict[str, dict[str, Estimate]] = {}
    largest, size, pooled_size, by_size = 0.0, -math.inf, 0.0, False
    for level in fit.levels[other]:
        conditional[level] = {}
        for comparison in pooled.comparisons:
            args = (factor, comparison.level, comparison.reference)
            effect = fit.contrast(*args, {other: level})
            conditional[level][comparison.reference] = effect
            move = fit.estimate(
                fit.contrast_vector(*args, {other: level}) - fit.contrast_vector(*args)
            )
            conservative = abs(move.estimate) - (0.0 if math.isnan(move.se) else move.se)
            big = conservative > INTERACTION_SHARE * abs(comparison.estimate)
            by_size |= big and conservative > margin / 2
            largest = max(largest, abs(move.estimate))
            if conservative > size:
                size, pooled_size = conservative, abs(comparison.estimate)
    material = bool((not math.isnan(p_value) and p_value < alpha) or by_size)
    return InteractionCheck(
        factor, other, p_value, largest, size, pooled_size, material, conditional
    )


def _outcome(cell: CellVerdict, margin: float) -> str:
    """From the intervals shown: favoured if all lie below 0, equivalent if all TOST intervals
    lie inside ±margin."""
    if not cell.comparisons or any(math.isnan(c.ci[0]) for c in cell.comparisons):
        return "untestable"
    if all(c.within(margin) for c in cell.comparisons):
        return "equivalent"
    if all(c.below_zero for c in cell.comparisons):
        return "favoured"
    return "inconclusive"


def _untestable(runs: pd.DataFrame, response: str, factor: str, reason: str) -> FactorResult:
    means = runs.groupby(factor)[response].mean().sort_values()
    cell = CellVerdict((), str(means.index[0]), means.to_dict(), [], outcome="untestable")
    return FactorResult(factor, sorted(map(str, means.index)), cell, reason=reason)


def analyse_factors(
    fit: DesignFit,
    runs: pd.DataFrame,
    response: str,
    factors: Sequence[str],
    margin: float = DEFAULT_MARGIN,
    alpha: float = DEFAULT_ALPHA,
) -> VerdictSet:
    """Outcomes for every varied factor, with one Holm family over every test used."""
    if not fit.ok:
        results = [_untestable(runs, response, f, fit.reason) for f in factors]
        return VerdictSet(fit, results, alpha, margin, 0)
    results = []
    for factor in fit.factors:
        pooled = _cell(fit, factor, (), margin)
        checks = [
            _interaction(fit, factor, other, pooled, alpha, margin)
            for other in fit.factors
            if other != factor and fit.has_interaction(factor, other)
        ]
        result = FactorResult(factor, list(fit.levels[factor]), pooled, checks)
        if result.conditional_on:
            combos = itertools.product(*(fit.levels[o] for o in result.conditional_on))
            result.cells = [
                _cell(fit, factor, tuple(zip(result.conditional_on, combo, strict=True)), margin)
                for combo in combos
            ]
        results.append(result)
    verdicts = VerdictSet(fit, results, alpha, margin, 0)
    comparisons = verdicts.comparisons
    adjusted = holm([c.effect.p_value for c in comparisons] + [c.tost_p for c in comparisons])
    verdicts.n_tests = int(np.sum(~np.isnan(adjusted)))
    level = 1.0 - alpha / max(verdicts.n_tests, 1)
    tost_level = 1.0 - 2.0 * alpha / max(verdicts.n_tests, 1)
    for i, comparison in enumerate(comparisons):
        comparison.p_holm = float(adjusted[i])
        comparison.tost_p_holm = float(adjusted[len(comparisons) + i])
        comparison.ci = comparison.effect.ci(level)
        comparison.tost_ci = comparison.effect.ci(tost_level)
    for result in results:
        for cell in result.used:
            cell.alpha, cell.margin = alpha, margin
            cell.outcome = _outcome(cell, margin)
        _add_power(result, fit, runs, alpha / max(verdicts.n_tests, 1), margin)
    return verdicts


def _add_power(
    result: FactorResult, fit: DesignFit, runs: pd.DataFrame, alpha: float, margin: float
) -> None:
    comparisons = [c for cell in result.used for c in cell.comparisons]
    if not comparisons:
        return
    worst = max(comparisons, key=lambda c: c.effect.se)
    arms = runs.groupby(fit.factors).size()
    result.power = power_line(
        worst.effect.se,
        worst.effect.df,
        alpha,
        margin,
        seeds_now=int(arms.min()),
        n_arms=len(arms),
        seed_block=len(fit.seed_levels) > 1,
    )
