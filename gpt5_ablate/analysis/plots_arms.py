"""Arm-level figures: final perplexity, main effects, interactions, KV cache vs loss.

Same conventions as :mod:`gpt5_ablate.analysis.plots`: intervals need
:data:`~gpt5_ablate.analysis.stats.MIN_SEEDS_FOR_CI` seeds (fewer: the seeds are drawn as
points), a loss interval never goes below 0, a perplexity interval is exp of the loss interval,
and axes spanning a decade are logarithmic.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, NullLocator

from gpt5_ablate.analysis.plots import (
    arm_colors,
    arm_order,
    compared_loss_label,
    save_figure,
    spans_decades,
    value_column,
)
from gpt5_ablate.analysis.stats import (
    MIN_SEEDS_FOR_CI,
    interaction_table,
    main_effects,
    mean_ci,
    varied_factors,
)

INTERACTION_SCALE_FLOOR = 1e-3  # nats/token


def _loss_interval(values: pd.Series) -> tuple[float, float, float, bool]:
    """``(mean, low, high, has_ci)`` with the low end clipped at 0."""
    interval = mean_ci(values.astype(float))
    if interval.has_ci and interval.n >= MIN_SEEDS_FOR_CI:
        return interval.mean, max(interval.low, 0.0), interval.high, True
    return interval.mean, math.nan, math.nan, False


def plot_final_perplexity(runs: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Final validation perplexity per arm: exp of the mean loss, with exp of the loss interval
    (from 3 seeds) or the seeds' own perplexities as points."""
    column = value_column(runs)
    order = arm_order(runs)
    colors = arm_colors(order)
    fig = Figure(figsize=(9, 1.2 + 0.42 * len(order)), layout="constrained")
    ax = fig.add_subplot()
    few_seeds = False
    for i, arm in enumerate(order):
        values = runs.loc[runs["arm"] == arm, column].astype(float).dropna()
        mean, low, high, has_ci = _loss_interval(values)
        center = math.exp(mean)
        y = len(order) - 1 - i  # best arm on top
        if has_ci:
            ax.errorbar(
                center,
                y,
                xerr=[[center - math.exp(low)], [math.exp(high) - center]],
                fmt="o",
                color=colors[arm],
                capsize=4,
            )
        else:
            few_seeds = True
            ax.plot(center, y, "o", color=colors[arm])
            ax.plot(np.exp(values), [y] * len(values), "|", color=colors[arm], markersize=10)
            ax.annotate(
                f"n={len(values)}: seeds shown, no CI",
                (center, y),
                xytext=(8, 4),
                textcoords="offset points",
                va="bottom",
                fontsize="x-small",
            )
    if spans_decades(np.exp(runs[column].astype(float))):
        ax.set_xscale("log")
    ax.set_yticks(range(len(order)), list(reversed(order)))
    ax.set_xlabel("Final perplexity (exp of the compared loss in nats/token; lower is better)")
    title = "Final perplexity per arm\n(exp of mean loss; 95% t-interval over seeds)"
    if few_seeds:
        title += f"\narms with fewer than {MIN_SEEDS_FOR_CI} seeds: no interval, ticks = seeds"
    ax.set_title(title, fontsize="medium")
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, out_dir, "final_perplexity")


def plot_main_effects(
    runs: pd.DataFrame, out_dir: str | Path, marginal: pd.DataFrame | None = None
) -> list[Path]:
    """Mean loss per level of each varied factor, averaged over the other factors.

    ``marginal`` (columns ``factor, level, mean, ci_low, ci_high``) supplies model-based
    marginal means and intervals; without it, seed-averaged means are drawn (intervals from
    3 seeds).
    """
    column = value_column(runs)
    factors = varied_factors(runs)
    effects = marginal if marginal is not None else main_effects(runs, column, factors)
    fig = Figure(figsize=(3.2 * max(len(factors), 1) + 1, 4), layout="constrained")
    axes = fig.subplots(1, max(len(factors), 1), sharey=True, squeeze=False)[0]
    for ax, factor in zip(axes, factors, strict=False):
        rows = effects[effects["factor"] == factor].sort_values("mean")
        x = np.arange(len(rows))
        low = np.maximum(rows["ci_low"].to_numpy(dtype=float), 0.0)
        high = rows["ci_high"].to_numpy(dtype=float)
        mean = rows["mean"].to_numpy(dtype=float)
        has_ci = ~np.isnan(high)
        ax.errorbar(
            x[has_ci],
            mean[has_ci],
            yerr=[mean[has_ci] - low[has_ci], high[has_ci] - mean[has_ci]],
            fmt="o",
            capsize=5,
            color="C0",
        )
        ax.plot(x[~has_ci], mean[~has_ci], "o", color="C0")
        ax.set_xticks(x, rows["level"].tolist())
        ax.set_xlim(-0.5, len(rows) - 0.5)
        ax.set_title(factor)
        ax.grid(axis="y", alpha=0.3)
    if not factors:
        axes[0].text(0.5, 0.5, "No factor varies", ha="center", va="center")
    label = compared_loss_label(runs)
    axes[0].set_ylabel(f"Mean {label[0].lower()}{label[1:]}")
    source = "linear-model marginal means" if marginal is not None else "seed-averaged means"
    drawn = bool(effects["ci_high"].notna().any()) if len(effects) else False
    bars = "error bars: 95% intervals, unadjusted" if drawn else "no intervals available"
    fig.suptitle(
        f"Main effects: loss per level, averaged over the other factors ({source})\n"
        f"({bars}; lower is better)"
    )
    return save_figure(fig, out_dir, "main_effects")


def plot_interactions(runs: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Heatmaps of two-factor interactions (one per pair of varied factors).

    Colour shows the interaction residual (cell − row mean − column mean + grand mean): zero
    when the two effects simply add. Each cell also prints the cell's mean loss. Returns no
    paths when fewer than two factors vary.
    """
    column = value_column(runs)
    pairs = list(itertools.combinations(varied_factors(runs), 2))
    if not pairs:
        return []
    tables = [interaction_table(runs, a, b, column) for a, b in pairs]
    # A floor of 0.001 nats keeps rounding noise (additive data) from filling the colour range.
    limit = max(
        [INTERACTION_SCALE_FLOOR] + [float(np.nanmax(np.abs(r.to_numpy()))) for _, r in tables]
    )
    ncols = min(3, len(pairs))
    nrows = math.ceil(len(pairs) / ncols)
    fig = Figure(figsize=(4.3 * ncols + 1, 3.6 * nrows + 0.8), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    image = None
    for ax, (row_factor, col_factor), (cells, residual) in zip(axes, pairs, tables, strict=False):
        image = ax.imshow(residual.to_numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_xticks(range(residual.shape[1]), residual.columns.astype(str).tolist())
        ax.set_yticks(range(residual.shape[0]), residual.index.astype(str).tolist())
        ax.set_xlabel(col_factor)
        ax.set_ylabel(row_factor)
        for (i, j), value in np.ndenumerate(residual.to_numpy()):
            text = "no runs" if math.isnan(value) else f"{value:+.3f}\n(loss {cells.iat[i, j]:.3f})"
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize="small",
                color="white" if abs(value) > 0.6 * limit else "black",
            )
        ax.set_title(f"{row_factor} × {col_factor}")
    for ax in axes[len(pairs) :]:
        ax.set_visible(False)
    if image is not None:
        fig.colorbar(image, ax=axes.tolist(), label="Interaction residual (nats/token)")
    fig.suptitle(
        "Two-factor interactions on the compared loss (averaged over the other factors)\n"
        "colour: residual from an additive model; 0 = no interaction"
    )
    return save_figure(fig, out_dir, "interactions")


def plot_kv_cache(runs: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """KV-cache bytes per token vs loss: the attention variants' serving trade-off."""
    column = value_column(runs)
    order = arm_order(runs)
    attention_levels = sorted(runs["attention"].dropna().unique()) if "attention" in runs else []
    markers = dict(zip(attention_levels, itertools.cycle("osD^vP*X"), strict=False))
    palette = {level: f"C{i}" for i, level in enumerate(attention_levels)}
    fig = Figure(figsize=(9, 5.5), layout="constrained")
    ax = fig.add_subplot()
    labelled: set[str] = set()
    seen_at: dict[float, int] = {}
    for arm in order:
        group = runs[runs["arm"] == arm]
        values = group[column].astype(float).dropna()
        mean, low, high, has_ci = _loss_interval(values)
        kv_true = float(group["kv_cache_bytes_per_token"].mean())
        # Arms sharing a cache size (same attention) are nudged apart so their marks stay visible.
        nudge = seen_at.get(kv_true, 0)
        seen_at[kv_true] = nudge + 1
        kv = kv_true * (1.0 + 0.015 * nudge)
        attention = str(group["attention"].iloc[0]) if "attention" in group else "?"
        color = palette.get(attention, "C0")
        ax.errorbar(
            kv,
            mean,
            yerr=[[mean - low], [high - mean]] if has_ci else None,
            fmt=markers.get(attention, "o"),
            color=color,
            capsize=4,
            label=attention if attention not in labelled else None,
        )
        if not has_ci:
            ax.plot([kv] * len(values), values, "_", color=color, markersize=8)
        labelled.add(attention)
        ax.annotate(arm, (kv, mean), xytext=(6, 3), textcoords="offset points", fontsize="x-small")
    ax.set_xscale("log")
    # Ticks exactly at the cache sizes present: log-scale defaults crowd or vanish over a
    # narrow range.
    sizes = sorted(seen_at)
    if sizes and not any(math.isnan(v) for v in sizes):
        ax.set_xticks(sizes, [EngFormatter(unit="B")(v) for v in sizes])
        ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel(
        "KV-cache size per token (bytes, bf16, all layers, log scale; lower is cheaper to serve;"
        "\npoints sharing a size are nudged apart)"
    )
    label = compared_loss_label(runs)
    ax.set_ylabel(f"Final {label[0].lower()}{label[1:]}")
    ax.set_title(
        f"KV-cache memory vs validation loss per arm\n(mean; 95% t-interval from "
        f"{MIN_SEEDS_FOR_CI} seeds, else dashes = seeds; down-left is better)"
    )
    ax.grid(alpha=0.3)
    ax.legend(title="attention", fontsize="small")
    return save_figure(fig, out_dir, "kv_cache_vs_loss")


__all__ = [
    "plot_final_perplexity",
    "plot_interactions",
    "plot_kv_cache",
    "plot_main_effects",
]
