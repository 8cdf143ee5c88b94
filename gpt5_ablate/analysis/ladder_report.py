"""The scale ladder's Markdown report (``<out>/ladder/report.md``) with its CSVs and figures:
sizes, tuned rates, test losses, the compute multiplier and its trend (with the extrapolation
marked as not measured), published anchors, the context sweeps (one per size), whether each measured preference
is replicated, and the judgement rule applied to what the ladder measured. The numbers come from
:mod:`~gpt5_ablate.analysis.ladder`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gpt5_ablate.analysis import ladder, ladder_budget, plots_ladder
from gpt5_ablate.analysis.compute import SizeMultipliers, saturating_fit
from gpt5_ablate.analysis.evidence import MIN_COMPUTE_SPAN, MIN_SIZES, load_evidence
from gpt5_ablate.analysis.judgement import JudgementSettings, MeasuredSize, judgement, rule_text
from gpt5_ablate.analysis.ladder import (
    ADAMW,
    BIN_PREFIX,
    CHINCHILLA_TOKENS_PER_PARAM,
    CONTEXT_FACTORS,
    MUON,
    LadderData,
)
from gpt5_ablate.analysis.sections import markdown_table
from gpt5_ablate.analysis.stats import MIN_SEEDS_FOR_CI
from gpt5_ablate.analysis.text import si
from gpt5_ablate.ladder import context_sets

#: Wen et al. 2025 (arXiv:2509.02046): Muon's speed-up with per-size tuning, by parameters.
WEN_ANCHORS = ((130e6, 1.4), (1.2e9, 1.1))
#: Moonlight (arXiv:2502.16982): compute efficiency from its scaling-law fits.
MOONLIGHT_MULTIPLIER = 2.0
#: The range of multiples of the compute-optimal ratio Wen et al. 2025 train at (1-8x).
WEN_DATA_RATIOS = (1, 8)


def saturating_note(data: LadderData, multipliers: SizeMultipliers | None) -> str:
    """Which functional form was used, and the saturating form's per-size multipliers only
    where both optimizers' fits are well determined."""
    frame = data.report.dropna(subset=["loss", "train_flops"])
    fits = {
        opt: saturating_fit(np.log10(g["train_flops"].to_numpy(float)), g["loss"].to_numpy(float))
        for opt, g in frame.groupby("optimizer")
        if opt in (MUON, ADAMW)
    }
    used = "Form used: log-linear, loss = a + b·log10(C), per optimizer."
    if len(fits) < 2 or multipliers is None:
        return used
    problems = [f"{opt}: {fit.reason}" for opt, fit in fits.items() if fit.reason]
    if problems:
        return f"{used} The saturating form E + A·C^−α was not used ({'; '.join(problems)})."
    adamw = fits[ADAMW]
    parts = []
    for size, log_c in zip(multipliers.sizes, multipliers.log_c, strict=True):
        muon_loss = float(
            frame[(frame["size"] == size) & (frame["optimizer"] == MUON)]["loss"].mean()
        )
        needed = adamw.log_c_at(muon_loss)
        parts.append(f"{size}: {10 ** (needed - log_c):.3g}×" if math.isfinite(needed) else
                     f"{size}: never (below AdamW's fitted floor E={adamw.e:.3f})")  # fmt: skip
    return (
        f"{used} Sensitivity, saturating form E + A·C^−α (well determined for both): "
        f"multipliers {'; '.join(parts)} (point estimates)."
    )


def replicated_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Per factor: at how many sizes each level is favoured, and the compute they span."""
    lines = []
    for factor in dict.fromkeys(r["factor"] for r in rows):
        mine = [r for r in rows if r["factor"] == factor]
        favoured = [r for r in mine if r["category"] == "favoured"]
        parts, spans = [], []
        for level in sorted({r["favoured"] for r in favoured}):
            flops = [r["flops"] for r in favoured if r["favoured"] == level]
            spans.append(max(flops) / min(flops))
            parts.append(
                f"{level} favoured at {len(flops)} size(s) spanning {spans[-1]:.3g}× compute"
            )
        meets = len(spans) == 1 and len(favoured) >= MIN_SIZES and spans[0] >= MIN_COMPUTE_SPAN
        where = ""
        if mine[0].get("window_tokens"):
            where = (
                f" at context {mine[0]['context_len']:.0f} / window {mine[0]['window_tokens']:.0f}"
            )
        lines.append(
            f"- **{factor}**{where}: {'; '.join(parts) or 'favoured at no size'} (of {len(mine)} "
            f"measured); {'meets' if meets else 'does not meet'} the rule's {MIN_SIZES} sizes "
            f"spanning {MIN_COMPUTE_SPAN:g}×."
        )
    return lines


def _estimate_text(value: float, low: float, high: float, fmt: str = ".3g") -> str:
    if math.isnan(value):
        return "n/a"
    interval = "" if math.isnan(low) else f" [{low:{fmt}}, {high:{fmt}}]"
    return f"{value:{fmt}}{interval}"


def _multiplier_section(mult: SizeMultipliers | None, sizes: pd.DataFrame) -> list[str]:
    lines = ["## Compute multiplier", ""]
    if mult is None:
        return [*lines, "No multiplier: fewer than two sizes hold runs of both optimizers.", ""]
    (a_m, b_m), (a_w, b_w) = mult.fits[mult.arm], mult.fits[mult.baseline]
    lines += [
        f"How much more training compute {mult.baseline} needs to reach {mult.arm}'s test loss. "
        f"Each optimizer's loss is fitted across sizes as a line in log10 compute "
        f"({mult.arm}: {a_m:.4f} {b_m:+.4f}·log10 C; {mult.baseline}: {a_w:.4f} "
        f"{b_w:+.4f}·log10 C); at each size, {mult.arm}'s mean loss is located on "
        f"{mult.baseline}'s line. 95% intervals: a parametric bootstrap over seeds within each "
        "size (each draw redraws every size's mean from its seeds' spread, pooled over sizes "
        "per optimizer, and refits both lines), which keeps the Student-t width of few seeds.",
        "",
    ]
    frame = pd.DataFrame({
        "size": mult.sizes,
        "training FLOPs": [f"{10**c:.3g}" for c in mult.log_c],
        "multiplier [95% CI]": [_estimate_text(e.value, e.low, e.high) for e in mult.multipliers],
    })  # fmt: skip
    lines += [markdown_table(frame), ""]
    if mult.diff_trend is not None:
        d = mult.diff_trend
        lines.append(
            f"Trend of the loss difference ({mult.arm} − {mult.baseline}): "
            f"{_estimate_text(d.value, d.low, d.high, '+.4f')} nats per decade of compute."
        )
        lines.append("")
    if mult.trend is None:
        lines += ["", f"**No trend can be fitted**: {mult.no_trend}.", ""]
        return lines
    t = mult.trend
    span = 10 ** (max(mult.log_c) - min(mult.log_c))
    lines += [
        f"Trend of the multiplier: {_estimate_text(t.value, t.low, t.high, '+.3f')} in log10(×) "
        f"per decade of compute, over {len(mult.sizes)} sizes spanning {span:.3g}× compute.",
        "",
        "### Extrapolation (NOT measured)",
        "",
        f"The log-linear trend carried from {10 ** min(mult.log_c):.3g}–"
        f"{10 ** max(mult.log_c):.3g} FLOPs to frontier compute, "
        f"{math.log10(min(mult.extrapolated)) - max(mult.log_c):.1f}+ decades beyond the "
        "largest measured size. The intervals carry only the seed noise of the fit, not the "
        "error of assuming the form holds that far; read them as a lower bound on uncertainty.",
        "",
    ]
    rows = [
        {"training FLOPs": f"{c:.0e}",
         "multiplier [95% CI]": _estimate_text(e.value, e.low, e.high),
         f"loss difference {mult.arm} − {mult.baseline} [95% CI]": _estimate_text(
             mult.diff_extrapolated[c].value, mult.diff_extrapolated[c].low,
             mult.diff_extrapolated[c].high, "+.4f")}
        for c, e in mult.extrapolated.items()
    ]  # fmt: skip
    lines += [markdown_table(pd.DataFrame(rows)), ""]
    if t.value != 0:
        log_m = [math.log10(e.value) for e in mult.multipliers]
        cross = np.mean(mult.log_c) - np.mean(log_m) / t.value
        if cross > max(mult.log_c) and t.value < 0:
            lines += [
                f"The fitted line reaches 1× at {10**cross:.3g} FLOPs; beyond that it reads as "
                f"{mult.baseline} needing less compute, which the log-linear form forces rather "
                "than the data show.",
                "",
            ]
    return lines


def _anchor_lines(mult: SizeMultipliers | None, sizes: pd.DataFrame) -> list[str]:
    lines = ["## Against published anchors (stated context, not data)", ""]
    if mult is None:
        return [*lines, "No multiplier was measured, so there is nothing to compare.", ""]
    (n0, m0), (n1, m1) = WEN_ANCHORS
    # Their compute grows about as N² at a fixed tokens-per-parameter ratio.
    wen_slope = math.log10(m1 / m0) / math.log10((n1 / n0) ** 2)
    params = sizes.set_index("size")["non_embedding_params"]
    first, last = mult.multipliers[0], mult.multipliers[-1]
    p_first, p_last = params.get(mult.sizes[0], math.nan), params.get(mult.sizes[-1], math.nan)
    if mult.trend is not None and not math.isnan(mult.trend.low):
        t = mult.trend
        where = (
            "contains" if t.low <= wen_slope <= t.high
            else "lies below" if t.high < wen_slope else "lies above"
        )  # fmt: skip
        slope_text = (
            f"a trend of {t.value:+.3f} [{t.low:+.3f}, {t.high:+.3f}] per decade, whose interval "
            f"{where} that anchor slope"
        )
    else:
        slope_text = f"no fitted trend ({mult.no_trend or 'no interval'})"
    lines.append(
        f"- Wen et al. 2025 (arXiv:2509.02046), each optimizer tuned per size: Muon's speed-up "
        f"falls from ~{m0}× at {n0 / 1e6:.0f}M to ~{m1}× at {n1 / 1e9:.1f}B parameters "
        f"(≈ {wen_slope:+.3f} log10(×) per decade of compute if their compute grows as N²). "
        f"This ladder, at {si(p_first)}–{si(p_last)} non-embedding parameters "
        f"({n0 / p_last:.3g}–{n0 / p_first:.3g}× below their smallest), measures "
        f"{_estimate_text(first.value, first.low, first.high)} at its smallest size and "
        f"{_estimate_text(last.value, last.low, last.high)} at its largest, {slope_text}."
    )
    finite = [e for e in mult.multipliers if not math.isnan(e.low)]
    below = sum(e.high < MOONLIGHT_MULTIPLIER for e in finite)
    above = sum(e.low > MOONLIGHT_MULTIPLIER for e in finite)
    lines += [
        f"- Moonlight (arXiv:2502.16982) reports ~{MOONLIGHT_MULTIPLIER:g}× compute efficiency "
        f"from scaling-law fits. Of this ladder's {len(finite)} per-size intervals, "
        f"{len(finite) - below - above} contain(s) {MOONLIGHT_MULTIPLIER:g}×, {below} lie below it "
        f"and {above} above it.",
        _budget_line(sizes),
        "",
    ]
    return lines


def _budget_line(sizes: pd.DataFrame) -> str:
    """How far this ladder's data-to-model ratio is from the anchors': a speed-up measured at one
    ratio need not hold at another, so the comparison above is across budgets as well as sizes."""
    ratio = sizes["tokens_per_param"].dropna()
    if ratio.empty:
        return "- Budget: no tokens-per-parameter ratio was recorded."
    low, high = WEN_DATA_RATIOS
    multiple = ratio / CHINCHILLA_TOKENS_PER_PARAM

    def span(values: pd.Series) -> str:
        if math.isclose(values.min(), values.max(), rel_tol=0.05):
            return f"{values.iloc[0]:.2g}"
        return f"{values.min():.2g}–{values.max():.2g}"

    return (
        f"- Budget: this ladder trains {span(ratio)} tokens per non-embedding parameter, "
        f"{span(multiple)}× the compute-optimal ~{CHINCHILLA_TOKENS_PER_PARAM:g} (Hoffmann et "
        f"al. 2022, arXiv:2203.15556); Wen et al. train at {low}–{high}× that optimum and call "
        "for comparisons across such ratios. These multipliers describe far shorter budgets "
        "than theirs."
    )


def _bin_label(column: str, context_len: float | None = None) -> str:
    if column == "loss":
        return "all positions"
    if column == ladder.FIRST_COLUMN:
        width = ladder.first_positions(context_len) if context_len else None
        return f"positions 0–{width - 1}" if width else "first positions"
    if column.startswith(BIN_PREFIX):
        lo, hi = column.removeprefix(BIN_PREFIX).split("_")
        return f"positions {lo}–{int(hi) - 1}"
    return column


def _context_spec_text(spec: Mapping[str, Any]) -> str:
    return f"context {spec.get('seq_len')} tokens, window {spec.get('window')}"


def _effect_text(effects: pd.DataFrame, size: str, factor: str, level: str, column: str) -> str:
    row = effects[
        (effects["size"] == size) & (effects["factor"] == factor) & (effects["level"] == level)
        & (effects["bin"] == column)
    ]  # fmt: skip
    if row.empty:
        return "n/a"
    r = row.iloc[0]
    return _estimate_text(r["diff"], r["low"], r["high"], "+.4f")


def _position_effect_lines(effects: pd.DataFrame, labels: Mapping[str, str]) -> list[str]:
    """Where an effect confined to some positions holds across sizes: at how many sizes each
    position range's interval lies below or above zero (not counted by the judgement)."""
    parts = []
    extra = effects[effects["bin"] != "loss"]
    for (factor, level, column), rows in extra.groupby(["factor", "level", "bin"], sort=False):
        below, above = int((rows["high"] < 0).sum()), int((rows["low"] > 0).sum())
        if not below and not above:
            continue
        flops = rows[(rows["high"] < 0) | (rows["low"] > 0)]["train_flops"]
        span = f", spanning {flops.max() / flops.min():.3g}× compute" if len(flops) > 1 else ""
        parts.append(
            f"{factor} {level} − {rows['reference'].iloc[0]} at {labels.get(column, column)}: "
            f"below zero at {below} and above zero at {above} of {len(rows)} size(s){span}"
        )
    if not parts:
        return []
    return [
        "Effects confined to some positions: "
        + "; ".join(parts)
        + ". The judgement counts the loss over all positions only, so these inform but do not "
        "vote.",
        "",
    ]


def _context_summary_lines(
    data: LadderData,
    specs: Sequence[Mapping[str, Any]],
    rows: Sequence[Mapping[str, Any]],
    out: Path,
    csvs: list[Path],
) -> list[str]:
    """Across sizes: each long-range factor's main effect overall, at the first positions and
    at the last ones, whether a level is favoured, and the KV-cache each window level needs."""
    context = data.context
    lines = ["## Long context: windows and sinks", ""]
    if context is None:
        return [*lines, "No runs in the context sweeps.", ""]
    effects = ladder.context_effects(context)
    effects.to_csv(out / "context_effects.csv", index=False)
    csvs.append(out / "context_effects.csv")
    shapes = sorted({_context_spec_text(spec) for spec in specs})
    length = float(context["context_len"].max())
    columns = ["loss", *ladder.effect_columns(context)]
    labels = {column: _bin_label(column, length) for column in columns}
    first = labels.get(ladder.FIRST_COLUMN)
    last = next((labels[c] for c in columns if c.startswith(BIN_PREFIX)), None)
    lines += [
        f"Window × sinks at {', '.join(shapes)}, at {len(specs)} size(s), each at its own "
        "selected Muon rates. Each factor's main effect is the paired difference of each seed's "
        "test loss averaged over the other factor's levels [95% t-interval]; negative: the "
        "level has lower loss than the reference (all_full, no sinks)."
        + (f" The first positions ({first.removeprefix('positions ')}) are where a query has "
           "the fewest keys to attend "
           "to, and a sink the most to offer." if first else "")
        + (f" The last ones ({last}) are where a window cuts off the most context." if last
           else "")
        + " *Favoured* (over all positions, which is what the judgement counts): the level "
        "whose interval excludes zero (Holm over levels).",
        "",
    ]  # fmt: skip
    table = []
    favoured = {(r["factor"], r["size"]): r for r in rows if r["factor"] in CONTEXT_FACTORS}
    for size, runs in context.groupby("size", sort=False):
        for factor in CONTEXT_FACTORS:
            reference = ladder.CONTEXT_REFERENCE[factor]
            verdict = favoured.get((factor, size))
            for level in sorted(set(runs[factor].astype(str)) - {reference}):
                row = {
                    "size": str(size), "training FLOPs": f"{runs['train_flops'].mean():.3g}",
                    "effect": f"{factor}: {level} − {reference}",
                    **{labels[c]: _effect_text(effects, size, factor, level, c) for c in columns},
                    "favoured": "no level" if verdict is None or verdict["category"] != "favoured"
                    else verdict["favoured"],
                }  # fmt: skip
                table.append(row)
    kv = context.groupby(["size", "window"], sort=False)["kv_cache_bytes_at_context"].mean()
    kv_text = "; ".join(
        f"{size}: " + ", ".join(f"{w} {si(v)}" for w, v in group.droplevel(0).items())
        for size, group in kv.groupby(level=0, sort=False)
    )
    lines += [
        markdown_table(pd.DataFrame(table)),
        "",
        *_position_effect_lines(effects, labels),
        f"KV-cache bytes at the context length (bf16, all layers): {kv_text}.",
        "",
        "Per size, every arm's loss by position and its difference from all_full / none: "
        "[Long context by size](report.md#long-context-by-size).",
        "",
    ]
    largest = specs[-1]["size"]  # specs run in the ladder's order, smallest first
    if (out / "figures" / f"loss_by_position_{largest}.png").is_file():
        lines += [
            f"![Loss by position, {largest}](figures/loss_by_position_{largest}.png)",
            "",
            f"*{largest}, the largest size: test loss by token position per arm (mean over "
            "seeds), and each arm's difference from all_full / none.*",
            "",
        ]
    return lines


def _context_size_lines(
    data: LadderData, specs: Sequence[Mapping[str, Any]], out: Path, csvs: list[Path]
) -> list[str]:
    """Per context sweep: each arm's test loss overall and by position bin, its difference from
    all_full / none, the KV-cache bytes, and the loss-by-position figure."""
    lines = ["## Long context by size", ""]
    if data.context is None:
        return []
    lines += [
        f"Losses are test loss over seeds (mean [95% t-interval] with ≥{MIN_SEEDS_FOR_CI} seeds); "
        "bins are equal-width position ranges [lo, hi), and the first positions the first "
        f"1/{ladder.POSITION_BUCKETS} of the context (from per-position artifacts, where "
        "logged). KV-cache bytes: bf16, all layers, at the context length.",
        "",
    ]
    all_arms, all_diffs = [], []
    for spec in specs:
        context = data.context[data.context["size"] == spec["size"]]
        if context.empty:
            continue
        context = context.assign(arm=ladder.context_arm(context))
        arms, diffs = ladder.context_tables(context)
        all_arms.append(arms.assign(size=spec["size"]))
        all_diffs.append(diffs.assign(size=spec["size"]))
        bins = ladder.loss_columns(context)
        length = float(context["context_len"].max())

        def label(column: str, length: float = length) -> str:
            return _bin_label(column, length)

        lines += [
            f"### {spec['size']}",
            "",
            f"Sweep `{spec.get('sweep_id')}`: {_context_spec_text(spec)}; arms = window × sinks.",
            "",
            markdown_table(
                arms.assign(kv_cache_bytes_at_context=arms["kv_cache_bytes_at_context"].map(si))
                .rename(columns=label)
                .rename(columns={"kv_cache_bytes_at_context": "KV-cache bytes at context"})
            ),
            "",
        ]
        if diffs.empty:
            lines += ["No all_full / none arm (or no other arm): no differences computed.", ""]
        else:
            shown = diffs.assign(
                text=[_estimate_text(r.diff, r.low, r.high, "+.4f") for r in diffs.itertuples()]
            ).pivot(index="arm", columns="bin", values="text")[bins]
            how = ", ".join(sorted(set(diffs["how"])))
            lines += [
                f"Difference from all_full / none [95% t-interval; {how}]:",
                "",
                markdown_table(shown.rename(columns=label).reset_index()),
                "",
            ]
        curves = plots_ladder.position_curves(context, data.positions)
        source = "per-position artifacts"
        if curves.empty:
            curves = plots_ladder.bin_curves(context, ladder.bin_columns(context))
            source = "position-bin metrics"
        if not curves.empty:
            name = f"loss_by_position_{spec['size']}"
            plots_ladder.plot_loss_by_position(
                curves, source, out / "figures", spec.get("window"), name=name,
                title=f"{spec['size']}: test loss by position",
            )  # fmt: skip
            lines += [
                f"![Loss by position, {spec['size']}](figures/{name}.png) (from {source})",
                "",
            ]
    for frames, name in ((all_arms, "context_arms"), (all_diffs, "context_differences")):
        if frames:
            pd.concat(frames, ignore_index=True).to_csv(out / f"{name}.csv", index=False)
            csvs.append(out / f"{name}.csv")
    return lines


def _selection_notes(selections: pd.DataFrame) -> list[str]:
    """Which rates each optimizer tuned (a comparison is fair only if both tuned the same kinds),
    and any final choice that is still at its grid's edge (a bound, not an optimum)."""
    if selections.empty:
        return []
    tuned = selections.groupby("optimizer", sort=False)["rate"].unique()
    lines = [
        "Rates tuned: "
        + "; ".join(f"{opt}: {', '.join(f'`{r}`' for r in rates)}" for opt, rates in tuned.items())
        + ".",
        "",
    ]
    final = selections.groupby(["size", "optimizer", "rate"], sort=False).tail(1)
    edge = final[final["interior"] == False]  # noqa: E712 (None: not recorded)
    if not edge.empty:
        shown = ", ".join(
            f"{r.size} {r.optimizer} `{r.rate}` = {r.best:g}" for r in edge.itertuples()
        )
        lines += [
            f"**At a grid edge after every extension: {shown}.** The best rate lies beyond the "
            "grid, so that optimizer's loss at that size is an upper bound on its tuned loss.",
            "",
        ]
    return lines


def _split_lines(runs: pd.DataFrame) -> list[str]:
    """The held-out splits the numbers come from, and how much of them training has seen."""

    def one(column: str) -> float | None:
        if column not in runs:
            return None
        values = pd.to_numeric(runs[column], errors="coerce").dropna().unique()
        return float(values[0]) if len(values) == 1 else None

    tokens = [one(f"n_{split}_tokens") for split in ("train", "val", "test")]
    docs = [one("n_docs_val"), one("n_docs_test")]
    overlaps = [one(c) for c in ("val_train_overlap_32", "test_train_overlap_32")]
    if any(v is None for v in (*tokens, *docs, *overlaps)):
        return []  # runs that predate the test split, or splits that differ between runs
    n_train, n_val, n_test = (si(v) for v in tokens)
    val_train, test_train = overlaps
    test_val = one("test_val_overlap_32")
    return [
        f"**Data split.** Training {n_train} tokens; validation {n_val} tokens ({docs[0]:.0f} "
        f"documents), read only to select rates; test {n_test} tokens ({docs[1]:.0f} documents), "
        "read by every reported loss. Near-duplicate documents stay on one side. Of the 32-token "
        f"windows, {val_train:.2%} of validation's and {test_train:.2%} of test's occur verbatim "
        "in training"
        + (f", and {test_val:.2%} of test's in validation." if test_val is not None else "."),
        "",
    ]


def _unsettled_lines(unsettled: pd.DataFrame, losses: pd.DataFrame) -> list[str]:
    """Rates coordinate descent was still moving in its last round, beside the differences
    they might bear on."""
    if unsettled.empty:
        return []
    gaps = losses[losses["what"] == f"{MUON} − {ADAMW}"].set_index("size")["mean"]
    shown = "; ".join(
        f"{r.size} {r.optimizer} ({r.moved}; that round lowered its best selection loss by "
        f"{r.gain:.4f} nats, against a {MUON} − {ADAMW} difference of "
        f"{gaps.get(r.size, math.nan):+.4f})"
        for r in unsettled.itertuples()
    )
    return [
        f"**Rates still moving in the last selection round**: {shown}. Another round "
        "(`selection_rounds=`) might lower those losses again, most likely by less "
        "than the last round did; until then they are upper bounds on the tuned losses.",
        "",
    ]


def _size_sections(
    sizes: pd.DataFrame, selections: pd.DataFrame, losses: pd.DataFrame, unsettled: pd.DataFrame
) -> list[str]:
    shown = pd.DataFrame({
        "size": sizes["size"], "non-embedding params": sizes["non_embedding_params"].map(si),
        "tokens": sizes["tokens"].map(si),
        "tokens / param": sizes["tokens_per_param"].map(lambda v: f"{v:.3g}"),
        "training FLOPs": sizes["train_flops"].map(lambda v: f"{v:.3g}"),
        "context": sizes["context_len"].map(lambda v: "n/a" if math.isnan(v) else f"{v:.0f}"),
    })  # fmt: skip
    wide = losses.pivot(index="size", columns="what", values="text")
    seeds = losses[losses["seeds"] != ""].pivot(index="size", columns="what", values="seeds")
    wide = wide.join(seeds.add_suffix(" seeds")).loc[sizes["size"]].reset_index()
    return [
        "## Sizes",
        "",
        markdown_table(shown),
        "",
        "Training FLOPs = tokens × the model's forward + backward FLOPs per token; optimizer "
        "work (Muon's Newton–Schulz iterations) is not counted.",
        "",
        "## Learning rates (selection seed, validation loss; * = chosen)",
        "",
        markdown_table(selections) if not selections.empty else "No selection recorded.",
        "",
        *_selection_notes(selections),
        *_unsettled_lines(unsettled, losses),
        "## Test loss at each optimizer's own best rates",
        "",
        f"Mean over report seeds [95% t-interval, ≥{MIN_SEEDS_FOR_CI} seeds]; the difference "
        "is paired by seed where seeds are shared (else Welch).",
        "",
        markdown_table(wide),
        "",
    ]


def _figure_lines(data: LadderData, mult: SizeMultipliers | None, folder: Path) -> list[str]:
    plots_ladder.plot_loss_vs_compute(data.report, mult, folder)
    lines = [
        "## Figures",
        "",
        "![Loss vs compute](figures/loss_vs_compute.png)",
        "",
        "*Test loss against training compute; points are report seeds, lines the log-linear "
        "fits the multipliers are read from.*",
        "",
    ]
    if mult is not None:
        plots_ladder.plot_multiplier_vs_compute(mult, folder)
        lines += [
            "![Multiplier vs compute](figures/multiplier_vs_compute.png)",
            "",
            "*Compute AdamW needs to reach Muon's loss, per size with 95% intervals; the solid "
            "line is the fitted trend, the dashed line and band its extrapolation (not "
            "measured).*",
            "",
        ]
    return lines


def replication_sentence(sizes: pd.DataFrame, settings: JudgementSettings) -> str:
    """Whether the ladder's sizes could replicate a preference as the judgement rule requires."""
    flops = sizes["train_flops"].dropna()
    span = float(flops.max() / flops.min()) if len(flops) >= 2 else 1.0
    met = len(sizes) >= settings.min_sizes and span >= settings.min_compute_span
    have = f"this ladder has {len(sizes)} size(s) spanning {span:.3g}× training compute"
    need = f"{settings.min_sizes} sizes spanning ≥ {settings.min_compute_span:g}×"
    if not met:
        return (
            f"Replication condition **not met**: {have}; the rule needs {need}, so no effect "
            "measured on this ladder can add votes to a judgement."
        )
    return (
        f"Replication condition **met**: {have} (the rule needs {need}); an effect counts only "
        "where the same level is favoured at enough of those sizes (each factor's line says)."
    )


def _judgement_lines(
    data: LadderData, rows: Sequence[Mapping[str, Any]], sizes: pd.DataFrame, window: Any
) -> list[str]:
    """The judgement rule applied to each factor the ladder measured (``rows``: size_rows)."""
    settings = JudgementSettings()
    lines = ["## Judgement", "", rule_text(settings), "", replication_sentence(sizes, settings), ""]
    factors = list(dict.fromkeys(r["factor"] for r in rows))
    if not factors:
        return [*lines, "No factor was compared at any size: nothing to judge.", ""]
    evidence = load_evidence()
    for factor in factors:
        mine = [r for r in rows if r["factor"] == factor]
        runs = data.context if factor in CONTEXT_FACTORS else data.report
        tested = sorted(str(v) for v in runs[factor].dropna().unique()) if runs is not None else []
        # Window and sinks count only at a context long enough against the attention window.
        tokens = (mine[0]["window_tokens"] or window) if factor in CONTEXT_FACTORS else None
        here = replace(settings, window_tokens=int(tokens) if tokens else None)
        measured = [
            MeasuredSize(r["flops"], r["context_len"], r["favoured"], r["category"], r["size"])
            for r in mine
        ]
        verdict = judgement(factor, evidence, measured, here, tested)
        lines += [
            f"- **{factor}** (measured at {len(mine)} size(s): {', '.join(r['size'] for r in mine)};"
            f" levels run: {', '.join(tested)}): {verdict.text}.",
            f"  - Sensitivity: {verdict.sensitivity}.",
        ]
    return [*lines, ""]


def write_ladder_report(
    summary: dict, out: Path, tracking_uri: str | None = None, n_resamples: int = 1000
) -> Path:
    """Write ``<out>/ladder/report.md`` with its CSVs and figures; return the Markdown path."""
    data = ladder.load_ladder(summary, tracking_uri)
    folder = Path(out) / "ladder"
    (folder / "figures").mkdir(parents=True, exist_ok=True)
    sizes, selections = ladder.size_table(data), ladder.selection_table(data.sizes)
    losses = ladder.loss_table(data)
    mult = ladder.optimizer_multipliers(data, n_resamples)
    rows = ladder.size_rows(data)
    specs = context_sets(summary)
    tables = {"sizes": sizes, "selections": selections, "losses": losses,
              "replication": pd.DataFrame(rows)}  # fmt: skip
    if mult is not None:
        tables["multipliers"] = ladder.multiplier_frame(mult)
    csvs = []
    for name, frame in tables.items():
        frame.to_csv(folder / f"{name}.csv", index=False)
        csvs.append(folder / f"{name}.csv")
    wall, calls = summary.get("wall_s"), int(summary.get("calls", 1))
    lines = [
        f"# Scale ladder: {MUON} vs {ADAMW}",
        "",
        f"Experiment `{summary['experiment']}`; {len(sizes)} size(s)"
        + (f"; protocol wall time {wall / 60:.1f} min" if wall else "")
        + (f" over {calls} calls (resumed; protocol.json logs each)" if calls > 1 else "")
        + ". Rates were selected on validation loss with selection seeds; every loss below is "
        "TEST loss on report seeds unless a note says otherwise.",
        "",
        *(f"> {note}\n" for note in data.notes),
        *_size_sections(sizes, selections, losses, ladder.unsettled_selections(data.sizes)),
        *_split_lines(data.report),
        *_multiplier_section(mult, sizes),
        saturating_note(data, mult),
        "",
        *_anchor_lines(mult, sizes),
    ]
    if summary.get("reference_ladder"):
        budget, frame = ladder_budget.reference_section(summary, data, mult, folder, n_resamples)
        frame.to_csv(folder / "budget.csv", index=False)
        csvs.append(folder / "budget.csv")
        lines += budget
    lines += _figure_lines(data, mult, folder / "figures")
    by_size: list[str] = []
    if specs:
        by_size = _context_size_lines(data, specs, folder, csvs)  # writes the figures
        lines += _context_summary_lines(data, specs, rows, folder, csvs)
    replicated = replicated_lines(rows) or ["No factor was compared at any size."]
    lines += ["## Replicated?", "", *replicated, ""]
    window = specs[0].get("window") if specs else None
    lines += _judgement_lines(data, rows, sizes, window)
    lines += by_size
    lines += ["Tables: " + ", ".join(f"[{p.name}]({p.name})" for p in csvs), ""]
    path = folder / "report.md"
    path.write_text("\n".join(lines))
    return path
