"""The linear model behind the verdict: main effects + two-way interactions over the factorial.

Model (one observation per run, the response is its validation loss)::

    loss = grand mean + Σ main effects + Σ two-way interactions + seed block + error

* **Coding.** Every factor is *sum-coded* (deviation coding: a factor's effects sum to zero over
  its levels, and so do the interaction terms over each factor's levels). The intercept is then
  the unweighted mean over all cells, and averaging the model's prediction over the levels of
  the other factors gives a level's *marginal mean*. Every contrast below is built that way
  (``L·β`` with ``L`` a difference of averaged design rows), so the coding itself never changes
  a reported number; it only makes the coefficients readable.
* **Seeds.** Runs with the same seed share the training-data order (the block loader's
  permutation depends on the seed alone) and the seed-derived initialisation, so the seed enters
  as a block (a sum-coded fixed effect). Every comparison is then made *within* seeds, the
  generalisation of a paired test to a factorial; the observation is a run, the replicate is a
  seed. Seeds are not independent pairs across contexts: the old per-context pairing counted
  16 "pairs" from 2 seeds.
* **Unequal variance.** Optimizers differ in seed-to-seed noise (AdamW runs scatter far more
  than Muon runs at a shared LR), so when the optimizer varies the model is fitted by two-step
  feasible weighted least squares: an OLS fit gives each optimizer's residual variance
  ``σ²_g = RSS_g / (n_g · ν / n)`` (ν residual df, so the variances are unbiased on average),
  and the model is refitted by WLS with weights ``1/σ²_g``; standard errors come from the WLS
  fit with its scale re-estimated (Greene, *Econometric Analysis*, §9, groupwise
  heteroscedasticity). A heteroscedasticity-robust (HC3) covariance was not used: it divides
  each residual by ``1 − h_ii``, which nears zero in the nearly saturated factorials that two
  seeds give.
* **Estimability.** Main effects are always in. A two-way interaction joins only when every
  combination of its two factors' levels was run, the design stays of full rank and at least
  :data:`MIN_RESIDUAL_DF` residual degrees of freedom remain; then the seed block, on the same
  terms. What could not be included is listed in ``omitted``.

Fitting uses ``statsmodels`` (``OLS``/``WLS``, ``t_test`` and ``f_test`` for contrasts).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import statsmodels.api as sm
from statsmodels.regression.linear_model import RegressionResultsWrapper

from gpt5_ablate.analysis.stats import factor_levels

#: The fit keeps at least this many residual degrees of freedom when adding optional terms.
MIN_RESIDUAL_DF = 2
#: The factor whose levels may have different residual variances.
VARIANCE_FACTOR = "optimizer"
#: Smallest group variance, relative to the largest, so exact fits cannot get infinite weight.
VARIANCE_FLOOR = 1e-6


def sum_coding(levels: Sequence[str]) -> dict[str, np.ndarray]:
    """``level -> k−1 codes``: level i < k−1 has a 1 in column i; the last level has all −1."""
    k = len(levels)
    codes = {}
    for i, level in enumerate(levels):
        row = np.zeros(k - 1)
        if i < k - 1:
            row[i] = 1.0
        else:
            row[:] = -1.0
        codes[level] = row
    return codes


@dataclass(frozen=True)
class Estimate:
    """A linear contrast ``L·β`` with its standard error, residual df and two-sided p-value."""

    estimate: float
    se: float
    df: float
    p_value: float

    def ci(self, level: float = 0.95) -> tuple[float, float]:
        from scipy import stats as scipy_stats

        if math.isnan(self.se) or self.df <= 0:
            return (math.nan, math.nan)
        half = float(scipy_stats.t.ppf(0.5 + level / 2.0, self.df)) * self.se
        return (self.estimate - half, self.estimate + half)


@dataclass
class DesignFit:
    """A fitted factorial model (``result`` is None when nothing could be estimated)."""

    factors: list[str]
    levels: dict[str, list[str]]
    interactions: list[tuple[str, str]]
    seed_levels: list[str]
    n_obs: int
    result: RegressionResultsWrapper | None
    #: ``"OLS"`` or ``"WLS (variance per optimizer)"``.
    method: str
    #: Residual variance per optimizer level (WLS only).
    group_variance: dict[str, float] = field(default_factory=dict)
    omitted: list[str] = field(default_factory=list)
    reason: str = ""
    column_names: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.result is not None

    @property
    def df_resid(self) -> float:
        return float(self.result.df_resid) if self.result is not None else 0.0

    @property
    def residual_sd(self) -> float:
        """Residual standard deviation (for WLS, of the weighted residuals)."""
        return math.sqrt(float(self.result.scale)) if self.result is not None else math.nan

    # -- design rows ------------------------------------------------------------------------

    def row(self, cell: Mapping[str, str], seed: str | None = None) -> np.ndarray:
        """The design row of one cell (every factor given); ``seed=None`` averages the seeds."""
        codes = {f: sum_coding(self.levels[f])[cell[f]] for f in self.factors}
        parts = [np.ones(1)]
        parts += [codes[f] for f in self.factors]
        parts += [np.outer(codes[a], codes[b]).ravel() for a, b in self.interactions]
        if len(self.seed_levels) > 1:
            seed_codes = sum_coding(self.seed_levels)
            parts.append(seed_codes[seed] if seed is not None else np.zeros(len(seed_codes) - 1))
        return np.concatenate(parts)

    def averaged_row(self, fixed: Mapping[str, str]) -> np.ndarray:
        """Design row averaged, with equal weights, over every level of the factors not fixed."""
        free = [f for f in self.factors if f not in fixed]
        rows = [
            self.row({**fixed, **dict(zip(free, combo, strict=True))})
            for combo in itertools.product(*(self.levels[f] for f in free))
        ]
        return np.mean(rows, axis=0)

    # -- inference --------------------------------------------------------------------------

    def estimate(self, vector: np.ndarray) -> Estimate:
        if self.result is None:
            return Estimate(math.nan, math.nan, 0.0, math.nan)
        test = self.result.t_test(vector.reshape(1, -1))
        return Estimate(
            float(np.squeeze(test.effect)),
            float(np.squeeze(test.sd)),
            float(test.df_denom),
            float(np.squeeze(test.pvalue)),
        )

    def marginal_mean(self, factor: str, level: str, condition: Mapping[str, str] = ()) -> Estimate:
        return self.estimate(self.averaged_row({**dict(condition), factor: level}))

    def contrast_vector(
        self, factor: str, level: str, reference: str, condition: Mapping[str, str] = ()
    ) -> np.ndarray:
        fixed = dict(condition)
        return self.averaged_row({**fixed, factor: level}) - self.averaged_row(
            {**fixed, factor: reference}
        )

    def contrast(
        self, factor: str, level: str, reference: str, condition: Mapping[str, str] = ()
    ) -> Estimate:
        """``mean(level) − mean(reference)``, averaged over the factors not in ``condition``."""
        return self.estimate(self.contrast_vector(factor, level, reference, condition))

    def interaction_test(self, a: str, b: str) -> tuple[float, float, float]:
        """Joint Wald F-test that every ``a × b`` interaction term is 0: ``(F, df_num, p)``."""
        if self.result is None or (a, b) not in self.interactions:
            return (math.nan, math.nan, math.nan)
        start = 1 + sum(len(self.levels[f]) - 1 for f in self.factors)
        for pair in self.interactions:
            width = (len(self.levels[pair[0]]) - 1) * (len(self.levels[pair[1]]) - 1)
            if pair == (a, b):
                restriction = np.zeros((width, len(self.column_names)))
                restriction[:, start : start + width] = np.eye(width)
                test = self.result.f_test(restriction)
                return (float(np.squeeze(test.fvalue)), float(width), float(test.pvalue))
            start += width
        return (math.nan, math.nan, math.nan)  # pragma: no cover - pair was found above

    def marginal_table(self, level: float = 0.95) -> pd.DataFrame:
        """``factor, level, mean, ci_low, ci_high`` (unadjusted) for the main-effects figure."""
        rows = []
        for factor in self.factors:
            for value in self.levels[factor]:
                mean = self.marginal_mean(factor, value)
                low, high = mean.ci(level)
                rows.append(
                    {
                        "factor": factor,
                        "level": value,
                        "mean": mean.estimate,
                        "ci_low": low,
                        "ci_high": high,
                    }
                )
        return pd.DataFrame(rows, columns=["factor", "level", "mean", "ci_low", "ci_high"])

    def has_interaction(self, a: str, b: str) -> bool:
        return (a, b) in self.interactions or (b, a) in self.interactions

    def ordered_pair(self, a: str, b: str) -> tuple[str, str]:
        return (a, b) if (a, b) in self.interactions else (b, a)


def _columns(
    factors: Sequence[str],
    levels: Mapping[str, Sequence[str]],
    interactions: Sequence[tuple[str, str]],
    seed_levels: Sequence[str],
) -> list[str]:
    names = ["Intercept"]
    for f in factors:
        names += [f"{f}[{lv}]" for lv in levels[f][:-1]]
    for a, b in interactions:
        names += [f"{a}[{x}]:{b}[{y}]" for x in levels[a][:-1] for y in levels[b][:-1]]
    if len(seed_levels) > 1:
        names += [f"seed[{s}]" for s in seed_levels[:-1]]
    return names


def _matrix(fit: DesignFit, frame: pd.DataFrame) -> np.ndarray:
    seeds = frame["seed"].astype(str) if "seed" in frame else None
    return np.vstack(
        [
            fit.row(
                {f: str(row[f]) for f in fit.factors},
                seed=str(seeds.loc[i]) if seeds is not None and len(fit.seed_levels) > 1 else None,
            )
            for i, row in frame.iterrows()
        ]
    )


def _group_variances(
    frame: pd.DataFrame,
    response: str,
    factors: Sequence[str],
    seeds: Sequence[str],
    variance_factor: str,
    ols: RegressionResultsWrapper,
) -> dict[str, float]:
    """Residual variance per level of ``variance_factor``, from replication error.

    Each level's runs get their own saturated fit (one mean per arm, plus a seed block), whose
    residuals hold that level's seed-to-seed noise only: ``σ²_g = RSS_g / df_g``. The main
    model's residuals would also hold the omitted higher-order interactions and a seed block
    shared by all runs, both of which spread the noisier optimizer's noise into the other's
    residuals. When some level has too few runs for its own fit, the main model's residuals
    are used instead: ``RSS_g / (n_g · ν / n)``, unbiased on average over the groups.
    """
    groups = frame[variance_factor].astype(str)
    variance: dict[str, float] = {}
    for level in sorted(groups.unique()):
        part = frame[(groups == level).to_numpy()]
        arms = part[list(factors)].astype(str).agg("|".join, axis=1)
        columns = [(arms == arm).to_numpy(dtype=float) for arm in sorted(arms.unique())]
        part_seeds = sorted(part["seed"].astype(str).unique()) if seeds else []
        if len(part_seeds) > 1:
            codes = sum_coding(part_seeds)
            columns += list(np.vstack([codes[str(v)] for v in part["seed"]]).T)
        x = np.column_stack(columns)
        df = len(part) - np.linalg.matrix_rank(x)
        if df < 1:
            break
        pure = sm.OLS(part[response].to_numpy(dtype=float), x).fit()
        variance[level] = float(np.sum(np.asarray(pure.resid) ** 2) / df)
    else:
        return variance
    resid, share = np.asarray(ols.resid), float(ols.df_resid) / len(frame)
    labels = groups.to_numpy()
    return {
        g: float(np.sum(resid[labels == g] ** 2) / (share * np.sum(labels == g)))
        for g in sorted(set(labels))
    }


def fit_design(
    runs: pd.DataFrame,
    response: str,
    factors: Sequence[str],
    variance_factor: str = VARIANCE_FACTOR,
) -> DesignFit:
    """Fit main effects, the estimable two-way interactions and the seed block (see module doc)."""
    frame = runs.dropna(subset=[response, *factors]).reset_index(drop=True)
    factors = [f for f in factors if frame[f].nunique() > 1]
    levels = {f: factor_levels(frame, f) for f in factors}
    seed_levels = sorted(frame["seed"].astype(str).unique()) if "seed" in frame else []
    fit = DesignFit(factors, levels, [], [], len(frame), None, "OLS")
    y = frame[response].to_numpy(dtype=float)

    def attempt(interactions: list[tuple[str, str]], seeds: list[str]) -> np.ndarray | None:
        fit.interactions, fit.seed_levels = interactions, seeds
        x = _matrix(fit, frame)
        full_rank = np.linalg.matrix_rank(x) == x.shape[1]
        return x if full_rank and len(frame) - x.shape[1] >= MIN_RESIDUAL_DF else None

    if not factors:
        fit.reason = "no factor varies"
        return fit
    x = attempt([], [])
    if x is None:
        fit.reason = (
            f"{len(frame)} runs cannot separate the main effects with at least "
            f"{MIN_RESIDUAL_DF} residual degrees of freedom (too few seeds or a confounded design); "
            "with one seed per arm, run the same sweep with seed=0,1 (finished runs are not "
            "trained again) and report again"
        )
        return fit
    interactions: list[tuple[str, str]] = []
    for a, b in itertools.combinations(factors, 2):
        observed = frame.groupby([a, b]).size()
        if len(observed) < len(levels[a]) * len(levels[b]):
            fit.omitted.append(f"{a} × {b} (not every level combination was run)")
        elif attempt([*interactions, (a, b)], []) is None:
            fit.omitted.append(f"{a} × {b} (too few runs to estimate it)")
        else:
            interactions.append((a, b))
    seeds = seed_levels if len(seed_levels) > 1 else []
    if seeds and attempt(interactions, seeds) is None:
        fit.omitted.append("seed block (too few runs, or seeds confounded with arms)")
        seeds = []
    x = attempt(interactions, seeds)
    assert x is not None  # every term kept above passed the same check
    fit.column_names = _columns(factors, levels, interactions, seeds)
    ols = sm.OLS(y, x).fit()
    fit.result = ols
    if variance_factor in factors:
        variance = _group_variances(frame, response, factors, seeds, variance_factor, ols)
        if max(variance.values()) <= 0:  # an exact fit: nothing to weight by
            return fit
        floor = VARIANCE_FLOOR * max(variance.values())
        variance = {g: max(v, floor) for g, v in variance.items()}
        groups = frame[variance_factor].astype(str)
        weights = groups.map(lambda g: 1.0 / variance[g]).to_numpy(dtype=float)
        fit.result = sm.WLS(y, x, weights=weights).fit()
        fit.method = f"WLS (residual variance per {variance_factor})"
        fit.group_variance = variance
    return fit
