"""The scale ladder's figures (PNG and SVG): loss vs compute per optimizer with the fitted
lines, the compute multiplier vs compute with its extrapolation band, loss vs budget at a fixed
size (a ladder compared with itself at another budget), and each context sweep's loss by token
position."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from gpt5_ablate.analysis.compute import SizeMultipliers
from gpt5_ablate.analysis.ladder import POSITION_BUCKETS
from gpt5_ablate.analysis.plots import arm_colors, save_figure

TEST_LOSS_LABEL = "Test loss (nats/token)"


def plot_loss_vs_compute(
    report: pd.DataFrame, multipliers: SizeMultipliers | None, out_dir: Path
) -> list[Path]:
    """Seeds as points, the fitted line ``a + b·log10 C`` per optimizer, log compute axis."""
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    optimizers = sorted(report["optimizer"].dropna().unique())
    colors = arm_colors(optimizers)
    flops = report["train_flops"].astype(float)
    grid = np.linspace(math.log10(flops.min()) - 0.1, math.log10(flops.max()) + 0.1, 50)
    for optimizer in optimizers:
        runs = report[report["optimizer"] == optimizer]
        ax.scatter(runs["train_flops"], runs["loss"], s=18, alpha=0.7, color=colors[optimizer],
                   label=f"{optimizer} (seeds)")  # fmt: skip
        if multipliers is not None and optimizer in multipliers.fits:
            a, b = multipliers.fits[optimizer]
            ax.plot(10**grid, a + b * grid, color=colors[optimizer],
                    label=f"{optimizer} fit: {a:.3f} {b:+.3f}·log10 C")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("Training compute (FLOPs, model forward + backward)")
    ax.set_ylabel(TEST_LOSS_LABEL)
    ax.set_title("Loss vs training compute, each optimizer at its own tuned rates")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    return save_figure(fig, out_dir, "loss_vs_compute")


def plot_multiplier_vs_compute(multipliers: SizeMultipliers, out_dir: Path) -> list[Path]:
    """Per-size multipliers with intervals; the fitted trend and, beyond the measured range,
    its extrapolation with the bootstrap's 95% band."""
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    x = 10 ** np.asarray(multipliers.log_c)
    m = np.array([e.value for e in multipliers.multipliers])
    low = np.array([e.low for e in multipliers.multipliers])
    high = np.array([e.high for e in multipliers.multipliers])
    errors = np.vstack([m - np.where(np.isnan(low), m, low), np.where(np.isnan(high), m, high) - m])
    ax.errorbar(x, m, yerr=errors, fmt="o", color="black", capsize=3,
                label="measured (95% bootstrap interval)")  # fmt: skip
    if multipliers.trend is not None:
        targets = list(multipliers.extrapolated)
        measured = np.linspace(min(multipliers.log_c), max(multipliers.log_c), 20)
        beyond = np.linspace(max(multipliers.log_c), math.log10(max(targets)), 60)
        draws = multipliers.trend_draws  # rows of (intercept, slope)
        slope = multipliers.trend.value
        intercept = float(np.mean(np.log10(m)) - slope * np.mean(multipliers.log_c))
        ax.plot(10**measured, 10 ** (intercept + slope * measured), color="tab:blue",
                label=f"trend: {slope:+.3f} log10(×) per decade")  # fmt: skip
        ax.plot(10**beyond, 10 ** (intercept + slope * beyond), "--", color="tab:red",
                label="EXTRAPOLATION (not measured)")  # fmt: skip
        if len(draws):
            band = draws[:, [0]] + draws[:, [1]] * beyond[None, :]
            ax.fill_between(10**beyond, 10 ** np.percentile(band, 2.5, axis=0),
                            10 ** np.percentile(band, 97.5, axis=0), color="tab:red",
                            alpha=0.15, label="extrapolation, 95% band")  # fmt: skip
        # One label, at the farthest target: side by side they overlap (the table has them all).
        farthest = max(targets)
        estimate = multipliers.extrapolated[farthest]
        ax.annotate(f"{estimate.value:.2g}×", (farthest, estimate.value), fontsize="small",
                    xytext=(-6, 6), textcoords="offset points", ha="right")  # fmt: skip
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    # Multipliers read as 1×, 2×, 5×, not as powers of ten.
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
    ax.yaxis.set_minor_formatter(
        FuncFormatter(lambda v, _: f"{v:g}×" if f"{v:.1e}"[0] in "235" else "")
    )
    ax.set_xlabel("Training compute (FLOPs)")
    ax.set_ylabel(f"Compute multiplier ({multipliers.baseline} / {multipliers.arm})")
    ax.set_title(f"Compute {multipliers.baseline} needs to reach {multipliers.arm}'s loss")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    return save_figure(fig, out_dir, "multiplier_vs_compute")


def plot_loss_vs_budget(runs: pd.DataFrame, out_dir: Path) -> list[Path]:
    """One panel per size run at several budgets: seeds as points and each optimizer's mean
    per budget joined, on a log tokens-per-parameter axis (AdamW's joined means are the line
    the data multiplier is read from)."""
    sizes = [s for s, g in runs.groupby("size", sort=False) if g["tokens_per_param"].nunique() > 1]
    fig = Figure(figsize=(3.4 * max(len(sizes), 1) + 0.6, 4.0))
    optimizers = sorted(runs["optimizer"].dropna().unique())
    colors = arm_colors(optimizers)
    for i, size in enumerate(sizes):
        ax = fig.add_subplot(1, len(sizes), i + 1)
        in_size = runs[runs["size"] == size]
        for optimizer in optimizers:
            arm = in_size[in_size["optimizer"] == optimizer]
            means = arm.groupby("tokens_per_param")["loss"].mean()
            ax.scatter(arm["tokens_per_param"], arm["loss"], s=16, alpha=0.6,
                       color=colors[optimizer])  # fmt: skip
            ax.plot(means.index, means.to_numpy(), "-o", color=colors[optimizer], ms=3,
                    label=optimizer)  # fmt: skip
        ax.set_xscale("log")
        # Ticks at the budgets run, written plainly (0.3, 3), not as powers of ten.
        budgets = sorted(in_size["tokens_per_param"].unique())
        ax.set_xticks(budgets, [f"{b:g}" for b in budgets])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(str(size), fontsize="medium")
        ax.set_xlabel("Tokens per non-embedding parameter")
        if i == 0:
            ax.set_ylabel(TEST_LOSS_LABEL)
            ax.legend(fontsize="small")
        ax.grid(alpha=0.3, which="both")
    fig.suptitle("Loss vs budget at a fixed size, each optimizer at its own tuned rates")
    fig.tight_layout()
    return save_figure(fig, out_dir, "loss_vs_budget")


def position_curves(context: pd.DataFrame, positions: pd.DataFrame) -> pd.DataFrame:
    """``arm, position, loss`` (mean over seeds) of ``context``'s runs, from their per-position
    test loss (``positions``, :func:`~gpt5_ablate.analysis.ladder.position_tables`), or an
    empty frame when they were not logged."""
    table = positions.merge(context[["run_id", "arm"]], on="run_id") if len(positions) else None
    if table is None or table.empty:
        return pd.DataFrame(columns=["arm", "position", "loss"])
    width = max(1, math.ceil((table["position"].max() + 1) / POSITION_BUCKETS))
    table["position"] = table["position"] // width * width + width / 2
    table["weighted"] = table["loss"] * table["tokens"]
    per_run = table.groupby(["arm", "run_id", "position"])[["weighted", "tokens"]].sum()
    per_run["loss"] = per_run["weighted"] / per_run["tokens"]
    return per_run.groupby(["arm", "position"])["loss"].mean().reset_index()


def bin_curves(context: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """``arm, position, loss`` at each bin's midpoint, from the ``test_loss_pos_*`` metrics."""
    rows = []
    for column in columns:
        lo, hi = (int(v) for v in column.rsplit("_", 2)[-2:])
        for arm, values in context.groupby("arm")[column]:
            rows.append({"arm": arm, "position": (lo + hi) / 2, "loss": values.mean()})
    return pd.DataFrame(rows)


def plot_loss_by_position(
    curves: pd.DataFrame,
    source: str,
    out_dir: Path,
    window: int | None = None,
    reference: str = "all_full / none",
    name: str = "loss_by_position",
    title: str = "Test loss by position",
) -> list[Path]:
    """Mean test loss over seeds against token position, one line per window / sinks arm, and
    below it each arm's difference from ``reference`` (differences of a few hundredths vanish
    on the loss scale); a dotted line marks the window, beyond which windows can matter."""
    arms = sorted(curves["arm"].unique())
    with_reference = reference in arms and len(arms) > 1
    fig = Figure(figsize=(6.4, 6.4 if with_reference else 4.4))
    axes = fig.subplots(2 if with_reference else 1, 1, sharex=True, squeeze=False)[:, 0]
    colors = arm_colors(arms)
    table = curves.pivot_table(index="position", columns="arm", values="loss").sort_index()
    for arm in arms:
        axes[0].plot(table.index, table[arm], marker="o", ms=3, color=colors[arm], label=arm)
        if with_reference and arm != reference:
            axes[1].plot(table.index, table[arm] - table[reference], marker="o", ms=3,
                         color=colors[arm], label=arm)  # fmt: skip
    axes[0].set_ylabel(TEST_LOSS_LABEL)
    axes[0].set_title(f"{title} (mean over seeds; {source})", fontsize="medium")
    axes[0].legend(fontsize="small", title="window / sinks")
    if with_reference:
        axes[1].axhline(0.0, color="grey", lw=0.8)
        axes[1].set_ylabel(f"Difference from {reference}")
    for ax in axes:
        ax.grid(alpha=0.3)
        if window:
            ax.axvline(window, color="grey", ls=":", lw=1)
    if window:
        axes[0].annotate(f"window = {window}", (window, 1), xycoords=("data", "axes fraction"),
                         xytext=(3, -12), textcoords="offset points", fontsize="x-small")  # fmt: skip
    axes[-1].set_xlabel("Token position in the sequence")
    return save_figure(fig, out_dir, name)
