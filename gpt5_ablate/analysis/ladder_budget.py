"""One ladder at two budgets: how many more tokens AdamW needs at a fixed model size.

A speed-up measured at one data-to-model ratio need not hold at another: Wen et al. 2025
(arXiv:2509.02046) compare optimizers at 1-8x the compute-optimal ratio and find rankings that
change with it. Two runs of one ladder protocol that differ only in ``tokens_per_param`` give,
at every size both ran, each optimizer's test loss at two budgets. At a fixed size, training
compute is proportional to tokens, so the compute multiplier of
:func:`~gpt5_ablate.analysis.compute.size_multipliers`, with the budgets in place of the sizes,
is a *data* multiplier: how many times Muon's tokens AdamW needs to reach Muon's loss.

The reference run is named by ``reference_ladder=<its out dir>`` (``python -m
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
from gpt5_ablate.analysis.compute import SizeMultipliers, size_multipliers
from gpt5_ablate.analysis.ladder import ADAMW, CHINCHILLA_TOKENS_PER_PARAM, MUON, LadderData
from gpt5_ablate.analysis.sections import markdown_table
from gpt5_ablate.analysis.text import si
from gpt5_ablate.errors import InputError

BUDGET_KEY = "trainer.tokens_per_param"


@dataclass
class BudgetComparison:
    """One size at several budgets: ``mult.sizes`` are the budget labels, ascending."""

    size: str
    non_embedding_params: float
    tokens_per_param: list[float]
    mult: SizeMultipliers

    def change(self) -> tuple[float, float, float]:
        """The multiplier at the longest budget over that at the shortest, with its 95%
        bootstrap interval (NaN where the draws were too few)."""
        first, last = self.mult.multipliers[0], self.mult.multipliers[-1]
        ratio = last.value / first.value
        draws = self.mult.log_multiplier_draws
        if draws.ndim != 2 or len(draws) < 20:
            return ratio, math.nan, math.nan
        contrast = draws[:, -1] - draws[:, 0]
        contrast = contrast[np.isfinite(contrast)]
        if len(contrast) < 20:
            return ratio, math.nan, math.nan
        low, high = np.percentile(contrast, [2.5, 97.5])
        return ratio, float(10**low), float(10**high)


# --------------------------------------------------------------------------------------------
# The reference run
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


def budget_of(protocol: Mapping[str, Any]) -> float | None:
    """The tokens per parameter a protocol's runs train for (its last budget override)."""
    values = [o.split("=", 1)[1] for o in protocol.get("run_overrides", []) if "=" in o]
    keys = [o.split("=", 1)[0].lstrip("+") for o in protocol.get("run_overrides", []) if "=" in o]
    found = [float(v) for k, v in zip(keys, values, strict=True) if k == BUDGET_KEY]
    return found[-1] if found else None


def _without_budget(protocol: Mapping[str, Any]) -> list[str]:
    return [
        o for o in protocol.get("run_overrides", []) if not o.lstrip("+").startswith(BUDGET_KEY)
    ]


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


# --------------------------------------------------------------------------------------------
# The comparison
# --------------------------------------------------------------------------------------------


def budget_label(tokens_per_param: float) -> str:
    return f"{tokens_per_param:.2g} tokens/param"


def budget_runs(ladders: Sequence[LadderData]) -> pd.DataFrame:
    """Every ladder's report runs with their size's ``tokens_per_param`` (tokens seen per
    non-embedding parameter, 2 significant digits) and its ``budget`` label."""
    frames = []
    for data in ladders:
        sizes = ladder.size_table(data).set_index("size")["tokens_per_param"]
        ratio = data.report["size"].map(sizes).map(lambda v: float(f"{v:.2g}"))
        frames.append(data.report.assign(tokens_per_param=ratio, budget=ratio.map(budget_label)))
    return pd.concat(frames, ignore_index=True)


def budget_comparisons(
    ladders: Sequence[LadderData], n_resamples: int = 1000, seed: int = 0
) -> list[BudgetComparison]:
    """Per size measured at two or more budgets: the data multiplier of AdamW against Muon
    at each budget (Muon's mean loss located on AdamW's line in log tokens at that size)."""
    runs = budget_runs(ladders)
    comparisons = []
    for size, group in runs.groupby("size", sort=False):
        if group["budget"].nunique() < 2:
            continue
        mult = size_multipliers(
            group, "optimizer", MUON, ADAMW, size="budget", n_resamples=n_resamples, seed=seed
        )
        if mult is None:
            continue
        by_label = group.groupby("budget")["tokens_per_param"].first()
        comparisons.append(
            BudgetComparison(
                size=str(size),
                non_embedding_params=float(group["n_params_non_embedding"].mean()),
                tokens_per_param=[float(by_label[label]) for label in mult.sizes],
                mult=mult,
            )
        )
    return comparisons


def beyond_measured(comparison: BudgetComparison, index: int) -> bool:
    """Whether AdamW's matching budget at ``index`` lies outside the budgets it was run at
    (the multiplier then extends AdamW's line instead of interpolating it)."""
    needed = comparison.tokens_per_param[index] * comparison.mult.multipliers[index].value
    budgets = comparison.tokens_per_param
    return not min(budgets) * 0.999 <= needed <= max(budgets) * 1.001


def budget_frame(comparisons: Sequence[BudgetComparison]) -> pd.DataFrame:
    rows = []
    for c in comparisons:
        for i, (label, estimate) in enumerate(zip(c.mult.sizes, c.mult.multipliers, strict=True)):
            rows.append({
                "size": c.size, "non_embedding_params": c.non_embedding_params,
                "tokens_per_param": c.tokens_per_param[i], "budget": label,
                "data_multiplier": estimate.value, "low": estimate.low, "high": estimate.high,
                "beyond_measured": beyond_measured(c, i),
            })  # fmt: skip
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------


def reference_section(
    summary: Mapping[str, Any], this: LadderData, folder: Path, n_resamples: int
) -> tuple[list[str], pd.DataFrame]:
    """The budget section of the report in ``folder`` against ``summary["reference_ladder"]``,
    and its table (``budget.csv``)."""
    where = str(summary["reference_ladder"])
    reference = read_reference(where)
    check_reference(summary, reference, where)
    other = ladder.load_ladder(reference)
    comparisons = budget_comparisons([other, this], n_resamples)
    ratios = {
        budget_of(summary.get("protocol", {})) or math.nan: this,
        budget_of(reference.get("protocol", {})) or math.nan: other,
    }
    compute = {
        ratio: ladder.optimizer_multipliers(data, n_resamples) for ratio, data in ratios.items()
    }
    report = Path(where) / "ladder" / "report.md"
    link = Path(os.path.relpath(report.resolve(), folder.resolve())).as_posix()
    text = (
        f"[the same ladder at {budget_of(reference.get('protocol', {}))} tokens per parameter]"
        f"({link}) (`reference_ladder={where}`)"
    )
    lines = budget_lines(ratios, comparisons, compute, text)
    if comparisons:
        plots_ladder.plot_loss_vs_budget(budget_runs([other, this]), folder / "figures")
        lines += [
            "![Loss vs budget](figures/loss_vs_budget.png)",
            "",
            "*Test loss against tokens per parameter at each size run at both budgets; points "
            "are report seeds, lines join each optimizer's means.*",
            "",
        ]
    return lines, budget_frame(comparisons)


def _estimate(value: float, low: float, high: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:.3g}" + ("" if math.isnan(low) else f" [{low:.3g}, {high:.3g}]")


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
    lines = ["## Budget: the same sizes at another tokens-per-parameter ratio", ""]
    lines += [
        f"Reference: {reference_text}. At a fixed model size, compute is proportional to tokens, "
        f"so {ADAMW}'s test loss is fitted as a line in log10 tokens through its budgets and "
        f"{MUON}'s mean loss at each budget is located on it: the **data multiplier** is how "
        f"many times {MUON}'s tokens {ADAMW} needs to reach that loss at that size (Wen et al. "
        "2025, arXiv:2509.02046, measure speed-ups at a fixed size across data budgets). 95% "
        "intervals: the parametric seed bootstrap of the compute multiplier. The last column is "
        "each ladder's own compute multiplier across sizes, at that budget.",
        "",
    ]
    if not comparisons:
        return [*lines, "No size was run at two budgets by both ladders.", ""]
    losses = {ratio: _loss_texts(data) for ratio, data in ladders.items()}
    across = {ratio: _compute_multipliers(mult) for ratio, mult in compute.items()}
    rows = []
    for c in comparisons:
        for i, ratio in enumerate(c.tokens_per_param):
            key = min(losses, key=lambda r, x=ratio: abs(math.log(r / x)))
            estimate = c.mult.multipliers[i]
            note = " (extends adamw's line past its budgets)" if beyond_measured(c, i) else ""
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
        ratio, low, high = c.change()
        first, last = c.tokens_per_param[0], c.tokens_per_param[-1]
        interval = "" if math.isnan(low) else f" [{low:.3g}, {high:.3g}]"
        verdict = (
            "shrinks" if high < 1 else "grows" if low > 1 else "does not change measurably"
        ) if not math.isnan(low) else "cannot be judged (no interval)"  # fmt: skip
        lines.append(
            f"- {c.size}: from {first:.2g} to {last:.2g} tokens per parameter "
            f"({last / first:.3g}× the data), the data multiplier changes by a factor of "
            f"{ratio:.3g}{interval}: it {verdict}."
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
