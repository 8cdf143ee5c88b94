"""The report's figures, each saved as PNG and SVG.

Figures are built with the object-oriented API (``matplotlib.figure.Figure``) rather than
pyplot, so nothing depends on the active backend or on pyplot's global figure list: the CLI
runs headless, and a notebook can display the same Figure objects or the saved files.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, NullLocator

from gpt5_ablate.analysis.stats import (
    interaction_table,
    main_effects,
    mean_ci,
    varied_factors,
)

LOSS_LABEL = "Validation loss (nats/token)"
FORMATS: tuple[str, ...] = ("png", "svg")
INTERACTION_SCALE_FLOOR = 1e-3  # nats/token


def save_figure(fig: Figure, out_dir: str | Path, stem: str) -> list[Path]:
    """Write ``<out_dir>/<stem>.png`` and ``.svg``; return the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in FORMATS:
        path = out / f"{stem}.{fmt}"
        fig.savefig(path, format=fmt, dpi=120, bbox_inches="tight")
        paths.append(path)
    return paths


LINE_STYLES: tuple[str, ...] = ("-", "--", ":", "-.")


def arm_colors(arms: Sequence[str]) -> dict[str, tuple[float, float, float, float]]:
    """A colour per arm from tab10; beyond ten arms colours repeat (see :func:`arm_linestyles`)."""
    cmap = mpl.colormaps["tab10"]
    return {arm: cmap(i % 10) for i, arm in enumerate(arms)}


def arm_linestyles(arms: Sequence[str]) -> dict[str, str]:
    """Solid for the first ten arms, then dashed, dotted...: colour × style stays unique to 40."""
    return {arm: LINE_STYLES[(i // 10) % len(LINE_STYLES)] for i, arm in enumerate(arms)}


def _arm_order(runs: pd.DataFrame) -> list[str]:
    """Arms from best to worst final validation loss, so legends read as a ranking."""
    return runs.groupby("arm")["final_val_loss"].mean().sort_values().index.tolist()


def _legend_outside(ax: Axes, n_entries: int) -> None:
    ax.legend(
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize="small" if n_entries <= 12 else "x-small",
        title="Arm (best first)",
        title_fontsize="small",
        frameon=False,
    )


def _seed_note(runs: pd.DataFrame) -> str:
    seeds = runs.groupby("arm")["run_id"].count()
    if seeds.min() == seeds.max():
        return f"{int(seeds.min())} seed{'s' if seeds.min() != 1 else ''} per arm"
    return f"{int(seeds.min())}–{int(seeds.max())} seeds per arm"


def _curve_stats(curves: pd.DataFrame, x: str) -> pd.DataFrame:
    """Per (arm, step): mean x position and mean/min/max/sd of the value over seeds."""
    return (
        curves.groupby(["arm", "step"])
        .agg(
            x=(x, "mean"),
            mean=("value", "mean"),
            low=("value", "min"),
            high=("value", "max"),
            sd=("value", "std"),
            n=("value", "count"),
        )
        .reset_index()
    )


def _val_loss_curves(history: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Validation-loss points of the runs in ``runs`` (e.g. after LR selection)."""
    curves = history[(history["metric"] == "val/loss") & history["run_id"].isin(runs["run_id"])]
    return curves.assign(arm=curves["run_id"].map(runs.set_index("run_id")["arm"]))


def plot_val_loss_curves(
    history: pd.DataFrame, runs: pd.DataFrame, out_dir: str | Path, band: str = "minmax"
) -> list[Path]:
    """Validation loss vs tokens seen: a line per arm (seed mean) and a band over seeds.

    ``band`` is ``"minmax"`` (the range of seeds) or ``"sd"`` (mean ± one standard deviation).
    """
    curves = _val_loss_curves(history, runs)
    stats = _curve_stats(curves, "tokens_seen")
    order = _arm_order(runs)
    colors, styles = arm_colors(order), arm_linestyles(order)
    fig = Figure(figsize=(10, 5.5), layout="constrained")
    ax = fig.add_subplot()
    for arm in order:
        points = stats[stats["arm"] == arm].sort_values("x")
        ax.plot(
            points["x"],
            points["mean"],
            color=colors[arm],
            linestyle=styles[arm],
            label=arm,
            linewidth=1.6,
        )
        if band == "sd":
            low, high = points["mean"] - points["sd"], points["mean"] + points["sd"]
        else:
            low, high = points["low"], points["high"]
        multi = points["n"] > 1
        ax.fill_between(
            points["x"][multi], low[multi], high[multi], color=colors[arm], alpha=0.18, linewidth=0
        )
    band_text = "min–max over seeds" if band == "minmax" else "±1 sd over seeds"
    ax.set_title(
        f"Validation loss vs tokens seen (line: seed mean; band: {band_text}; {_seed_note(runs)})"
    )
    ax.set_xlabel("Tokens seen")
    ax.xaxis.set_major_formatter(EngFormatter(unit=""))
    ax.set_ylabel(LOSS_LABEL)
    ax.grid(alpha=0.3)
    _legend_outside(ax, len(order))
    return save_figure(fig, out_dir, "val_loss_vs_tokens")


def plot_final_perplexity(runs: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Final validation perplexity per arm with a 95% t-interval over seeds."""
    order = _arm_order(runs)
    colors = arm_colors(order)
    fig = Figure(figsize=(9, 1.2 + 0.42 * len(order)), layout="constrained")
    ax = fig.add_subplot()
    single_seed = False
    for i, arm in enumerate(order):
        # The interval of exp(loss): the loss t-interval mapped through exp (always positive).
        interval = mean_ci(runs.loc[runs["arm"] == arm, "final_val_loss"].astype(float))
        center = math.exp(interval.mean)
        y = len(order) - 1 - i  # best arm on top
        if interval.has_ci:
            ax.errorbar(
                center,
                y,
                xerr=[[center - math.exp(interval.low)], [math.exp(interval.high) - center]],
                fmt="o",
                color=colors[arm],
                capsize=4,
            )
        else:
            single_seed = True
            ax.plot(center, y, "o", color=colors[arm])
            ax.annotate(
                f"n={interval.n}: no CI",
                (center, y),
                xytext=(8, 0),
                textcoords="offset points",
                va="center",
                fontsize="small",
            )
    ax.set_yticks(range(len(order)), list(reversed(order)))
    ax.set_xlabel("Final validation perplexity (exp of loss in nats/token; lower is better)")
    title = "Final validation perplexity per arm (exp of mean loss, 95% t-interval over seeds)"
    if single_seed:
        title += "\nArms with a single seed have no interval"
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, out_dir, "final_perplexity")


def plot_main_effects(
    runs: pd.DataFrame, out_dir: str | Path, metric: str = "final_val_loss"
) -> list[Path]:
    """Mean final val loss per level of each varied factor, averaged over the other factors."""
    factors = varied_factors(runs)
    effects = main_effects(runs, metric, factors)
    fig = Figure(figsize=(3.2 * max(len(factors), 1) + 1, 4), layout="constrained")
    axes = fig.subplots(1, max(len(factors), 1), sharey=True, squeeze=False)[0]
    for ax, factor in zip(axes, factors, strict=False):
        rows = effects[effects["factor"] == factor].sort_values("mean")
        x = np.arange(len(rows))
        half = (rows["ci_high"] - rows["mean"]).to_numpy()
        has_ci = ~np.isnan(half)
        ax.errorbar(
            x[has_ci], rows["mean"][has_ci], yerr=half[has_ci], fmt="o", capsize=5, color="C0"
        )
        ax.plot(x[~has_ci], rows["mean"][~has_ci], "o", color="C0")
        ax.set_xticks(x, rows["level"].tolist())
        ax.set_xlim(-0.5, len(rows) - 0.5)
        ax.set_title(factor)
        ax.grid(axis="y", alpha=0.3)
    if not factors:
        axes[0].text(0.5, 0.5, "No factor varies", ha="center", va="center")
    axes[0].set_ylabel(f"Mean final {LOSS_LABEL[0].lower()}{LOSS_LABEL[1:]}")
    fig.suptitle(
        "Main effects: mean final validation loss per level, averaged over the other factors\n"
        "(error bars: 95% t-interval over seeds; lower is better)"
    )
    return save_figure(fig, out_dir, "main_effects")


def plot_interactions(
    runs: pd.DataFrame, out_dir: str | Path, metric: str = "final_val_loss"
) -> list[Path]:
    """Heatmaps of two-factor interactions (one per pair of varied factors).

    Colour shows the interaction residual (cell − row mean − column mean + grand mean): zero
    when the two effects simply add. Each cell also prints the cell's mean loss. Returns no
    paths when fewer than two factors vary.
    """
    factors = varied_factors(runs)
    pairs = list(itertools.combinations(factors, 2))
    if not pairs:
        return []
    tables = [interaction_table(runs, a, b, metric) for a, b in pairs]
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
            # White text on the saturated ends of the colour map, black elsewhere.
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
        "Two-factor interactions on final validation loss (averaged over the other factors)\n"
        "colour: residual from an additive model; 0 = no interaction"
    )
    return save_figure(fig, out_dir, "interactions")


def plot_efficiency(history: pd.DataFrame, runs: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Validation loss against wall-clock time and against training FLOPs, a line per arm."""
    curves = _val_loss_curves(history, runs)
    flops_per_token = curves["run_id"].map(runs.set_index("run_id")["flops_per_token"])
    curves = curves.assign(train_flops=curves["tokens_seen"] * flops_per_token)
    order = _arm_order(runs)
    colors, styles = arm_colors(order), arm_linestyles(order)
    fig = Figure(figsize=(13, 5), layout="constrained")
    ax_time, ax_flops = fig.subplots(1, 2, sharey=True)
    for ax, x in ((ax_time, "elapsed_s"), (ax_flops, "train_flops")):
        stats = _curve_stats(curves.dropna(subset=[x]), x)
        for arm in order:
            points = stats[stats["arm"] == arm].sort_values("x")
            ax.plot(
                points["x"],
                points["mean"],
                marker=".",
                color=colors[arm],
                linestyle=styles[arm],
                label=arm,
            )
        ax.grid(alpha=0.3)
    ax_time.set_xlabel("Wall-clock time since run start (s, mean over seeds)")
    ax_time.set_ylabel(LOSS_LABEL)
    ax_time.set_title("Validation loss vs wall-clock time")
    ax_flops.set_xscale("log")
    ax_flops.set_xlabel("Training compute (FLOPs = tokens seen × FLOPs per token, log scale)")
    ax_flops.set_title("Validation loss vs training FLOPs")
    _legend_outside(ax_flops, len(order))
    fig.suptitle("Efficiency (lines: seed means; hardware and batch size set the time axis)")
    return save_figure(fig, out_dir, "efficiency")


def plot_kv_cache(runs: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """KV-cache bytes per token vs final validation loss: the attention variants' trade-off."""
    order = _arm_order(runs)
    attention_levels = sorted(runs["attention"].dropna().unique()) if "attention" in runs else []
    markers = dict(zip(attention_levels, itertools.cycle("osD^vP*X"), strict=False))
    palette = {level: f"C{i}" for i, level in enumerate(attention_levels)}
    fig = Figure(figsize=(9, 5.5), layout="constrained")
    ax = fig.add_subplot()
    labelled: set[str] = set()
    seen_at: dict[float, int] = {}
    for arm in order:
        group = runs[runs["arm"] == arm]
        interval = mean_ci(group["final_val_loss"].astype(float))
        kv_true = float(group["kv_cache_bytes_per_token"].mean())
        # Arms sharing a cache size (same attention) are nudged apart so their bars stay visible.
        nudge = seen_at.get(kv_true, 0)
        seen_at[kv_true] = nudge + 1
        kv = kv_true * (1.0 + 0.015 * nudge)
        attention = str(group["attention"].iloc[0]) if "attention" in group else "?"
        ax.errorbar(
            kv,
            interval.mean,
            yerr=interval.half_width if interval.has_ci else None,
            fmt=markers.get(attention, "o"),
            color=palette.get(attention, "C0"),
            capsize=4,
            label=attention if attention not in labelled else None,
        )
        labelled.add(attention)
        ax.annotate(
            arm, (kv, interval.mean), xytext=(6, 3), textcoords="offset points", fontsize="x-small"
        )
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
    ax.set_ylabel(f"Final {LOSS_LABEL[0].lower()}{LOSS_LABEL[1:]}")
    ax.set_title(
        "KV-cache memory vs validation loss per arm\n(mean, 95% t-interval over seeds; "
        "down-left is better)"
    )
    ax.grid(alpha=0.3)
    ax.legend(title="attention", fontsize="small")
    return save_figure(fig, out_dir, "kv_cache_vs_loss")


def plot_all(history: pd.DataFrame, runs: pd.DataFrame, out_dir: str | Path) -> dict[str, Path]:
    """Every figure; returns ``{stem: png path}`` for embedding in the report."""
    produced = [
        plot_val_loss_curves(history, runs, out_dir),
        plot_final_perplexity(runs, out_dir),
        plot_main_effects(runs, out_dir),
        plot_interactions(runs, out_dir),
        plot_efficiency(history, runs, out_dir),
        plot_kv_cache(runs, out_dir),
    ]
    return {paths[0].stem: paths[0] for paths in produced if paths}


__all__ = [
    "plot_all",
    "plot_efficiency",
    "plot_final_perplexity",
    "plot_interactions",
    "plot_kv_cache",
    "plot_main_effects",
    "plot_val_loss_curves",
    "save_figure",
]
