"""One ladder at several budgets: how many more tokens AdamW needs at a fixed model size.

A speed-up measured at one data-to-model ratio need not hold at another: Wen et al. 2025
(arXiv:2509.02046) compare optimizers at 1-8x the compute-optimal ratio and find rankings that
change with it. Runs of one ladder protocol that differ only in ``tokens_per_param`` give, at
every size they share, each optimizer's test loss at several budgets. At a fixed size, training
compute is proportional to tokens, so the multiplier is a *data* multiplier: how many times
Muon's tokens AdamW needs to reach Muon's loss, read off AdamW's loss between its budgets.

The other runs are named by ``reference_ladder=<out dir>[,<out dir>...]`` (``python -m
gpt5_ablate.protocol``); :func:`check_reference` refuses one that differs in more than the budget.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gpt5_ablate.analysis import ladder, plots_ladder
from gpt5_ablate.analysis.compute import (
    MIN_SIZES_FOR_TREND,
    Estimate,
    SizeMultipliers,
    percentile_interval,
    redrawn_means,
)
from gpt5_ablate.analysis.ladder import ADAMW, CHINCHILLA_TOKENS_PER_PARAM, MUON, LadderData
from gpt5_ablate.analysis.sections import markdown_table
from gpt5_ablate.analysis.text import si
from gpt5_ablate.errors import InputError

BUDGET_KEY = "trainer.tokens_per_param"


@dataclass
class BudgetComparison:
    """One size at several budgets (ascending): the data multiplier at each, its change from
    the shortest to the longest budget and, with 3+ budgets, its trend per decade of data."""

    size: str
    non_embedding_params: float
    tokens_per_param: list[float]
    multipliers: list[Estimate]
    #: Per budget: AdamW's matching budget lies outside those it ran at (its curve extended).
    beyond: list[bool]
    change: Estimate  # multiplier at the longest budget / at the shortest
    trend: Estimate | None  # d log10(multiplier) / d log10(tokens); None under 3 budgets


def log_multipliers(x: np.ndarray, adamw: np.ndarray, muon: np.ndarray) -> np.ndarray:
    """log10 of the data multiplier at each budget ``x`` (log10 tokens per parameter): where
    AdamW's loss, linear in ``x`` between its measured budgets (the end segments extended),
    reaches Muon's loss, minus ``x``. NaN where AdamW's loss does not fall with the budget."""
    slopes = np.diff(adamw) / np.diff(x)
    if not (slopes < 0).all():
        return np.full(len(x), np.nan)
    out = np.empty(len(x))
    for i, target in enumerate(muon):
        # The segment whose loss range holds the target; past either end, the end segment.
        j = int(np.clip(np.searchsorted(-adamw, -target) - 1, 0, len(x) - 2))
        out[i] = x[j] + (target - adamw[j]) / slopes[j] - x[i]
    return out


def _interval(value: float, draws: np.ndarray, n_resamples: int, log10: bool) -> Estimate:
    low, high = percentile_interval(draws, n_resamples)
    if log10:
        return Estimate(float(10**value), float(10**low), float(10**high))
    return Estimate(float(value), low, high)


def data_multipliers(
    group: pd.DataFrame, size: str, n_resamples: int = 1000, seed: int = 0
) -> BudgetComparison | None:
    """One size's runs (columns ``optimizer, tokens_per_param, loss``) at 2+ budgets.

    Intervals: the parametric seed bootstrap of :func:`~.compute.redrawn_means`, applied to all
    budgets at once so that the change and the trend are read from the same draws."""
    frame = group[group["optimizer"].isin([MUON, ADAMW])].dropna(subset=["loss"])
    budgets = sorted(frame["tokens_per_param"].unique())
    complete = [
        b for b in budgets if frame.loc[frame["tokens_per_param"] == b, "optimizer"].nunique() == 2
    ]
    if len(complete) < 2:
        return None
    x = np.log10(np.asarray(complete, dtype=float))
    cells = {
        level: [frame.loc[(frame["tokens_per_param"] == b) & (frame["optimizer"] == level), "loss"]
                .to_numpy(float) for b in complete]
        for level in (MUON, ADAMW)
    }  # fmt: skip
    means = {level: np.array([v.mean() for v in values]) for level, values in cells.items()}
    point = log_multipliers(x, means[ADAMW], means[MUON])
    draws = [
        log_multipliers(x, drawn[ADAMW], drawn[MUON])
        for drawn in redrawn_means(cells, n_resamples, seed)
    ]
    samples = np.array(draws) if draws else np.full((1, len(x)), np.nan)
    multipliers = [_interval(point[i], samples[:, i], n_resamples, True) for i in range(len(x))]
    needed = x + point
    beyond = [not (x[0] - 1e-9 <= v <= x[-1] + 1e-9) for v in needed]
    change = _interval(point[-1] - point[0], samples[:, -1] - samples[:, 0], n_resamples, True)
    trend = None
    if len(x) >= MIN_SIZES_FOR_TREND and np.isfinite(point).all():
        slopes = np.array([np.polyfit(x, row, 1)[0] if np.isfinite(row).all() else np.nan
                           for row in samples])  # fmt: skip
        trend = _interval(float(np.polyfit(x, point, 1)[0]), slopes, n_resamples, False)
    return BudgetComparison(
        size=size,
        non_embedding_params=float(frame["n_params_non_embedding"].mean()),
        tokens_per_param=[float(b) for b in complete],
        multipliers=multipliers,
        beyond=beyond,
        change=change,
        trend=trend,
    )


# --------------------------------------------------------------------------------------------
# The reference runs
# --------------------------------------------------------------------------------------------


def read_reference(out: str | Path) -> dict[str, Any]:
    """The ``protocol.json`` of the ladder run in ``out``."""
    path = Path(out) / "protocol.json"
    if not path.is_file():
        raise InputError(
            f"reference_ladder={out}: {path} does not exist. Name the out directory of a "
            "finished run of the same ladder protocol at another tokens_per_param (e.g. "
            "reference_ladder=docs/results/cpu_ladder)."
        )
    try:
        summary = json.loads(path.read_text())
    except ValueError as error:
        raise InputError(f"reference_ladder={out}: {path} is damaged ({error}).") from None
    if not summary.get("sizes"):
        raise InputError(
            f"reference_ladder={out}: {path} records no ladder sizes; it is not a ladder run."
        )
    return summary


def _is_budget(override: str) -> bool:
    return override.split("=", 1)[0].lstrip("+") == BUDGET_KEY


def budget_of(protocol: Mapping[str, Any]) -> float | None:
    """The tokens per parameter a protocol's runs train for (its last budget override)."""
    found = [o.split("=", 1)[1] for o in protocol.get("run_overrides", []) if _is_budget(o)]
    return float(found[-1]) if found else None


def _without_budget(protocol: Mapping[str, Any]) -> list[str]:
    return [o for o in protocol.get("run_overrides", []) if not _is_budget(o)]


def check_reference(this: Mapping[str, Any], reference: Mapping[str, Any], where: str) -> None:
    """Refuse a reference that is not the same ladder at another budget."""
    mine, theirs = this.get("protocol", {}), reference.get("protocol", {})
    problems = []
    if mine.get("name") != theirs.get("name"):
        problems.append(f"it ran protocol {theirs.get('name')!r}, this run {mine.get('name')!r}")
    extra = sorted(set(_without_budget(mine)) ^ set(_without_budget(theirs)))
    if extra:
        problems.append(f"their run overrides differ in more than the budget: {', '.join(extra)}")
    budgets = (budget_of(mine), budget_of(theirs))
    if budgets[0] == budgets[1]:
        problems.append(f"both train the same budget ({BUDGET_KEY}={budgets[0]})")
    shared = {s["name"] for s in this.get("sizes", [])} & {
        s["name"] for s in reference.get("sizes", [])
    }
    if not shared:
        problems.append("they share no size")
    if problems:
        raise InputError(
            f"reference_ladder={where} is not this ladder at another budget: "
            + "; ".join(problems)
            + ". A reference must be a run of the same protocol whose runs differ only in "
            "tokens_per_param, at one or more of the same sizes."
        )


def reference_dirs(value: str) -> list[str]:
    """``reference_ladder=a,b``: the out dirs it names, in order."""
    return [part.strip() for part in str(value).split(",") if part.strip()]


def check_references(summary: Mapping[str, Any], value: str) -> list[dict[str, Any]]:
    """Each named reference's protocol.json, checked to be this ladder at a budget of its own."""
    references = []
    seen = {budget_of(summary.get("protocol", {}))}
    for where in reference_dirs(value):
        reference = read_reference(where)
        check_reference(summary, reference, where)
        budget = budget_of(reference.get("protocol", {}))
        if budget in seen:
            raise InputError(
                f"reference_ladder={value}: {where} trains {budget} tokens per parameter, a "
                "budget another run named already has; name one run per budget."
            )
        seen.add(budget)
        references.append(reference)
    return references


# --------------------------------------------------------------------------------------------
# The comparison
# --------------------------------------------------------------------------------------------


def budget_runs(ladders: Sequence[LadderData]) -> pd.DataFrame:
    """Every ladder's report runs with their size's ``tokens_per_param`` (tokens seen per
    non-embedding parameter, 2 significant digits)."""
    frames = []
    for data in ladders:
        sizes = ladder.size_table(data).set_index("size")["tokens_per_param"]
        ratio = data.report["size"].map(sizes).map(lambda v: float(f"{v:.2g}"))
        frames.append(data.report.assign(tokens_per_param=ratio))
    return pd.concat(frames, ignore_index=True)


def budget_comparisons(
    ladders: Sequence[LadderData], n_resamples: int = 1000, seed: int = 0
) -> list[BudgetComparison]:
    """Per size measured at two or more budgets: the data multiplier of AdamW against Muon
    at each budget (:func:`data_multipliers`)."""
    runs = budget_runs(ladders)
    comparisons = []
    for size, group in runs.groupby("size", sort=False):
        if group["tokens_per_param"].nunique() >= 2:
            found = data_multipliers(group, str(size), n_resamples, seed)
            comparisons += [found] if found is not None else []
    return comparisons


def budget_frame(comparisons: Sequence[BudgetComparison]) -> pd.DataFrame:
    rows = []
    for c in comparisons:
        for i, estimate in enumerate(c.multipliers):
            rows.append({
                "size": c.size, "non_embedding_params": c.non_embedding_params,
                "tokens_per_param": c.tokens_per_param[i],
                "data_multiplier": estimate.value, "low": estimate.low, "high": estimate.high,
                "beyond_measured": c.beyond[i],
            })  # fmt: skip
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------


def reference_section(
    summary: Mapping[str, Any],
    this: LadderData,
    this_multipliers: SizeMultipliers | None,
    folder: Path,
    n_resamples: int,
) -> tuple[list[str], pd.DataFrame]:
    """The budget section of the report in ``folder`` against the runs
    ``summary["reference_ladder"]`` names, and its table (``budget.csv``).
    ``this_multipliers``: this ladder's compute multipliers, already computed by its report."""
    value = str(summary["reference_ladder"])
    references = check_references(summary, value)
    this_budget = budget_of(summary.get("protocol", {})) or math.nan
    ratios = {this_budget: this}
    compute = {this_budget: this_multipliers}
    links = []
    for where, reference in zip(reference_dirs(value), references, strict=True):
        budget = budget_of(reference.get("protocol", {})) or math.nan
        ratios[budget] = ladder.load_ladder(reference)
        compute[budget] = ladder.optimizer_multipliers(ratios[budget], n_resamples)
        report = Path(where) / "ladder" / "report.md"
        link = Path(os.path.relpath(report.resolve(), folder.resolve())).as_posix()
        links.append(f"[{budget:g} tokens per parameter]({link})")
    ratios = dict(sorted(ratios.items()))
    comparisons = budget_comparisons(list(ratios.values()), n_resamples)
    text = f"the same ladder at {', '.join(links)} (`reference_ladder={value}`)"
    lines = budget_lines(ratios, comparisons, compute, text)
    if comparisons:
        plots_ladder.plot_loss_vs_budget(budget_runs(list(ratios.values())), folder / "figures")
        lines += [
            "![Loss vs budget](figures/loss_vs_budget.png)",
            "",
            "*Test loss against tokens per parameter at each size run at several budgets; "
            "points are report seeds, lines join each optimizer's means.*",
            "",
        ]
    return lines, budget_frame(comparisons)


def _estimate(value: float, low: float, high: float, fmt: str = ".3g") -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:{fmt}}" + ("" if math.isnan(low) else f" [{low:{fmt}}, {high:{fmt}}]")


def _loss_texts(data: LadderData) -> dict[tuple[str, str], str]:
    table = ladder.loss_table(data)
    return {(r["size"], r["what"]): r["text"] for _, r in table.iterrows()}


def _compute_multipliers(mult: SizeMultipliers | None) -> dict[str, str]:
    if mult is None:
        return {}
    return {
        size: _estimate(e.value, e.low, e.high)
        for size, e in zip(mult.sizes, mult.multipliers, strict=True)
    }


def budget_lines(
    ladders: Mapping[float, LadderData],
    comparisons: Sequence[BudgetComparison],
    compute: Mapping[float, SizeMultipliers | None],
    reference_text: str,
) -> list[str]:
    """The report's budget section. ``ladders`` and ``compute`` (each ladder's across-size
    compute multipliers) are keyed by the ladder's tokens per parameter."""
    lines = ["## Budget: the same sizes at other tokens-per-parameter ratios", ""]
    lines += [
        f"Compared with {reference_text}. At a fixed model size, compute is proportional to "
        f"tokens, so {ADAMW}'s mean test loss, taken as linear in log10 tokens between the "
        f"budgets it ran at (its end segments extended past them), is where {MUON}'s mean loss "
        f"at each budget is located: the **data multiplier** is how many times {MUON}'s tokens "
        f"{ADAMW} needs to reach that loss at that size (Wen et al. 2025, arXiv:2509.02046, "
        "measure speed-ups at a fixed size across data budgets). 95% intervals: a parametric "
        "bootstrap over seeds (every cell's mean redrawn from its optimizer's pooled seed spread), "
        "all budgets from the same draws, so the change between budgets has an interval too. The "
        "last column is each run's own compute multiplier across its sizes (n/a for a one-size "
        "run).",
        "",
    ]
    if not comparisons:
        return [*lines, "No size was run at two or more budgets.", ""]
    losses = {ratio: _loss_texts(data) for ratio, data in ladders.items()}
    across = {ratio: _compute_multipliers(mult) for ratio, mult in compute.items()}
    rows = []
    for c in comparisons:
        for i, ratio in enumerate(c.tokens_per_param):
            key = min(losses, key=lambda r, x=ratio: abs(math.log(r / x)))
            estimate = c.multipliers[i]
            note = " (extends adamw's line past its budgets)" if c.beyond[i] else ""
            rows.append({
                "size": c.size, "non-embedding params": si(c.non_embedding_params),
                "tokens / param": f"{ratio:.2g}",
                ADAMW: losses[key].get((c.size, ADAMW), "n/a"),
                MUON: losses[key].get((c.size, MUON), "n/a"),
                f"{MUON} − {ADAMW}": losses[key].get((c.size, f"{MUON} − {ADAMW}"), "n/a"),
                "data multiplier at this size [95% CI]":
                    _estimate(estimate.value, estimate.low, estimate.high) + note,
                "compute multiplier across sizes [95% CI]": across.get(key, {}).get(c.size, "n/a"),
            })  # fmt: skip
    lines += [markdown_table(pd.DataFrame(rows)), ""]
    for c in comparisons:
        change, first, last = c.change, c.tokens_per_param[0], c.tokens_per_param[-1]
        verdict = (
            "shrinks" if change.high < 1 else "grows" if change.low > 1
            else "does not change measurably"
        ) if not math.isnan(change.low) else "cannot be judged (no interval)"  # fmt: skip
        trend = ""
        if c.trend is not None:
            trend = (
                f"; fitted over its {len(c.tokens_per_param)} budgets, "
                f"{_estimate(c.trend.value, c.trend.low, c.trend.high, '+.3f')} log10(×) per "
                "decade of data"
            )
        lines.append(
            f"- {c.size}: from {first:.2g} to {last:.2g} tokens per parameter "
            f"({last / first:.3g}× the data), the data multiplier changes by a factor of "
            f"{_estimate(change.value, change.low, change.high)}: it {verdict}{trend}."
        )
    longest = max(r for c in comparisons for r in c.tokens_per_param)
    lines += [
        "",
        f"The longest budget here is {longest:.2g} tokens per parameter, "
        f"{longest / CHINCHILLA_TOKENS_PER_PARAM:.2g}× the compute-optimal "
        f"~{CHINCHILLA_TOKENS_PER_PARAM:g} (Hoffmann et al. 2022, arXiv:2203.15556); Wen et al. "
        "compare at 1-8× that optimum.",
        "",
    ]
    return lines
