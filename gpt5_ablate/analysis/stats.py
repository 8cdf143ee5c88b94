"""Small-sample statistics for ablation verdicts: t-intervals, paired factor effects, LR selection.

Everything here works on the one-row-per-run table produced by :mod:`gpt5_ablate.analysis.load`
(or any DataFrame with the same columns), so the functions can be tested on hand-built tables.

Conventions:

* An *effect* of choosing level ``a`` over level ``b`` is ``metric(a) - metric(b)``; for a loss,
  negative means ``a`` is better.
* Intervals are two-sided Student-t intervals over independent replicates (seeds, or matched
  pairs of runs). With a single replicate there is no interval; that is reported, not hidden.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

#: The design factors a run's tags record; an arm is one combination of their levels.
FACTORS: tuple[str, ...] = ("attention", "optimizer", "norm", "pos", "ffn")

#: Columns besides the factors that must match for two runs to count as a pair. ``model`` is
#: included so runs of different size presets are never compared as if they were replicates.
PAIRING_CONTEXT: tuple[str, ...] = ("model", "seed")


# --------------------------------------------------------------------------------------------
# Student-t quantiles
# --------------------------------------------------------------------------------------------


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction for the regularized incomplete beta function (modified Lentz method)."""
    tiny = 1e-300
    c = 1.0
    d = 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 500):
        # Each iteration applies the even then the odd term of the fraction.
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1.0) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1.0)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            step = c * d
            result *= step
        if abs(step - 1.0) < 1e-15:
            break
    return result


def _regularized_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularized incomplete beta function."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    # The fraction converges fast only on one side of the mean; use the symmetry otherwise.
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def _t_cdf(t: float, df: float) -> float:
    """CDF of Student's t distribution with ``df`` (possibly fractional) degrees of freedom."""
    tail = 0.5 * _regularized_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile_fallback(p: float, df: float) -> float:
    """Student-t quantile by bisection on the CDF; used when scipy is not importable."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p={p} must be within (0, 1)")
    if df <= 0:
        raise ValueError(f"df={df} must be positive")
    if p < 0.5:
        return -t_quantile_fallback(1.0 - p, df)
    low, high = 0.0, 1.0
    while _t_cdf(high, df) < p:
        high *= 2.0
    for _ in range(200):
        mid = 0.5 * (low + high)
        if _t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
        if high - low < 1e-12 * max(1.0, high):
            break
    return 0.5 * (low + high)


def t_quantile(p: float, df: float) -> float:
    """Student-t quantile: scipy's when available (it is a transitive dependency), else ours."""
    try:
        from scipy.stats import t as student_t
    except ImportError:  # pragma: no cover - exercised through t_quantile_fallback in tests
        return t_quantile_fallback(p, df)
    return float(student_t.ppf(p, df))


# --------------------------------------------------------------------------------------------
# Intervals
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """A mean with its two-sided t-interval. ``half_width`` is NaN when it cannot be computed."""

    mean: float
    half_width: float
    n: int
    sd: float = math.nan
    df: float = math.nan
    level: float = 0.95

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    @property
    def has_ci(self) -> bool:
        return not math.isnan(self.half_width)

    @property
    def excludes_zero(self) -> bool:
        """True only when an interval exists and lies entirely on one side of zero."""
        return self.has_ci and (self.low > 0 or self.high < 0)

    def format(self, digits: int = 3, signed: bool = False) -> str:
        sign = "+" if signed else ""
        if not self.has_ci:
            return f"{self.mean:{sign}.{digits}f} (n={self.n}, no CI)"
        return (
            f"{self.mean:{sign}.{digits}f} [{self.low:{sign}.{digits}f}, "
            f"{self.high:{sign}.{digits}f}]"
        )


def mean_ci(values: Iterable[float], level: float = 0.95) -> Interval:
    """Mean and t-interval ``mean ± t_{(1+level)/2, n-1} · sd / sqrt(n)`` (sd with ddof=1)."""
    data = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    n = int(data.size)
    if n == 0:
        return Interval(math.nan, math.nan, 0, level=level)
    mean = float(data.mean())
    if n == 1:
        return Interval(mean, math.nan, 1, level=level)
    sd = float(data.std(ddof=1))
    half = t_quantile(0.5 + level / 2.0, n - 1) * sd / math.sqrt(n)
    return Interval(mean, half, n, sd=sd, df=n - 1, level=level)


def welch_ci(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Interval:
    """Interval for ``mean(a) - mean(b)`` with unequal variances (Welch–Satterthwaite df)."""
    xa = np.asarray(a, dtype=float)
    xb = np.asarray(b, dtype=float)
    xa, xb = xa[~np.isnan(xa)], xb[~np.isnan(xb)]
    n = int(min(xa.size, xb.size))
    if xa.size == 0 or xb.size == 0:
        return Interval(math.nan, math.nan, 0, level=level)
    diff = float(xa.mean() - xb.mean())
    if xa.size < 2 or xb.size < 2:
        return Interval(diff, math.nan, n, level=level)
    va, vb = xa.var(ddof=1) / xa.size, xb.var(ddof=1) / xb.size
    se = math.sqrt(va + vb)
    if se == 0:
        return Interval(diff, 0.0, n, sd=0.0, df=math.inf, level=level)
    df = (va + vb) ** 2 / (va**2 / (xa.size - 1) + vb**2 / (xb.size - 1))
    half = t_quantile(0.5 + level / 2.0, df) * se
    return Interval(diff, half, n, sd=se, df=df, level=level)


# --------------------------------------------------------------------------------------------
# Factors and arms
# --------------------------------------------------------------------------------------------


def varied_factors(runs: pd.DataFrame, factors: Sequence[str] = FACTORS) -> list[str]:
    """The factors with more than one level among ``runs`` (in the canonical order)."""
    return [f for f in factors if f in runs.columns and runs[f].dropna().nunique() > 1]


def factor_levels(runs: pd.DataFrame, factor: str) -> list[str]:
    return sorted(str(v) for v in runs[factor].dropna().unique())


def _context_columns(runs: pd.DataFrame, factor: str, factors: Sequence[str]) -> list[str]:
    """Columns that must agree for two runs to differ *only* in ``factor``."""
    others = [f for f in factors if f != factor and f in runs.columns]
    return others + [c for c in PAIRING_CONTEXT if c in runs.columns]


def paired_differences(
    runs: pd.DataFrame,
    factor: str,
    level: str,
    reference: str,
    metric: str = "final_val_loss",
    factors: Sequence[str] = FACTORS,
) -> pd.DataFrame:
    """Matched pairs of runs that differ only in ``factor``: one row per pair, with ``diff``.

    Runs are matched on every other factor, the model preset and the seed. Should a cell hold
    several runs (a repeated configuration), their mean is used so each pair counts once.
    """
    keys = _context_columns(runs, factor, factors)
    subset = runs[runs[factor].isin([level, reference])].dropna(subset=[metric])
    if subset.empty:
        return pd.DataFrame(columns=[*keys, level, reference, "diff"])
    # dropna=False keeps groups where a context column is missing (e.g. an untagged ffn).
    cells = subset.groupby([*keys, factor], dropna=False)[metric].mean().unstack(factor)
    if level not in cells.columns or reference not in cells.columns:
        return pd.DataFrame(columns=[*keys, level, reference, "diff"])
    pairs = cells[[level, reference]].dropna().reset_index()
    pairs["diff"] = pairs[level] - pairs[reference]
    return pairs


@dataclass(frozen=True)
class Effect:
    """Effect on ``metric`` of choosing ``level`` instead of ``reference`` (level − reference)."""

    factor: str
    level: str
    reference: str
    interval: Interval
    method: str  # "paired" or "unpaired (Welch)"
    n_pairs: int


def factor_effect(
    runs: pd.DataFrame,
    factor: str,
    level: str,
    reference: str,
    metric: str = "final_val_loss",
    level_ci: float = 0.95,
    factors: Sequence[str] = FACTORS,
) -> Effect:
    """Paired effect when matched runs exist, otherwise an unpaired Welch interval."""
    pairs = paired_differences(runs, factor, level, reference, metric, factors)
    if len(pairs) > 0:
        interval = mean_ci(pairs["diff"].astype(float), level_ci)
        return Effect(factor, level, reference, interval, "paired", len(pairs))
    # No design match (e.g. a hand-assembled set of runs): compare the level means directly.
    a = runs.loc[runs[factor] == level, metric].astype(float)
    b = runs.loc[runs[factor] == reference, metric].astype(float)
    return Effect(factor, level, reference, welch_ci(a, b, level_ci), "unpaired (Welch)", 0)


def level_means(runs: pd.DataFrame, factor: str, metric: str = "final_val_loss") -> pd.Series:
    """Mean of ``metric`` per level (over all other factors and seeds), ascending."""
    return runs.groupby(factor)[metric].mean().sort_values()


def main_effects(
    runs: pd.DataFrame,
    metric: str = "final_val_loss",
    factors: Sequence[str] | None = None,
    level_ci: float = 0.95,
) -> pd.DataFrame:
    """Marginal mean of ``metric`` per factor level, averaged over the other factors.

    Within each seed the runs at a level are averaged first, so the interval is over seeds
    (the replicate unit) rather than over the spread the other factors induce.
    """
    factors = varied_factors(runs) if factors is None else list(factors)
    rows: list[dict[str, object]] = []
    replicate = "seed" if "seed" in runs.columns else None
    for factor in factors:
        for level in factor_levels(runs, factor):
            at_level = runs[runs[factor] == level]
            per_seed = at_level.groupby(replicate)[metric].mean() if replicate else at_level[metric]
            interval = mean_ci(per_seed.astype(float), level_ci)
            rows.append(
                {
                    "factor": factor,
                    "level": level,
                    "mean": interval.mean,
                    "ci_low": interval.low,
                    "ci_high": interval.high,
                    "n_seeds": interval.n,
                    "n_runs": len(at_level),
                }
            )
    return pd.DataFrame(rows)


def interaction_table(
    runs: pd.DataFrame, row_factor: str, col_factor: str, metric: str = "final_val_loss"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two-factor cell means and their interaction residuals.

    The residual of a cell is ``cell − row mean − column mean + grand mean``: zero everywhere
    when the two factors' effects simply add up, so its size measures the interaction.
    """
    cells = runs.groupby([row_factor, col_factor])[metric].mean().unstack(col_factor)
    grand = float(np.nanmean(cells.to_numpy()))
    residual = cells.sub(cells.mean(axis=1), axis=0).sub(cells.mean(axis=0), axis=1).add(grand)
    return cells, residual


# --------------------------------------------------------------------------------------------
# Verdicts
# --------------------------------------------------------------------------------------------


@dataclass
class FactorVerdict:
    """What the runs say about one factor: the better level and how sure we are."""

    factor: str
    levels: list[str]
    better_level: str
    #: One effect per other level, each ``metric(better) − metric(other)`` (negative = better).
    comparisons: list[Effect] = field(default_factory=list)

    @property
    def ci_status(self) -> str:
        """``yes`` if every comparison's CI excludes zero in favour of the better level."""
        wins = [e.interval.has_ci and e.interval.high < 0 for e in self.comparisons]
        if all(wins):
            return "yes"
        return "partly" if any(wins) else "no"

    @property
    def gpt5_choice(self) -> str:
        """The level these runs support, derived only from the intervals above."""
        if any(not e.interval.has_ci for e in self.comparisons):
            return f"inconclusive: too few matched seeds for a CI (leans {self.better_level})"
        status = self.ci_status
        if status == "yes":
            return f"{self.better_level} (95% CI excludes 0 against every alternative)"
        if status == "no":
            return f"inconclusive at this scale (leans {self.better_level}; CI includes 0)"
        ties = [e.reference for e in self.comparisons if not e.interval.high < 0]
        beaten = [e.reference for e in self.comparisons if e.interval.high < 0]
        return (
            f"{' or '.join([self.better_level, *ties])} ({self.better_level} beats "
            f"{', '.join(beaten)}; vs {', '.join(ties)} inconclusive)"
        )


def factor_verdicts(
    runs: pd.DataFrame,
    metric: str = "final_val_loss",
    factors: Sequence[str] | None = None,
    level_ci: float = 0.95,
) -> list[FactorVerdict]:
    """One verdict per varied factor: best level by mean, compared with each other level."""
    factors = varied_factors(runs) if factors is None else list(factors)
    verdicts: list[FactorVerdict] = []
    for factor in factors:
        means = level_means(runs, factor, metric)
        best = str(means.index[0])
        comparisons = [
            factor_effect(runs, factor, best, str(other), metric, level_ci)
            for other in means.index[1:]
        ]
        verdicts.append(FactorVerdict(factor, factor_levels(runs, factor), best, comparisons))
    return verdicts


def verdicts_frame(verdicts: Sequence[FactorVerdict]) -> pd.DataFrame:
    """One row per factor with the comparisons formatted as text (for tables and notebooks)."""
    rows = []
    for v in verdicts:
        rows.append(
            {
                "factor": v.factor,
                "levels": ", ".join(v.levels),
                "better_level": v.better_level,
                "effect_vs_others": "; ".join(
                    f"vs {e.reference}: {e.interval.format(signed=True)}" for e in v.comparisons
                ),
                "n_pairs": ", ".join(str(e.n_pairs or e.interval.n) for e in v.comparisons),
                "method": ", ".join(sorted({e.method for e in v.comparisons})),
                "ci_excludes_zero": v.ci_status,
                "gpt5_choice": v.gpt5_choice,
            }
        )
    return pd.DataFrame(rows)


def comparisons_frame(verdicts: Sequence[FactorVerdict]) -> pd.DataFrame:
    """One numeric row per (factor, better level vs other level) comparison."""
    rows = []
    for v in verdicts:
        for e in v.comparisons:
            rows.append(
                {
                    "factor": v.factor,
                    "better_level": e.level,
                    "other_level": e.reference,
                    "effect": e.interval.mean,
                    "ci_low": e.interval.low,
                    "ci_high": e.interval.high,
                    "n": e.interval.n,
                    "method": e.method,
                    "ci_excludes_zero": e.interval.excludes_zero,
                }
            )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# Learning-rate sweeps and per-arm summaries
# --------------------------------------------------------------------------------------------


@dataclass
class LrSelection:
    """Runs kept after picking each arm's best ``lr_scale``, and the table behind the choice."""

    runs: pd.DataFrame
    #: One row per (arm, lr_scale): mean metric over seeds, number of seeds, ``chosen`` flag.
    table: pd.DataFrame
    swept: bool


def select_best_lr(
    runs: pd.DataFrame, metric: str = "final_val_loss", arm_column: str = "arm"
) -> LrSelection:
    """Keep, per arm, the runs at the ``lr_scale`` with the lowest seed-averaged ``metric``.

    Comparing every arm at its own best learning rate stops an optimizer or architecture from
    looking worse only because the shared default LR suits it less. Without an LR sweep (one
    ``lr_scale`` per arm) the runs are returned unchanged.
    """
    if "lr_scale" not in runs.columns or runs.empty:
        return LrSelection(runs, pd.DataFrame(), swept=False)
    table = (
        runs.groupby([arm_column, "lr_scale"], dropna=False)[metric]
        .agg(mean="mean", n_seeds="count")
        .reset_index()
    )
    swept = bool(table.groupby(arm_column)["lr_scale"].nunique().max() > 1)
    # idxmin ignores NaN means, so an lr_scale whose runs all lack the metric is never chosen.
    best_index = table.dropna(subset=["mean"]).groupby(arm_column)["mean"].idxmin()
    table["chosen"] = table.index.isin(best_index.to_numpy())
    if not swept:
        return LrSelection(runs, table, swept=False)
    chosen = table.loc[table["chosen"], [arm_column, "lr_scale"]]
    kept = runs.merge(chosen, on=[arm_column, "lr_scale"], how="inner")
    return LrSelection(kept, table, swept=True)


def arm_summary(runs: pd.DataFrame, level_ci: float = 0.95) -> pd.DataFrame:
    """One row per arm: size, compute, KV cache and final metrics with CIs over seeds."""
    rows = []
    for arm, group in runs.groupby("arm", sort=False):
        loss = mean_ci(group["final_val_loss"].astype(float), level_ci)
        # Perplexity is exp(loss): its interval is the loss interval mapped through exp (a
        # geometric mean), which stays positive, unlike a t-interval on perplexities themselves.
        ppl_mean, ppl_low, ppl_high = (
            math.exp(loss.mean),
            math.exp(loss.low) if loss.has_ci else math.nan,
            math.exp(loss.high) if loss.has_ci else math.nan,
        )
        row: dict[str, object] = {"arm": arm}
        for factor in FACTORS:
            if factor in group.columns:
                row[factor] = group[factor].iloc[0]
        row.update(
            {
                "n_seeds": len(group),
                "lr_scale": _single_or_list(group.get("lr_scale")),
                "n_params": _mean_or_nan(group, "n_params"),
                "flops_per_token": _mean_or_nan(group, "flops_per_token"),
                "tokens_seen": _mean_or_nan(group, "tokens_seen"),
                "train_flops": _mean_or_nan(group, "train_flops"),
                "kv_cache_bytes_per_token": _mean_or_nan(group, "kv_cache_bytes_per_token"),
                "wall_time_s": _mean_or_nan(group, "wall_time_s"),
                "final_val_loss": loss.mean,
                "final_val_loss_ci_low": loss.low,
                "final_val_loss_ci_high": loss.high,
                "final_val_perplexity": ppl_mean,
                "final_val_perplexity_ci_low": ppl_low,
                "final_val_perplexity_ci_high": ppl_high,
                "best_val_loss": _mean_or_nan(group, "best_val_loss"),
            }
        )
        rows.append(row)
    return pd.DataFrame(rows).sort_values("final_val_loss", kind="stable").reset_index(drop=True)


def _mean_or_nan(frame: pd.DataFrame, column: str) -> float:
    if column not in frame.columns:
        return math.nan
    values = pd.to_numeric(frame[column], errors="coerce")
    return float(values.mean()) if values.notna().any() else math.nan


def _single_or_list(values: pd.Series | None) -> object:
    if values is None:
        return math.nan
    unique = sorted(values.dropna().unique())
    if len(unique) == 1:
        return unique[0]
    return ", ".join(f"{v:g}" for v in unique) if unique else math.nan


def relative_spread(values: pd.Series) -> float:
    """(max − min) / min of positive values: how far arms are from being matched."""
    data = pd.to_numeric(values, errors="coerce").dropna()
    data = data[data > 0]
    if data.empty:
        return math.nan
    return float((data.max() - data.min()) / data.min())
