"""Write the self-contained Markdown ablation report (report.md, figures and CSVs side by side)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from gpt5_ablate.analysis.load import ExperimentData
from gpt5_ablate.analysis.plots import plot_all
from gpt5_ablate.analysis.stats import (
    FactorVerdict,
    LrSelection,
    arm_summary,
    comparisons_frame,
    factor_verdicts,
    interaction_table,
    relative_spread,
    select_best_lr,
    varied_factors,
)

#: Arms whose parameter counts and training FLOPs agree within this fraction count as matched.
COMPUTE_MATCH_TOLERANCE = 0.05

#: Rough compute-optimal data budget (tokens per parameter, Hoffmann et al. 2022), for context.
CHINCHILLA_TOKENS_PER_PARAM = 20

FIGURE_TEXT: dict[str, tuple[str, str]] = {
    "val_loss_vs_tokens": (
        "Validation loss vs tokens seen",
        "One line per arm (mean over seeds), shaded band = min–max over seeds.",
    ),
    "final_perplexity": (
        "Final validation perplexity per arm",
        "exp of the mean final loss over seeds, with the 95% t-interval of the loss mapped through exp (so it stays positive); arms with a single seed have no interval.",
    ),
    "main_effects": (
        "Main effects",
        "Mean final validation loss per level of each varied factor, averaged over the other "
        "factors; error bars are 95% t-intervals over seeds (per-seed marginal means).",
    ),
    "interactions": (
        "Two-factor interactions",
        "Colour = interaction residual (cell − row mean − column mean + grand mean) of the final "
        "validation loss; 0 means the two factors' effects add up. Cells also print the mean loss.",
    ),
    "efficiency": (
        "Efficiency",
        "Validation loss against wall-clock time and against training FLOPs (tokens seen × "
        "FLOPs per token). Wall-clock depends on the hardware and on other jobs sharing it.",
    ),
    "kv_cache_vs_loss": (
        "KV-cache size vs validation loss",
        "Bytes of KV cache per generated token (bf16, all layers) against final validation "
        "loss: the serving-memory trade-off between MHA, GQA and MLA.",
    ),
}


def _escape(cell: object) -> str:
    text = "" if cell is None or (isinstance(cell, float) and math.isnan(cell)) else str(cell)
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (pandas' to_markdown would need `tabulate`)."""
    header = "| " + " | ".join(_escape(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(_escape(v) for v in row) + " |" for row in frame.to_numpy()]
    return "\n".join([header, rule, *body])


def _si(value: float, digits: int = 3) -> str:
    """1234567 -> '1.23M'; keeps big counts (params, tokens, FLOPs) readable."""
    if value is None or math.isnan(value):
        return "n/a"
    for threshold, suffix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= threshold:
            return f"{value / threshold:.{digits}g}{suffix}"
    return f"{value:.{digits}g}"


def _range_text(values: pd.Series, fmt=_si) -> str:
    data = pd.to_numeric(values, errors="coerce").dropna()
    if data.empty:
        return "n/a"
    low, high = data.min(), data.max()
    return fmt(low) if low == high else f"{fmt(low)}–{fmt(high)}"


def _ci_text(mean: float, low: float, high: float, digits: int = 3) -> str:
    if math.isnan(mean):
        return "n/a"
    if math.isnan(low):
        return f"{mean:.{digits}f} (no CI)"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def verdict_markdown(verdicts: Sequence[FactorVerdict]) -> str:
    """The verdict table: one row per varied factor."""
    rows = []
    for v in verdicts:
        rows.append(
            {
                "Factor": v.factor,
                "Levels": ", ".join(v.levels),
                "Better level": f"**{v.better_level}**",
                "Effect on val loss, better − other (95% CI)": "; ".join(
                    f"vs {e.reference}: {e.interval.format(signed=True)}" for e in v.comparisons
                ),
                "Pairs": ", ".join(str(e.interval.n) for e in v.comparisons),
                "Method": ", ".join(sorted({e.method for e in v.comparisons})),
                "CI excludes 0": v.ci_status,
                "Most likely GPT-5 choice": v.gpt5_choice,
            }
        )
    return markdown_table(pd.DataFrame(rows))


def _arms_markdown(arms: pd.DataFrame) -> str:
    table = pd.DataFrame(
        {
            "Arm": arms["arm"],
            "Seeds": arms["n_seeds"],
            "lr_scale": arms["lr_scale"].map(lambda v: f"{v:g}" if isinstance(v, float) else v),
            "Params": arms["n_params"].map(_si),
            "FLOPs/token": arms["flops_per_token"].map(_si),
            "Tokens": arms["tokens_seen"].map(_si),
            "Train FLOPs": arms["train_flops"].map(_si),
            "KV bytes/token": arms["kv_cache_bytes_per_token"].map(_si),
            "Wall time (s)": arms["wall_time_s"].map(lambda s: f"{s:.3g}"),
            "Final val loss (95% CI)": [
                _ci_text(m, lo, hi)
                for m, lo, hi in arms[
                    ["final_val_loss", "final_val_loss_ci_low", "final_val_loss_ci_high"]
                ].to_numpy()
            ],
            "Final val ppl (95% CI)": [
                _ci_text(m, lo, hi, 2)
                for m, lo, hi in arms[
                    [
                        "final_val_perplexity",
                        "final_val_perplexity_ci_low",
                        "final_val_perplexity_ci_high",
                    ]
                ].to_numpy()
            ],
        }
    )
    return markdown_table(table)


def _lr_markdown(selection: LrSelection, metric: str) -> str:
    table = selection.table.sort_values(["arm", "lr_scale"])
    return markdown_table(
        pd.DataFrame(
            {
                "Arm": table["arm"],
                "lr_scale": table["lr_scale"].map(lambda v: f"{v:g}"),
                f"Mean {metric} over seeds": table["mean"].map(lambda v: f"{v:.4f}"),
                "Seeds": table["n_seeds"],
                "Chosen": table["chosen"].map(lambda c: "**yes**" if c else ""),
            }
        )
    )


def _interactions_markdown(runs: pd.DataFrame, metric: str) -> str:
    rows = []
    for a, b in itertools.combinations(varied_factors(runs), 2):
        _, residual = interaction_table(runs, a, b, metric)
        stacked = residual.stack()
        where = stacked.abs().idxmax()
        rows.append(
            {
                "Factors": f"{a} × {b}",
                "Largest |residual| (nats/token)": f"{abs(stacked[where]):.4f}",
                "At": f"{a}={where[0]}, {b}={where[1]}",
            }
        )
    return markdown_table(pd.DataFrame(rows)) if rows else ""


def _caveats(
    data: ExperimentData, runs: pd.DataFrame, arms: pd.DataFrame, selection: LrSelection
) -> list[str]:
    items: list[str] = []
    models = ", ".join(sorted(runs["model"].dropna().astype(str).unique())) or "unknown"
    tokens_per_param = runs["tokens_seen"] / runs["n_params"]
    items.append(
        f"**Scale.** Model preset(s) {models} with {_range_text(runs['n_params'])} parameters "
        f"({_range_text(runs['n_params_non_embedding'])} non-embedding), trained on "
        f"{_range_text(runs['tokens_seen'])} tokens each "
        f"({_range_text(tokens_per_param, lambda v: f'{v:.2g}')} tokens per parameter; "
        f"compute-optimal training uses roughly {CHINCHILLA_TOKENS_PER_PARAM}). Effects at this "
        "scale can shrink, vanish or reverse in large models trained far longer."
    )
    seeds = arms["n_seeds"]
    seed_text = f"{int(seeds.min())}" if seeds.min() == seeds.max() else _range_text(seeds)
    items.append(
        f"**Seeds.** {seed_text} seed(s) per arm. Intervals use the t distribution over matched "
        "pairs, so with few pairs they are wide; a single pair gives no interval at all."
    )
    param_spread = relative_spread(arms["n_params"])
    flops_spread = relative_spread(arms["train_flops"])
    spreads = [s for s in (param_spread, flops_spread) if not math.isnan(s)]
    if not spreads:
        matched = "Parameter counts and FLOPs were not logged, so compute matching is unknown."
    elif max(spreads) <= COMPUTE_MATCH_TOLERANCE:
        matched = (
            f"Arms are compute-matched: parameter counts differ by at most "
            f"{param_spread:.1%} and training FLOPs by at most {flops_spread:.1%}."
        )
    else:
        matched = (
            f"Arms are **not** compute-matched: parameter counts differ by up to "
            f"{param_spread:.1%} and training FLOPs by up to {flops_spread:.1%} (same token "
            "budget, different per-token cost). Part of a loss gap can come from the extra "
            "parameters or FLOPs; see the arm table and the efficiency plot."
        )
    items.append(f"**Compute.** {matched}")
    if selection.swept:
        items.append(
            "**Learning rate.** An LR sweep is present: each arm is compared at its own best "
            "`lr_scale` (lowest seed-averaged final validation loss); the selection is listed "
            "below. Choosing the best of several LRs on the same validation set biases each arm's "
            "loss slightly downward, equally for all arms."
        )
    else:
        scales = ", ".join(f"{v:g}" for v in sorted(runs["lr_scale"].dropna().unique()))
        items.append(
            f"**Learning rate.** No LR sweep (lr_scale = {scales} for every arm): an arm whose "
            "best learning rate differs from the shared default is at a disadvantage."
        )
    n_factors = len(varied_factors(runs))
    if n_factors > 1:
        items.append(
            f"**Multiple comparisons.** {n_factors} factors are each tested at 95% without "
            "correction; expect about one spurious 'CI excludes 0' in twenty comparisons."
        )
    if data.excluded:
        excluded = ", ".join(f"{n} {status}" for status, n in sorted(data.excluded.items()))
        items.append(
            f"**Excluded runs.** {excluded} run(s) were left out (only FINISHED runs are "
            "analysed). If failures cluster in one arm (e.g. divergence), that arm looks better "
            "than it is."
        )
    items.append(
        "**GPT-5.** OpenAI has not published GPT-5's architecture or training recipe. The "
        "'most likely GPT-5 choice' column states which level *these runs* favour and whether "
        "the evidence is conclusive; it is an inference from small-scale ablations, not a fact "
        "about GPT-5."
    )
    return items


def write_report(
    data: ExperimentData,
    out_dir: str | Path,
    metric: str = "final_val_loss",
) -> Path:
    """Write ``report.md`` plus figures (PNG + SVG) and CSV tables into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    selection = select_best_lr(data.runs, metric)
    runs = selection.runs
    verdicts = factor_verdicts(runs, metric)
    arms = arm_summary(runs)
    figures = plot_all(data.history, runs, out)

    runs.to_csv(out / "runs.csv", index=False)
    arms.to_csv(out / "arms.csv", index=False)
    comparisons_frame(verdicts).to_csv(out / "verdict.csv", index=False)
    if selection.swept:
        selection.table.to_csv(out / "lr_selection.csv", index=False)

    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    excluded = (
        " (left out: " + ", ".join(f"{n} {s}" for s, n in sorted(data.excluded.items())) + ")"
        if data.excluded
        else ""
    )
    sweeps = ", ".join(f"`{s}`" for s in sorted(runs["sweep_id"].dropna().astype(str).unique()))
    commits = ", ".join(f"`{c}`" for c in sorted(runs["git_commit"].dropna().astype(str).unique()))
    factors = varied_factors(runs)

    lines: list[str] = [
        f"# Ablation report: `{data.experiment}`",
        "",
        f"Generated {generated} from MLflow experiment `{data.experiment}` at "
        f"`{data.tracking_uri}`: {len(runs)} run(s) in {len(arms)} arm(s){excluded}.",
        f"Sweep ids: {sweeps or 'n/a'}. Git commits: {commits or 'n/a'}.",
        f"Varied factors: {', '.join(factors) or 'none'}. Compared on `{metric}` "
        "(validation cross-entropy, nats/token; lower is better).",
        "",
        "## Verdict",
        "",
    ]
    if verdicts:
        lines += [
            verdict_markdown(verdicts),
            "",
            "Effect = mean over matched pairs of (loss with the better level − loss with the other "
            "level); pairs differ only in this factor (same other factors, model and seed). "
            "Negative means the better level lowers the loss. 95% CI = mean ± "
            "t(0.975, n−1)·sd/√n. The GPT-5 column is computed: the better level when its CI "
            "excludes 0 against every alternative, otherwise 'inconclusive at this scale'.",
            "",
            "**Most likely GPT-5 choices, as these runs indicate:** "
            + "; ".join(f"{v.factor}: {v.gpt5_choice}" for v in verdicts)
            + ".",
        ]
    else:
        lines.append("No factor varies across these runs, so there is nothing to compare.")
    lines += ["", "## Caveats", ""]
    lines += [f"- {item}" for item in _caveats(data, runs, arms, selection)]
    lines += ["", "## Arms", "", _arms_markdown(arms), ""]
    if selection.swept:
        lines += [
            "## Learning-rate selection",
            "",
            "Each arm is compared at its own best `lr_scale` (lowest mean final validation loss "
            "over seeds); the runs at other scales are left out of every table and figure above "
            "and below.",
            "",
            _lr_markdown(selection, metric),
            "",
        ]
    lines += ["## Figures", ""]
    for stem, (title, caption) in FIGURE_TEXT.items():
        if stem not in figures:
            if stem == "interactions":
                lines += [f"### {title}", "", "Needs at least two varied factors.", ""]
            continue
        lines += [
            f"### {title}",
            "",
            f"![{title}]({stem}.png)",
            "",
            f"{caption} ([SVG]({stem}.svg))",
            "",
        ]
        if stem == "interactions":
            table = _interactions_markdown(runs, metric)
            if table:
                lines += [table, ""]
    lines += [
        "## Method",
        "",
        "- Runs were read with `mlflow.search_runs` and `MlflowClient.get_metric_history`; only "
        "FINISHED runs are included unless `include_unfinished=true`. Sweep parent runs "
        "(bookkeeping runs that group a multirun) are skipped.",
        "- *Final* = the value at the last evaluation step; *best* = minimum loss/perplexity or "
        "maximum accuracy over evaluations. Tokens seen = step × tokens_per_step; training "
        "FLOPs = tokens seen × flops_per_token.",
        "- Factor effects pair runs that differ only in that factor; when no such pairs exist "
        "the level means are compared with a Welch interval instead (marked in the table).",
        "- For a factor with more than two levels, the better level is the one with the lowest "
        "mean, and every other level is compared against it.",
        "- Files: `runs.csv` (one row per analysed run), `arms.csv`, `verdict.csv`"
        + (", `lr_selection.csv`" if selection.swept else "")
        + ".",
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
