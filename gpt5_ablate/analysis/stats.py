"""Descriptive statistics on the one-row-per-run table: intervals, pairs, arms, LR selection.

Everything here works on the table produced by :mod:`gpt5_ablate.analysis.load` (or any
DataFrame with the same columns), so it can be tested on hand-built tables. The inferential
statistics behind the verdict (the linear model, Holm, equivalence tests, power) live in
:mod:`~gpt5_ablate.analysis.design` and :mod:`~gpt5_ablate.analysis.verdict`.

Conventions:

* An *effect* of choosing level ``a`` over level ``b`` is ``metric(a) - metric(b)``; for a loss,
  negative means ``a`` is better.
* Intervals are two-sided Student-t intervals (quantiles from ``scipy.stats.t``).
* An arm's interval over seeds needs at least :data:`MIN_SEEDS_FOR_CI` seeds; with fewer, tables
  list the seeds' values instead of an interval (a t-interval on two values has t(0.975, 1) =
  12.7 and routinely spans impossible, negative losses).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from gpt5_ablate.factors import FACTORS as TRAINING_FACTORS

#: Factors added after the first runs were logged, with the level those runs implicitly used.
LEGACY_DEFAULTS: dict[str, str] = {"window": "all_full", "sinks": "none"}

#: The design factors the analysis knows: the training side's, plus the newer ones above
#: (absent on old runs, where they read as their default level).
FACTORS: tuple[str, ...] = tuple(TRAINING_FACTORS) + tuple(
    f for f in LEGACY_DEFAULTS if f not in TRAINING_FACTORS
)

#: Columns besides the factors that must match for two runs to count as a pair. ``model`` is
#: included so runs of different size presets are never compared as if they were replicates.
PAIRING_CONTEXT: tuple[str, ...] = ("model", "seed")

#: Fewest seeds for which an arm's mean gets a t-interval.
MIN_SEEDS_FOR_CI = 3


def t_quantile(p: float, df: float) -> float:
    """Student-t quantile (``scipy.stats.t.ppf``)."""
    return float(scipy_stats.t.ppf(p, df))


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


def _clean(values: Iterable[float]) -> np.ndarray:
    data = np.asarray([v for v in values if v is not None], dtype=float)
    return data[~np.isnan(data)]


def mean_ci(values: Iterable[float], level: float = 0.95) -> Interval:
    """Mean and t-interval ``mean ± t_{(1+level)/2, n-1} · sd / sqrt(n)`` (sd with ddof=1)."""
    data = _clean(values)
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
    xa, xb = _clean(a), _clean(b)
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
    return Interval(diff, t_quantile(0.5 + level / 2.0, df) * se, n, sd=se, df=df, level=level)


# --------------------------------------------------------------------------------------------
# Factors, pairs and marginal means
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
    empty = pd.DataFrame(columns=[*keys, level, reference, "diff"])
    if subset.empty:
        return empty
    # dropna=False keeps groups where a context column is missing (e.g. an untagged ffn).
    cells = subset.groupby([*keys, factor], dropna=False)[metric].mean().unstack(factor)
    if level not in cells.columns or reference not in cells.columns:
        return empty
    pairs = cells[[level, reference]].dropna().reset_index()
    pairs["diff"] = pairs[level] - pairs[reference]
    return pairs


def main_effects(
    runs: pd.DataFrame,
    metric: str = "final_val_loss",
    factors: Sequence[str] | None = None,
    level_ci: float = 0.95,
) -> pd.DataFrame:
    """Marginal mean of ``metric`` per factor level, averaged over the other factors and seeds.

    Within each seed the runs at a level are averaged first, so an interval (only with at least
    :data:`MIN_SEEDS_FOR_CI` seeds) is over seeds, the replicate unit. The report's model-based
    marginal means (:mod:`~gpt5_ablate.analysis.design`) replace this where a model was fitted.
    """
    factors = varied_factors(runs) if factors is None else list(factors)
    rows: list[dict[str, object]] = []
    for factor in factors:
        for level in factor_levels(runs, factor):
            at_level = runs[runs[factor] == level]
            per_seed = (
                at_level.groupby("seed")[metric].mean() if "seed" in runs else at_level[metric]
            )
            interval = mean_ci(per_seed.astype(float), level_ci)
            wide = interval.n < MIN_SEEDS_FOR_CI
            rows.append(
                {
                    "factor": factor,
                    "level": level,
                    "mean": interval.mean,
                    "ci_low": math.nan if wide else interval.low,
                    "ci_high": math.nan if wide else interval.high,
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


def arm_summary(runs: pd.DataFrame, metric: str = "loss", level_ci: float = 0.95) -> pd.DataFrame:
    """One row per arm: size, compute, KV cache and ``metric`` over seeds (columns ``loss*``).

    The loss interval needs :data:`MIN_SEEDS_FOR_CI` seeds (else NaN, and ``seed_values`` lists
    the values); its lower end is clipped at 0, as a cross-entropy cannot be negative.
    Perplexity is exp(loss): its interval is the loss interval mapped through exp, which stays
    positive, unlike a t-interval on perplexities themselves.
    """
    rows = []
    for arm, group in runs.groupby("arm", sort=False):
        values = group[metric].astype(float)
        loss = mean_ci(values, level_ci)
        has_ci = loss.has_ci and loss.n >= MIN_SEEDS_FOR_CI
        low = max(loss.low, 0.0) if has_ci else math.nan
        high = loss.high if has_ci else math.nan
        row: dict[str, object] = {"arm": arm}
        for factor in FACTORS:
            if factor in group.columns:
                row[factor] = group[factor].iloc[0]
        row.update(
            {
                "model": group["model"].iloc[0] if "model" in group else None,
                "n_seeds": int(values.notna().sum()),
                "seed_values": ", ".join(f"{v:.3f}" for v in values.dropna()),
                # exp of each unrounded seed loss (exp of the rounded text would disagree).
                "seed_perplexities": ", ".join(f"{math.exp(v):.2f}" for v in values.dropna()),
                "lr_scale": _single_or_list(group.get("lr_scale")),
                "n_params": _mean_or_nan(group, "n_params"),
                "n_params_non_embedding": _mean_or_nan(group, "n_params_non_embedding"),
                "n_params_active": _mean_or_nan(group, "n_params_active"),
                "n_params_non_embedding_active": _mean_or_nan(
                    group, "n_params_non_embedding_active"
                ),
                "flops_per_token": _mean_or_nan(group, "flops_per_token"),
                "tokens_seen": _mean_or_nan(group, "tokens_seen"),
                "train_flops": _mean_or_nan(group, "train_flops"),
                "kv_cache_bytes_per_token": _mean_or_nan(group, "kv_cache_bytes_per_token"),
                "wall_time_s": _mean_or_nan(group, "wall_time_s"),
                "unigram_val_loss": _mean_or_nan(group, "unigram_val_loss"),
                "loss": loss.mean,
                "loss_ci_low": low,
                "loss_ci_high": high,
                "perplexity": math.exp(loss.mean) if loss.n else math.nan,
                "perplexity_ci_low": math.exp(low) if has_ci else math.nan,
                "perplexity_ci_high": math.exp(high) if has_ci else math.nan,
                "best_val_loss": _mean_or_nan(group, "best_val_loss"),
            }
        )
        rows.append(row)
    if not rows:
        return pd.DataFrame(columns=["arm", "loss"])
    return pd.DataFrame(rows).sort_values("loss", kind="stable").reset_index(drop=True)


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
