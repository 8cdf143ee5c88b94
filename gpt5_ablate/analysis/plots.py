"""The report's figures, each saved as PNG and SVG.

Figures are built with the object-oriented API (``matplotlib.figure.Figure``) rather than
pyplot, so nothing depends on the active backend or on pyplot's global figure list: the CLI
runs headless, and a notebook can display the same Figure objects or the saved files.

Conventions: the compared value is the runs' ``loss`` column (see
:func:`gpt5_ablate.analysis.pipeline.resolve_response`; ``final_val_loss`` when absent); an arm
gets an interval only with :data:`~gpt5_ablate.analysis.stats.MIN_SEEDS_FOR_CI` seeds, otherwise
its seeds are drawn as points; intervals never cross impossible values (losses below 0,
perplexities are exp of the loss interval); an axis whose values span a decade or more is
logarithmic.

Arm-level figures (perplexity, main effects, interactions, KV cache) are in
:mod:`~gpt5_ablate.analysis.plots_arms`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter

LOSS_LABEL = "Validation loss (nats/token)"
FORMATS: tuple[str, ...] = ("png", "svg")
LINE_STYLES: tuple[str, ...] = ("-", "--", ":", "-.")
#: Values spanning at least this ratio get a log axis.
LOG_SPAN = 10.0


def save_figure(fig: Figure, out_dir: str | Path, stem: str) -> list[Path]:
    """Write ``<out_dir>/<stem>.png`` and ``.svg``; return the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in FORMATS:
        path = out / f"{stem}.{fmt}"
        # No date and fixed element ids: a regenerated report's figures are byte-identical.
        metadata = {"Date": None} if fmt == "svg" else None
        with mpl.rc_context({"svg.hashsalt": stem}):
            fig.savefig(path, format=fmt, dpi=120, bbox_inches="tight", metadata=metadata)
        paths.append(path)
    return paths


def arm_colors(arms: Sequence[str]) -> dict[str, tuple[float, float, float, float]]:
    """A colour per arm from tab10; beyond ten arms colours repeat (see :func:`arm_linestyles`)."""
    cmap = mpl.colormaps["tab10"]
    return {arm: cmap(i % 10) for i, arm in enumerate(arms)}


def arm_linestyles(arms: Sequence[str]) -> dict[str, str]:
    """Solid for the first ten arms, then dashed, dotted...: colour × style stays unique to 40."""
    return {arm: LINE_STYLES[(i // 10) % len(LINE_STYLES)] for i, arm in enumerate(arms)}


def value_column(runs: pd.DataFrame) -> str:
    return "loss" if "loss" in runs.columns else "final_val_loss"


def compared_loss_label(runs: pd.DataFrame) -> str:
    """The axis label of the compared loss: test or validation, whichever the analysis read."""
    split = runs["loss_split"].iloc[0] if "loss_split" in runs and len(runs) else ""
    return "Test loss (nats/token)" if split == "full_test_loss" else LOSS_LABEL


def arm_order(runs: pd.DataFrame) -> list[str]:
    """Arms from best to worst compared loss, so legends read as a ranking."""
    return runs.groupby("arm")[value_column(runs)].mean().sort_values().index.tolist()


def spans_decades(values: pd.Series | np.ndarray) -> bool:
    data = pd.to_numeric(pd.Series(values), errors="coerce").dropna()
    data = data[data > 0]
    return bool(len(data) > 1 and data.max() / data.min() >= LOG_SPAN)


def legend_outside(ax: Axes, n_entries: int, title: str = "Arm (best first)") -> None:
    ax.legend(
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize="small" if n_entries <= 12 else "x-small",
        title=title,
        title_fontsize="small",
        frameon=False,
    )


def seed_note(runs: pd.DataFrame) -> str:
    seeds = runs.groupby("arm")["run_id"].count()
    if seeds.min() == seeds.max():
        return f"{int(seeds.min())} seed{'s' if seeds.min() != 1 else ''} per arm"
    return f"{int(seeds.min())}–{int(seeds.max())} seeds per arm"


def _curve_stats(curves: pd.DataFrame, x: str) -> pd.DataFrame:
    """Per (arm, step): mean x position and mean/min/max of the value over seeds."""
    return (
        curves.groupby(["arm", "step"])
        .agg(
            x=(x, "mean"),
            mean=("value", "mean"),
            low=("value", "min"),
            high=("value", "max"),
            n=("value", "count"),
        )
        .reset_index()
    )


def _val_loss_curves(history: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Validation-loss points of the runs in ``runs`` (e.g. after LR selection)."""
    curves = history[(history["metric"] == "val/loss") & history["run_id"].isin(runs["run_id"])]
    return curves.assign(arm=curves["run_id"].map(runs.set_index("run_id")["arm"]))


def _unigram_values(runs: pd.DataFrame) -> list[float]:
    if "unigram_val_loss" not in runs:
        return []
    values = pd.to_numeric(runs["unigram_val_loss"], errors="coerce").dropna().round(3)
    return sorted(values.unique().tolist())


def plot_val_loss_curves(
    history: pd.DataFrame, runs: pd.DataFrame, out_dir: str | Path
) -> list[Path]:
    """Validation loss vs tokens seen: a line per arm (seed mean), a min–max band over seeds,
    the full-split final loss as a diamond, and the unigram baseline as a horizontal line."""
    curves = _val_loss_curves(history, runs)
    stats = _curve_stats(curves, "tokens_seen")
    order = arm_order(runs)
    colors, styles = arm_colors(order), arm_linestyles(order)
    log_x = spans_decades(stats["x"])
    if log_x:
        stats = stats[stats["x"] > 0]  # step 0 has seen no tokens: off a log axis
    fig = Figure(figsize=(10, 5.5), layout="constrained")
    ax = fig.add_subplot()
    for arm in order:
        points = stats[stats["arm"] == arm].sort_values("x")
        ax.plot(points["x"], points["mean"], color=colors[arm], linestyle=styles[arm], label=arm)
        multi = points["n"] > 1
        ax.fill_between(
            points["x"][multi],
            points["low"][multi],
            points["high"][multi],
            color=colors[arm],
            alpha=0.18,
            linewidth=0,
        )
        final = runs[runs["arm"] == arm]
        if "full_val_loss" in final and final["full_val_loss"].notna().any():
            ax.plot(
                final["tokens_seen"].mean(),
                final["full_val_loss"].mean(),
                "D",
                color=colors[arm],
                markersize=5,
            )
    for value in _unigram_values(runs):
        ax.axhline(value, color="black", linestyle="--", linewidth=1.2)
        ax.annotate(
            f"unigram baseline {value:.2f}",
            (0.01, value),
            xycoords=("axes fraction", "data"),
            xytext=(0, 3),
            textcoords="offset points",
            fontsize="small",
        )
    if log_x:
        ax.set_xscale("log")
    ax.set_title(
        "Validation loss vs tokens seen (line: seed mean of periodic evals; band: min–max over "
        f"seeds; ◆ full-split final loss; {seed_note(runs)})",
        fontsize="medium",
    )
    ax.set_xlabel("Tokens seen" + (" (log scale)" if log_x else ""))
    ax.xaxis.set_major_formatter(EngFormatter(unit=""))
    ax.set_ylabel(LOSS_LABEL)
    ax.set_ylim(bottom=max(0.0, ax.get_ylim()[0]))
    ax.grid(alpha=0.3)
    legend_outside(ax, len(order))
    return save_figure(fig, out_dir, "val_loss_vs_tokens")


def plot_efficiency(history: pd.DataFrame, runs: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Validation loss against wall-clock time and against training FLOPs, a line per arm."""
    curves = _val_loss_curves(history, runs)
    flops_per_token = curves["run_id"].map(runs.set_index("run_id")["flops_per_token"])
    curves = curves.assign(train_flops=curves["tokens_seen"] * flops_per_token)
    order = arm_order(runs)
    colors, styles = arm_colors(order), arm_linestyles(order)
    fig = Figure(figsize=(13, 5), layout="constrained")
    ax_time, ax_flops = fig.subplots(1, 2, sharey=True)
    for ax, x in ((ax_time, "elapsed_s"), (ax_flops, "train_flops")):
        stats = _curve_stats(curves.dropna(subset=[x]), x)
        log_x = spans_decades(stats["x"])
        if log_x:
            stats = stats[stats["x"] > 0]
            ax.set_xscale("log")
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
        ax.set_xlabel(
            {
                "elapsed_s": "Wall-clock time since run start (s, mean over seeds)",
                "train_flops": "Training compute (FLOPs = tokens seen × FLOPs per token)",
            }[x]
            + (", log scale" if log_x else "")
        )
    ax_time.set_ylabel(LOSS_LABEL)
    ax_time.set_title("Validation loss vs wall-clock time")
    ax_flops.set_title("Validation loss vs training FLOPs")
    legend_outside(ax_flops, len(order))
    fig.suptitle("Efficiency (lines: seed means; hardware and batch size set the time axis)")
    return save_figure(fig, out_dir, "efficiency")


def plot_all(
    history: pd.DataFrame,
    runs: pd.DataFrame,
    out_dir: str | Path,
    marginal: pd.DataFrame | None = None,
) -> dict[str, Path]:
    """Every figure; returns ``{stem: png path}`` for embedding in the report.

    ``marginal``: model-based marginal means for the main-effects figure (see
    :func:`gpt5_ablate.analysis.plots_arms.plot_main_effects`).
    """
    from gpt5_ablate.analysis import plots_arms

    # Curves need metric histories; a report regenerated from an export may have none.
    curves = not history.empty and history["run_id"].isin(runs["run_id"]).any()
    produced = [
        plot_val_loss_curves(history, runs, out_dir) if curves else [],
        plots_arms.plot_final_perplexity(runs, out_dir),
        plots_arms.plot_main_effects(runs, out_dir, marginal=marginal),
        plots_arms.plot_interactions(runs, out_dir),
        plot_efficiency(history, runs, out_dir) if curves else [],
        plots_arms.plot_kv_cache(runs, out_dir),
    ]
    return {paths[0].stem: paths[0] for paths in produced if paths}


__all__ = [
    "plot_all",
    "plot_efficiency",
    "plot_val_loss_curves",
    "save_figure",
]
