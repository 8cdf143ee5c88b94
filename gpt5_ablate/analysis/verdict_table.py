"""The verdict table (Measured here | Public evidence | Judgement | Sensitivity), and the report
sections that show it and the public evidence behind it."""

from __future__ import annotations

import pandas as pd

from gpt5_ablate.analysis.evidence import UNDISCLOSED, EvidenceTable
from gpt5_ablate.analysis.judgement import rule_text, voters
from gpt5_ablate.analysis.pipeline import Analysis, GroupAnalysis
from gpt5_ablate.analysis.sections import markdown_table
from gpt5_ablate.analysis.stats import FACTORS
from gpt5_ablate.analysis.text import si
from gpt5_ablate.analysis.verdict import condition_text


def _scale_text(analysis: Analysis, group: GroupAnalysis) -> str:
    runs = group.verdict_runs
    models = ", ".join(sorted(runs["model"].dropna().astype(str).unique())) or "unknown preset"
    lr = (
        f"LR tuned per optimizer ({analysis.lr_selection})"
        if analysis.lr_selection
        else "LR tuned per arm"
        if analysis.tuned_lr
        else "LR untuned (shared lr_scale)"
    )
    return (
        f"measured at {models} ({si(runs['n_params'].median())} params, "
        f"{si(runs['budget_tokens'].median())} tokens, {si(group.train_flops)} FLOPs), {lr}"
    )


def measured_text(analysis: Analysis, factor: str) -> str:
    group = analysis.primary
    result = group.factor(factor)
    margin = analysis.settings.equivalence_margin
    if result is None:
        return "not varied in the analysed group"
    if result.category == "untestable":
        return f"untestable: {result.reason or 'no comparison'}"
    parts = [f"**{result.outcome_text(margin)}**"]
    for cell in result.used:
        for c in cell.comparisons:
            prefix = "" if not c.condition else f"{condition_text(c.condition)}: "
            doc = f", evaluation-noise doc-bootstrap {c.doc_ci.text()}" if c.doc_ci else ""
            parts.append(f"{prefix}{c.text()}{doc}")
    flagged = [check for check in result.interactions if check.material]
    if flagged:
        parts.append("interaction: " + "; ".join(check.text() for check in flagged))
    parts.append(_scale_text(analysis, group))
    sizes = analysis.measured.get(factor, [])
    if len(analysis.groups) > 1 and sizes:
        best = result.favoured or result.pooled.best
        same = [s for s in sizes if s.favoured == best]
        parts.append(f"{best} favoured at {len(same)}/{len(sizes)} sizes")
    return "; ".join(parts)


def verdict_frame(analysis: Analysis) -> pd.DataFrame:
    """One row per factor: Measured here | Public evidence | Judgement | Sensitivity.

    Factors the runs did not vary get a row too: their judgement rests on public evidence.
    """
    rows = []
    runs = analysis.primary.verdict_runs
    for name in FACTORS:
        result = analysis.primary.factor(name)
        if result is not None:
            tested = result.levels
            text = measured_text(analysis, name)
        else:
            everything = analysis.primary.runs
            tested = sorted(everything[name].dropna().astype(str).unique()) if name in runs else []
            if len(tested) > 1:
                kept = sorted(runs[name].dropna().astype(str).unique()) if name in runs else []
                lost = [level for level in tested if level not in kept]
                which = f"every {' and every '.join(lost)} arm is" if kept else "every arm is"
                text = (
                    f"no verdict: {which} within {analysis.settings.plateau_margin:g} nats of "
                    "the unigram loss (not past the plateau)"
                    + (f", leaving only {', '.join(kept)}" if kept else "")
                )
            else:
                text = f"not varied here (every run: {', '.join(tested) or 'n/a'})"
        judged = analysis.judge(name, tested)
        rows.append(
            {
                "Factor": name,
                "Measured here": text,
                "Public evidence": public_text(analysis.evidence, name),
                "Judgement": judged.text,
                "Sensitivity": judged.sensitivity,
            }
        )
    return pd.DataFrame(rows, columns=[*VERDICT_COLUMNS, "Sensitivity"])


VERDICT_COLUMNS = ["Factor", "Measured here", "Public evidence", "Judgement"]


def public_text(evidence: EvidenceTable, factor: str) -> str:
    """Every listed model's level for ``factor``, grouped by level: ``gqa: gpt-oss [1], ...``."""
    by_level: dict[str, list[str]] = {}
    rows = sorted(
        evidence.for_factor(factor), key=lambda r: evidence.models[r.model].released, reverse=True
    )
    for r in rows:
        by_level.setdefault(r.level, []).append(f"{r.model} {evidence.cite(r)}")
    ordered = sorted(by_level.items(), key=lambda item: -len(item[1]))
    return "; ".join(f"{level}: {', '.join(models)}" for level, models in ordered) or "none listed"


def verdict_section(analysis: Analysis) -> list[str]:
    frame = verdict_frame(analysis)
    consistent = "; ".join(
        f"{row.Factor}: {row.Judgement.split('; votes:')[0]}" for row in frame.itertuples()
    )
    return [
        "## Verdict",
        "",
        markdown_table(frame[VERDICT_COLUMNS]),
        "",
        f"**Judgement rule.** {rule_text(analysis.judgement_settings)}",
        "",
        f"**Most consistent with (judgement):** {consistent}.",
        "",
        "**Sensitivity** (the judgement at each weight of OpenAI's gpt-oss, and without the "
        "measured evidence; posterior share in brackets):",
        "",
        *[f"- {row.Factor}: {row.Sensitivity}" for row in frame.itertuples()],
        "",
        "*Measured here* gives the outcome (favoured / equivalent within the margin / "
        "inconclusive; conditional when an interaction is material), each comparison as "
        "best − other with its simultaneous interval (the one the outcome is read from), its "
        "TOST interval against the margin, Holm-adjusted p and TOST p (see "
        "[Statistics](#statistics-behind-the-verdict)), the document-level bootstrap interval "
        "(evaluation noise only: the trained models are held fixed; it does not enter the "
        "outcome) when the runs logged per-document losses, and the size, budget and LR tuning "
        "it was measured at. *Public evidence* gives every listed model's level, grouped by level; "
        "numbers refer to [Public evidence](#public-evidence).",
        "",
    ]


def evidence_section(analysis: Analysis) -> list[str]:
    evidence = analysis.evidence
    numbers = evidence.source_numbers()
    settings = analysis.judgement_settings
    voting = {m.name for m in voters(evidence, settings.cutoff)}
    factors = list(dict.fromkeys(r.factor for r in evidence.rows))
    grid = []
    for info in sorted(evidence.models.values(), key=lambda m: m.released, reverse=True):
        row: dict[str, str] = {
            "Model (flagship)": f"{info.name} ({info.flagship})",
            "Lab": info.lab,
            "Released": info.released.isoformat(),
            "Architecture family": info.architecture_family,
            "Votes": "yes" if info.name in voting else "no",
        }
        for factor in factors:
            found = evidence.row(info.name, factor)
            if found is None:
                row[factor] = UNDISCLOSED
                continue
            counted = evidence.harness_level(factor, found.level)
            shown = (
                found.level if counted in (found.level, None) else f"{found.level} (→ {counted})"
            )
            row[factor] = f"{shown} {evidence.cite(found)}"
        grid.append(row)
    claims = [
        {
            "Model": r.model,
            "Factor": r.factor,
            "Level": r.level,
            "What the source shows": r.claim,
            "Source": f"[{numbers[r.source]}]",
        }
        for r in evidence.rows
    ]
    sources = [
        f"{n}. {title}: <{url}>"
        for (title, url), n in zip(evidence.sources.values(), numbers.values(), strict=True)
    ]
    rules = [f"- **{factor}**: {text}" for factor, text in evidence.counting_rules.items()]
    return [
        "## Public evidence",
        "",
        "Shipped with the package (`gpt5_ablate/analysis/public_evidence.yaml`): every listed "
        "model has a level for every factor, read from its released config, reference code or "
        "paper, or `undisclosed` where none says. *Votes* marks each lab's latest model released "
        f"before GPT-5 ({settings.cutoff.isoformat()}), the ones the judgement counts. "
        "`level (→ x)` counts as the harness level x. Nothing is known about GPT-5 itself.",
        "",
        markdown_table(pd.DataFrame(grid)),
        "",
        "How levels count (levels with no exact harness counterpart, and model variants):",
        "",
        *rules,
        "",
        "<details><summary>What each source shows (one row per model and factor)</summary>",
        "",
        markdown_table(pd.DataFrame(claims)),
        "",
        "</details>",
        "",
        *sources,
        "",
    ]
