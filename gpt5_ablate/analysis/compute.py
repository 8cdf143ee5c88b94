"""Compute multiplier: how much more training compute the worse arm needs to match the better.

Across model sizes each arm's loss is fitted as a line in log-compute,
``loss = a + b·log10(C)`` (C = training FLOPs = ``flops_per_token × tokens``, from the
parameter count). The worse arm reaches the better arm's loss at compute ``C`` when
``a_w + b_w·log10(C') = a_b + b_b·log10(C)``, so the multiplier is

    m(C) = C' / C = 10 ** ((a_b − a_w + (b_b − b_w)·log10 C) / b_w)

evaluated at a reference compute (the geometric mean of the compute values measured); with
equal slopes it is the same at every C. The interval is a percentile bootstrap that resamples
runs within each (arm, compute) cell and refits both lines.

:func:`size_multipliers` gives the multiplier at each size of a ladder instead, with the trend of
the multiplier and of the loss difference across sizes, extrapolated; :func:`saturating_fit`
tries ``loss = E + A·C^−alpha`` where enough sizes determine it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

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


# --------------------------------------------------------------------------------------------
# Per-size multipliers and their trend (the scale ladder)
# --------------------------------------------------------------------------------------------

#: Training compute the ladder's trends are extrapolated to (FLOPs).
EXTRAPOLATION_FLOPS: tuple[float, ...] = (1e24, 1e25, 1e26)
#: Fewest sizes for a trend (a line through two points has no error to judge it by).
MIN_SIZES_FOR_TREND = 3


@dataclass(frozen=True)
class Estimate:
    """A point estimate and its percentile-bootstrap interval (NaN where draws were too few)."""

    value: float
    low: float = math.nan
    high: float = math.nan


@dataclass
class SizeMultipliers:
    """How much more compute ``baseline`` needs to reach ``arm``'s loss, size by size.

    At size ``i`` (compute ``C_i``) the arm's mean loss ``L_i`` is located on the baseline's
    fitted line ``a + b·log10 C``: the baseline reaches it at ``log10 C' = (L_i − a) / b``, so the
    multiplier is ``C' / C_i``. The trend is the least-squares line of ``log10 m_i`` on
    ``log10 C_i``, and of the loss difference ``arm − baseline`` on ``log10 C_i``.
    """

    arm: str
    baseline: str
    sizes: list[str]
    log_c: list[float]
    fits: dict[str, tuple[float, float]]  # arm level -> (intercept, slope per decade)
    multipliers: list[Estimate]
    #: d log10(multiplier) / d log10(C), and the multiplier extrapolated to each compute.
    trend: Estimate | None
    extrapolated: dict[float, Estimate]
    #: d (arm − baseline loss) / d log10(C), and the difference extrapolated.
    diff_trend: Estimate | None
    diff_extrapolated: dict[float, Estimate]
    no_trend: str | None  # why no trend was fitted (None: one was)
    #: Bootstrap draws of (intercept, slope) of the log-multiplier line, for bands.
    trend_draws: np.ndarray = field(default_factory=lambda: np.empty((0, 2)))
    #: Bootstrap draws of every size's log10 multiplier (draws x sizes), for contrasts.
    log_multiplier_draws: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))


def percentile_interval(values: np.ndarray, n_resamples: int) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if len(finite) < max(20, n_resamples // 2):
        return math.nan, math.nan
    return float(np.percentile(finite, 2.5)), float(np.percentile(finite, 97.5))


def _ladder_point(
    means: dict[str, np.ndarray],
    counts: dict[str, np.ndarray],
    log_c: np.ndarray,
    arm: str,
    baseline: str,
) -> dict[str, np.ndarray | tuple[float, float]]:
    """Every ladder quantity from per-(level, size) mean losses (fits weighted by seeds, which
    is least squares on the seeds' own values)."""
    fits = {}
    for level in (arm, baseline):
        slope, intercept = np.polyfit(log_c, means[level], 1, w=np.sqrt(counts[level]))
        fits[level] = (float(intercept), float(slope))
    diff = means[arm] - means[baseline]
    a_w, b_w = fits[baseline]
    log_m = (means[arm] - a_w) / b_w - log_c if b_w < 0 else np.full(len(log_c), np.nan)
    trend = np.full(2, np.nan)
    if len(log_c) >= MIN_SIZES_FOR_TREND and np.isfinite(log_m).all():
        trend = np.polyfit(log_c, log_m, 1)  # (slope, intercept)
    diff_line = np.polyfit(log_c, diff, 1) if len(log_c) >= MIN_SIZES_FOR_TREND else trend * np.nan
    return {"fits_arm": fits[arm], "fits_base": fits[baseline], "log_m": log_m,
            "trend": trend, "diff_line": diff_line}  # fmt: skip


def pooled_sd(cells: list[np.ndarray]) -> tuple[float, int]:
    """Seed-to-seed standard deviation pooled over a level's sizes, and its degrees of freedom."""
    df = sum(len(v) - 1 for v in cells)
    if df < 1:
        return math.nan, 0
    return math.sqrt(sum(float(((v - v.mean()) ** 2).sum()) for v in cells) / df), df


def redrawn_means(
    cells: dict[str, list[np.ndarray]], n_resamples: int, seed: int = 0
) -> list[dict[str, np.ndarray]]:
    """Parametric bootstrap draws of every cell's mean (``cells``: per level, one array of seed
    losses per size or budget): each draw redraws each mean from its level's seed-to-seed spread,
    pooled over cells. Empty when a level has no spread to pool (one seed per cell)."""
    means = {level: np.array([v.mean() for v in values]) for level, values in cells.items()}
    counts = {level: np.array([len(v) for v in values]) for level, values in cells.items()}
    noise = {level: pooled_sd(values) for level, values in cells.items()}
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_resamples if all(df for _, df in noise.values()) else 0):
        drawn = {}
        for level, (sd, df) in noise.items():
            # The seed noise itself is uncertain (few seeds): draw it from its chi-square law.
            sigma = sd * math.sqrt(df / rng.chisquare(df))
            drawn[level] = means[level] + rng.normal(0.0, sigma / np.sqrt(counts[level]))
        draws.append(drawn)
    return draws


def size_multipliers(
    runs: pd.DataFrame,
    column: str,
    arm: str,
    baseline: str,
    size: str = "size",
    loss: str = "loss",
    flops: str = "train_flops",
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    extrapolate_to: tuple[float, ...] = EXTRAPOLATION_FLOPS,
) -> SizeMultipliers | None:
    """Per-size multipliers of ``baseline`` against ``arm`` (levels of ``column``), their trend
    and its extrapolation; None when fewer than two sizes hold runs of both levels.

    Intervals are a parametric bootstrap over seeds: each draw replaces every (level, size)
    cell's mean by one drawn from its seeds' sampling distribution (the level's seed-to-seed
    standard deviation, pooled over sizes, itself drawn from its chi-square law) and recomputes
    everything. Resampling 3 seeds with replacement instead gives only 10 distinct resamples
    per cell and intervals that covered the truth ~78% of the time at a nominal 95% in a
    simulation of this ladder; this form keeps the Student-t width of a few seeds.
    """
    frame = runs[[size, column, loss, flops]].dropna()
    frame = frame[(frame[flops] > 0) & frame[column].isin([arm, baseline])]
    complete = frame.groupby(size)[column].nunique()
    frame = frame[frame[size].isin(complete[complete == 2].index)]
    compute = frame.groupby(size, sort=False)[flops].mean().sort_values()
    if len(compute) < 2:
        return None
    names, log_c = list(compute.index), np.log10(compute.to_numpy(dtype=float))
    cells = {
        level: [frame.loc[(frame[size] == s) & (frame[column] == level), loss].to_numpy(float)
                for s in names]
        for level in (arm, baseline)
    }  # fmt: skip
    means = {level: np.array([v.mean() for v in values]) for level, values in cells.items()}
    counts = {level: np.array([len(v) for v in values]) for level, values in cells.items()}
    point = _ladder_point(means, counts, log_c, arm, baseline)
    draws = [
        _ladder_point(drawn, counts, log_c, arm, baseline)
        for drawn in redrawn_means(cells, n_resamples, seed)
    ]
    if not draws:
        draws = [{k: np.full_like(np.asarray(v, float), np.nan) for k, v in point.items()}]
    log_m = np.array([d["log_m"] for d in draws])
    trend = np.array([d["trend"] for d in draws])
    diff_line = np.array([d["diff_line"] for d in draws])

    def estimate(value: float, samples: np.ndarray, log10: bool = False) -> Estimate:
        """``log10``: the samples are log10 multipliers, reported as multipliers."""
        low, high = percentile_interval(samples, n_resamples)
        if log10:
            return Estimate(float(10**value), float(10**low), float(10**high))
        return Estimate(float(value), float(low), float(high))

    multipliers = [
        estimate(float(point["log_m"][i]), log_m[:, i], log10=True) for i in range(len(names))
    ]
    slopes = {arm: point["fits_arm"][1], baseline: point["fits_base"][1]}
    no_trend = _no_trend_reason(len(names), slopes)
    fitted = no_trend is None and np.isfinite(point["trend"]).all()
    if no_trend is None and not fitted:
        no_trend = "a per-size multiplier could not be computed"
    extrapolated, diff_extrapolated = {}, {}
    for target in extrapolate_to if fitted else ():
        x = math.log10(target)
        slope, intercept = point["trend"]
        extrapolated[target] = estimate(
            slope * x + intercept, trend[:, 0] * x + trend[:, 1], log10=True
        )
        d_slope, d_intercept = point["diff_line"]
        diff_extrapolated[target] = estimate(
            d_slope * x + d_intercept, diff_line[:, 0] * x + diff_line[:, 1]
        )
    return SizeMultipliers(
        arm=arm,
        baseline=baseline,
        sizes=[str(n) for n in names],
        log_c=[float(c) for c in log_c],
        fits={arm: point["fits_arm"], baseline: point["fits_base"]},
        multipliers=multipliers,
        trend=estimate(float(point["trend"][0]), trend[:, 0]) if fitted else None,
        extrapolated=extrapolated,
        diff_trend=(
            estimate(float(point["diff_line"][0]), diff_line[:, 0])
            if len(names) >= MIN_SIZES_FOR_TREND
            else None
        ),
        diff_extrapolated=diff_extrapolated,
        no_trend=no_trend,
        trend_draws=trend[np.isfinite(trend).all(axis=1)][:, ::-1] if fitted else np.empty((0, 2)),
        log_multiplier_draws=log_m,
    )


def _no_trend_reason(n_sizes: int, slopes: dict[str, float]) -> str | None:
    if n_sizes < MIN_SIZES_FOR_TREND:
        return f"only {n_sizes} sizes; a trend needs at least {MIN_SIZES_FOR_TREND}"
    flat = [f"{level} ({slope:+.3g} per decade)" for level, slope in slopes.items() if slope >= 0]
    if flat:
        return (
            "the fitted loss does not fall with compute for " + ", ".join(flat) + ", so the "
            "curves are not in a scaling regime"
        )
    return None


@dataclass(frozen=True)
class SaturatingFit:
    """``loss = E + B·10^(−alpha·(log10 C − x0))``, i.e. ``E + A·C^−alpha`` with ``x0`` centring
    the compute for a well-conditioned fit; ``reason`` says why it is not usable (None: it is)."""

    e: float
    b: float
    alpha: float
    x0: float
    reason: str | None

    def log_c_at(self, loss: float) -> float:
        """log10 compute at which the fit reaches ``loss`` (NaN at or below its floor ``E``)."""
        if loss <= self.e:
            return math.nan
        return self.x0 - math.log10((loss - self.e) / self.b) / self.alpha


def saturating_fit(log_c: np.ndarray, loss: np.ndarray, max_rel_se: float = 0.5) -> SaturatingFit:
    """Fit the saturating form when it is well determined: more distinct sizes than its 3
    parameters, a converged fit with ``alpha > 0`` and ``0 < E < min(loss)``, and every
    parameter's standard error under ``max_rel_se`` of its value."""
    from scipy.optimize import curve_fit

    log_c, loss = np.asarray(log_c, float), np.asarray(loss, float)
    n_sizes = len(np.unique(log_c.round(6)))
    x0 = float(log_c.mean())
    if n_sizes < 4:
        return SaturatingFit(*(math.nan,) * 3, x0, f"{n_sizes} sizes for its 3 parameters")

    def model(x: np.ndarray, e: float, b: float, alpha: float) -> np.ndarray:
        return e + b * 10 ** (-alpha * (x - x0))

    start = (float(loss.min()) * 0.8, float(loss.mean() - loss.min() * 0.8), 0.2)
    try:
        params, cov = curve_fit(model, log_c, loss, p0=start, maxfev=20000)
    except (RuntimeError, ValueError) as error:
        return SaturatingFit(*(math.nan,) * 3, x0, f"the fit did not converge ({error})")
    e, b, alpha = (float(p) for p in params)
    se = np.sqrt(np.diag(cov)) if np.isfinite(cov).all() else np.full(3, np.inf)
    if not (alpha > 0 and 0 < e < loss.min() and b > 0):
        return SaturatingFit(e, b, alpha, x0, "fitted parameters outside their valid range")
    if np.any(se > max_rel_se * np.abs(params)):
        return SaturatingFit(e, b, alpha, x0, "parameters not determined (standard errors large)")
    return SaturatingFit(e, b, alpha, x0, None)
