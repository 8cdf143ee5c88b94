"""Write the self-contained Markdown ablation report (report.md, figures and CSVs side by side)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from gpt5_ablate.analysis.load import ExperimentData
from gpt5_ablate.analysis.pipeline import Analysis, ReportSettings, analyse
from gpt5_ablate.analysis.plots import plot_all
from gpt5_ablate.analysis.sections import (
    arms_section,
    baseline_section,
    caveats_section,
    compute_section,
    lr_section,
    markdown_table,
    statistics_section,
)
from gpt5_ablate.analysis.verdict_table import evidence_section, verdict_frame, verdict_section

__all__ = ["markdown_table", "write_analysis", "write_report"]

FIGURE_TEXT: dict[str, tuple[str, str]] = {
    "val_loss_vs_tokens": (
        "Validation loss vs tokens seen",
        "One line per arm (seed mean of the periodic evaluations), band = min–max over seeds, "
        "diamond = full-split final loss, dashed line = unigram baseline.",
    ),
    "final_perplexity": (
        "Final perplexity per arm",
        "exp of the mean loss over seeds, with the loss interval mapped through exp (so it stays "
        "positive); arms with fewer than 3 seeds show their seeds instead of an interval.",
    ),
    "main_effects": (
        "Main effects",
        "Model-based marginal mean loss per level of each varied factor (averaged over the other "
        "factors' levels with equal weights), with unadjusted 95% intervals.",
    ),
    "interactions": (
        "Two-factor interactions",
        "Colour = interaction residual (cell − row mean − column mean + grand mean); 0 means the "
        "two factors' effects add up. Cells also print the mean loss.",
    ),
    "efficiency": (
        "Efficiency",
        "Validation loss against wall-clock time and against training FLOPs (tokens seen × "
        "FLOPs per token). Wall-clock depends on the hardware and on other jobs sharing it.",
    ),
    "kv_cache_vs_loss": (
        "KV-cache size vs validation loss",
        "Bytes of KV cache per generated token (bf16, all layers) against the loss: the "
        "serving-memory trade-off between MHA, GQA and MLA.",
    ),
}


def _header(analysis: Analysis, data: ExperimentData) -> list[str]:
    runs = analysis.selection.runs
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    excluded = (
        " Left out by status: "
        + ", ".join(f"{n} {s}" for s, n in sorted(data.excluded.items()))
        + "."
        if data.excluded
        else ""
    )
    commits = ", ".join(f"`{c}`" for c in sorted(runs["git_commit"].dropna().astype(str).unique()))
    lines = [
        f"# Ablation report: `{analysis.experiment}`",
        "",
        f"Generated {generated} from {data.source_text}: {analysis.selection.sweep}, "
        f"{len(runs)} run(s) in "
        f"{runs['arm'].nunique()} arm(s).{excluded} Git commits: {commits or 'n/a'}.",
        f"Varied factors: {', '.join(analysis.factors) or 'none'}. Compared on "
        f"{analysis.response_note} (nats/token; lower is better).",
        "",
    ]
    for warning in analysis.warnings:
        lines += [f"> **Warning.** {warning}", ""]
    for note in analysis.selection.notes:
        lines += [f"> **Note.** {note}", ""]
    return lines


NO_CURVES = (
    "Not drawn: these runs' metric histories are not available (the report was regenerated "
    "from an export of final values, which holds no learning curves)."
)


def _figures(analysis: Analysis, figures: dict[str, Path]) -> list[str]:
    lines = ["## Figures", ""]
    if len(analysis.groups) > 1:
        lines += [f"Figures show the primary group ({analysis.primary.label}).", ""]
    for stem, (title, caption) in FIGURE_TEXT.items():
        if stem == "main_effects" and not analysis.primary.fit.ok:
            caption = (
                "Seed-averaged mean loss per level of each varied factor (no model fit: "
                f"{analysis.primary.fit.reason}); intervals only where a level has 3 or more "
                "seeds, else none drawn."
            )
        if stem not in figures:
            if stem == "interactions":
                lines += [f"### {title}", "", "Needs at least two varied factors.", ""]
            if stem in ("val_loss_vs_tokens", "efficiency"):
                lines += [f"### {title}", "", NO_CURVES, ""]
            continue
        lines += [
            f"### {title}",
            "",
            f"![{title}]({stem}.png)",
            "",
            f"{caption} ([SVG]({stem}.svg))",
            "",
        ]
    return lines


def _method(analysis: Analysis) -> list[str]:
    settings = analysis.settings
    return [
        "## Method",
        "",
        (
            "- Runs were read from a plain-file export (`python -m gpt5_ablate.report "
            "source=<dir>`; see `gpt5_ablate/analysis/export.py`) that the MLflow runs were "
            "written to"
            if analysis.tracking_uri.startswith("export ")
            else "- Runs were read with `mlflow.search_runs` and `MlflowClient.get_metric_history`"
        )
        + "; only FINISHED runs are included unless `include_unfinished=true`; sweep parent runs are "
        f"skipped. Sweep: `{settings.sweep}`; runs of unlike model preset, budget or data are "
        + ("grouped separately." if settings.group_unlike else "left out (see warnings).")
        + " LR-selection runs (phase=select) are never compared with report runs.",
        "- The verdict's statistics: a sum-coded linear model (statsmodels OLS, or WLS with a "
        "variance per optimizer) with main effects, two-way interactions and a seed block; "
        "comparisons of every level with the best; Holm's correction over every difference and "
        f"TOST equivalence test (margin ±{settings.equivalence_margin:g}, α = {settings.alpha:g}), "
        "each outcome read from the Bonferroni simultaneous and TOST intervals shown; power from "
        "statsmodels' noncentral-t power; document-level paired bootstrap "
        f"({settings.bootstrap_samples} resamples; evaluation noise only, outside the outcome) "
        "where per-document losses were logged. Module docstrings in `gpt5_ablate/analysis/` "
        "give the details and references.",
        "- Files: `runs.csv` (analysed runs), `arms.csv`, `verdict.csv` (the three columns and "
        "each factor's sensitivity line), `comparisons.csv` (every test, with both intervals).",
        "",
    ]


def comparisons_frame(analysis: Analysis) -> pd.DataFrame:
    rows = []
    for group in analysis.groups:
        for c in group.verdicts.comparisons:
            rows.append(
                {
                    "group": group.label,
                    "factor": c.factor,
                    "condition": "; ".join(f"{f}={v}" for f, v in c.condition),
                    "level": c.level,
                    "reference": c.reference,
                    "effect": c.estimate,
                    "se": c.effect.se,
                    "df": c.effect.df,
                    "ci_low": c.ci[0],
                    "ci_high": c.ci[1],
                    "tost_ci_low": c.tost_ci[0],
                    "tost_ci_high": c.tost_ci[1],
                    "p": c.effect.p_value,
                    "p_holm": c.p_holm,
                    "tost_p": c.tost_p,
                    "tost_p_holm": c.tost_p_holm,
                    "doc_ci_low": c.doc_ci.low if c.doc_ci else None,
                    "doc_ci_high": c.doc_ci.high if c.doc_ci else None,
                }
            )
    return pd.DataFrame(rows)


def write_analysis(analysis: Analysis, data: ExperimentData, out_dir: str | Path) -> Path:
    """Write ``report.md`` plus figures (PNG + SVG) and CSV tables for a finished analysis."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    primary = analysis.primary
    marginal = primary.fit.marginal_table() if primary.fit.ok else None
    figures = plot_all(data.history, primary.runs, out, marginal=marginal)
    analysis.selection.runs.to_csv(out / "runs.csv", index=False)
    pd.concat([g.arms.assign(group=g.label) for g in analysis.groups]).to_csv(
        out / "arms.csv", index=False
    )
    verdict_frame(analysis).to_csv(out / "verdict.csv", index=False)
    comparisons_frame(analysis).to_csv(out / "comparisons.csv", index=False)
    lines = _header(analysis, data)
    lines += verdict_section(analysis)
    lines += baseline_section(analysis)
    lines += statistics_section(analysis)
    lines += caveats_section(analysis)
    lines += arms_section(analysis)
    lines += lr_section(analysis)
    lines += compute_section(analysis)
    lines += evidence_section(analysis)
    lines += _figures(analysis, figures)
    lines += _method(analysis)
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def write_report(
    data: ExperimentData, out_dir: str | Path, settings: ReportSettings | None = None
) -> Path:
    """Analyse ``data`` (see :func:`gpt5_ablate.analysis.pipeline.analyse`) and write the report."""
    return write_analysis(analyse(data, settings), data, out_dir)
