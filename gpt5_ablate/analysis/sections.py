"""The report's sections, each a list of Markdown lines built from an :class:`Analysis`."""

from __future__ import annotations

import math

import pandas as pd

from gpt5_ablate.analysis.evidence import JUDGEMENT_RULE
from gpt5_ablate.analysis.lr_grid import best_rates, lr_table
from gpt5_ablate.analysis.pipeline import Analysis, GroupAnalysis, verdict_frame
from gpt5_ablate.analysis.stats import MIN_SEEDS_FOR_CI, relative_spread
from gpt5_ablate.analysis.text import p_text, range_text, si
from gpt5_ablate.analysis.verdict import INTERACTION_SHARE, condition_text

#: Arms whose parameter counts and training FLOPs agree within this fraction count as matched.
COMPUTE_MATCH_TOLERANCE = 0.05
#: Rough compute-optimal data budget (tokens per parameter, Hoffmann et al. 2022), for context.
CHINCHILLA_TOKENS_PER_PARAM = 20


def _escape(cell: object) -> str:
    text = "" if cell is None or (isinstance(cell, float) and math.isnan(cell)) else str(cell)
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (pandas' to_markdown would need `tabulate`)."""
    header = "| " + " | ".join(_escape(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(_escape(v) for v in row) + " |" for row in frame.to_numpy()]
    return "\n".join([header, rule, *body])


def _interval(mean: float, low: float, high: float, seeds: str, digits: int = 3) -> str:
    if math.isnan(mean):
        return "n/a"
    if math.isnan(low):
        return f"{mean:.{digits}f} (seeds: {seeds}; no CI below {MIN_SEEDS_FOR_CI} seeds)"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def verdict_section(analysis: Analysis) -> list[str]:
    frame = verdict_frame(analysis)
    consistent = "; ".join(f"{row.Factor}: {row.Judgement}" for row in frame.itertuples())
    return [
        "## Verdict",
        "",
        markdown_table(frame),
        "",
        f"**Judgement rule.** {JUDGEMENT_RULE}",
        "",
        f"**Most consistent with (judgement):** {consistent}.",
        "",
        "*Measured here* gives the outcome (favoured / equivalent within the margin / "
        "inconclusive; conditional when an interaction is material), each comparison as "
        "best − other with its simultaneous interval, Holm-adjusted p and TOST p (see "
        "[Statistics](#statistics-behind-the-verdict)), the document-level bootstrap interval "
        "when the runs logged per-document losses, and the size, budget and LR tuning it was "
        "measured at. *Public evidence* numbers refer to [Public evidence](#public-evidence).",
        "",
    ]


def _group_statistics(analysis: Analysis, group: GroupAnalysis) -> list[str]:
    fit, verdicts = group.fit, group.verdicts
    margin = analysis.settings.equivalence_margin
    lines = [f"### {group.label}", ""]
    if not fit.ok:
        return [*lines, f"No model could be fitted: {fit.reason}.", ""]
    terms = ["main effects of " + ", ".join(fit.factors)]
    if fit.interactions:
        terms.append("interactions " + ", ".join(f"{a} × {b}" for a, b in fit.interactions))
    if len(fit.seed_levels) > 1:
        terms.append(f"a seed block ({len(fit.seed_levels)} seeds)")
    lines.append(
        f"Model: {fit.method}, sum-coded, with {'; '.join(terms)}; {fit.n_obs} runs, "
        f"{fit.df_resid:g} residual df."
        + (f" Not estimable: {'; '.join(fit.omitted)}." if fit.omitted else "")
    )
    if fit.group_variance:
        variances = ", ".join(f"{g}: {math.sqrt(v):.3f}" for g, v in fit.group_variance.items())
        lines.append(f"Residual sd per optimizer (weights = 1/variance): {variances}.")
    lines += [
        "",
        f"Holm family: {verdicts.n_tests} tests (each comparison's difference test and its "
        f"TOST at ±{margin:g}), α = {verdicts.alpha:g}; intervals are simultaneous at "
        f"{1 - verdicts.alpha / max(verdicts.n_tests, 1):.4g} (Bonferroni).",
        "",
    ]
    rows = []
    for result in verdicts.factors:
        for cell in result.used:
            for c in cell.comparisons:
                rows.append(
                    {
                        "Factor": result.factor,
                        "Condition": condition_text(c.condition),
                        "Comparison": f"{c.level} − {c.reference}",
                        "Effect": f"{c.estimate:+.4f}",
                        "Simultaneous CI": f"[{c.ci[0]:+.4f}, {c.ci[1]:+.4f}]",
                        "se (df)": f"{c.effect.se:.4f} ({c.effect.df:g})",
                        "p (Holm)": p_text(c.p_holm),
                        "TOST p (Holm)": p_text(c.tost_p_holm),
                        "Doc-bootstrap 95% CI": c.doc_ci.text() if c.doc_ci else "n/a",
                        "Outcome": cell.label(margin),
                    }
                )
    if rows:
        lines += [markdown_table(pd.DataFrame(rows)), ""]
    checks = [c for result in verdicts.factors for c in result.interactions]
    if checks:
        lines += [
            "Interaction checks (material: F-test p < α unadjusted, or a conditional effect "
            f"moving, less one standard error, by more than {INTERACTION_SHARE:g}× the pooled "
            f"effect and more than {margin / 2:g}):",
            "",
            markdown_table(
                pd.DataFrame(
                    {
                        "Factor": [c.factor for c in checks],
                        "With": [c.other for c in checks],
                        "F-test p": [p_text(c.f_pvalue) for c in checks],
                        "Largest move of a conditional effect": [f"{c.move:.4f}" for c in checks],
                        "Less 1 se": [f"{max(c.size, 0.0):.4f}" for c in checks],
                        "Pooled |effect|": [f"{c.pooled:.4f}" for c in checks],
                        "Material": ["**yes**" if c.material else "no" for c in checks],
                    }
                )
            ),
            "",
        ]
    lines += ["Power (from the observed residual noise, at the Holm family's strictest level):", ""]
    lines += [f"- **{r.factor}**: {r.power.text()}" for r in verdicts.factors if r.power]
    return [*lines, ""]


def statistics_section(analysis: Analysis) -> list[str]:
    lines = [
        "## Statistics behind the verdict",
        "",
        "**Unit of replication.** The observation is one training run; the replicate is a seed. "
        "Runs with the same seed share the training-data order (the block loader's permutation "
        "depends on the seed alone) and the seed-derived initialisation, so within a comparable "
        "group the model treats the seed as a block: every comparison is made within seeds, "
        "like a paired test, and its degrees of freedom come from the residual, not from "
        "counting (context, seed) pairs as if they were independent. Runs at different model "
        "presets, token budgets or data are never paired.",
        "",
        f"**Compared value.** {analysis.response_note}.",
        "",
    ]
    for group in analysis.groups:
        lines += _group_statistics(analysis, group)
        lines += [f"- {note}" for note in group.notes]
        lines += [""] if group.notes else []
    return lines


def baseline_section(analysis: Analysis) -> list[str]:
    lines = ["## Baselines", ""]
    for group in analysis.groups:
        unigram = pd.to_numeric(group.runs.get("unigram_val_loss"), errors="coerce").dropna()
        if unigram.empty:
            lines.append(f"- {group.label}: no unigram baseline was logged (older runs).")
            continue
        lines.append(
            f"- {group.label}: unigram loss (a model that ignores context) "
            f"{range_text(unigram, lambda v: f'{v:.3f}')} nats/token; best arm "
            f"{group.arms['loss'].min():.3f}. Arms within "
            f"{analysis.settings.plateau_margin:g} nats of it are *not past the unigram "
            "plateau* and kept out of the verdict"
            + (f": {', '.join(group.plateau)}." if group.plateau else " (none here).")
        )
    return [*lines, ""]


def arms_section(analysis: Analysis) -> list[str]:
    lines = ["## Arms", ""]
    for group in analysis.groups:
        arms = group.arms
        gap = arms["unigram_val_loss"] - arms["loss"]
        table = pd.DataFrame(
            {
                "Arm": arms["arm"],
                "Seeds": arms["n_seeds"],
                "lr_scale": arms["lr_scale"].map(lambda v: f"{v:g}" if isinstance(v, float) else v),
                "Params": arms["n_params"].map(si),
                "Tokens": arms["tokens_seen"].map(si),
                "Train FLOPs": arms["train_flops"].map(si),
                "KV bytes/token": arms["kv_cache_bytes_per_token"].map(si),
                "Wall time (s)": arms["wall_time_s"].map(lambda s: f"{s:.3g}"),
                "Loss (95% CI)": [
                    _interval(r.loss, r.loss_ci_low, r.loss_ci_high, r.seed_values)
                    for r in arms.itertuples()
                ],
                "Perplexity (exp of loss CI)": [
                    _interval(
                        r.perplexity,
                        r.perplexity_ci_low,
                        r.perplexity_ci_high,
                        ", ".join(
                            f"{math.exp(float(v)):.2f}" for v in r.seed_values.split(", ") if v
                        ),
                        2,
                    )
                    for r in arms.itertuples()
                ],
                "Below unigram by": [
                    "n/a"
                    if math.isnan(g)
                    else f"{g:.3f}"
                    + (" (not past the unigram plateau)" if a in group.plateau else "")
                    for g, a in zip(gap, arms["arm"], strict=True)
                ],
            }
        )
        lines += [f"### {group.label}", "", markdown_table(table), ""]
    return lines


def lr_section(analysis: Analysis) -> list[str]:
    group, select = analysis.primary, analysis.selection.select_runs
    if not group.lr.swept and select.empty:
        return []
    lines = ["## Learning-rate selection", ""]
    if group.lr.swept:
        lines += [
            "Each arm is compared at its own best `lr_scale` (lowest mean loss over seeds); runs "
            "at other scales are left out of every table and figure. Choosing on the same seeds "
            "biases each arm's loss slightly downward.",
            "",
        ]
        choices = best_rates(group.lr.table.rename(columns={"lr_scale": "rate"}))
        lines += [f"- {c.arm}: best lr_scale {c.text()}" for c in choices]
        lines.append("")
        full = group.lr.table
        lines += [
            markdown_table(
                pd.DataFrame(
                    {
                        "Arm": full["arm"],
                        "lr_scale": full["lr_scale"].map(lambda v: f"{v:g}"),
                        "Mean loss": full["mean"].map(lambda v: f"{v:.4f}"),
                        "Seeds": full["n_seeds"],
                        "Chosen": full["chosen"].map(lambda c: "**yes**" if c else ""),
                    }
                )
            ),
            "",
        ]
    if not select.empty:
        metric = analysis.response if analysis.response in select else "final_val_loss"
        choices = best_rates(lr_table(select, metric))
        lines += [
            "LR-selection runs (phase=select; never compared with the report runs): best rate "
            "per arm, and whether it is interior to the grid:",
            "",
            *[f"- {c.arm}: {c.text()}" for c in choices],
            "",
        ]
    return lines


def compute_section(analysis: Analysis) -> list[str]:
    if not analysis.multipliers:
        return []
    return [
        "## Compute multiplier",
        "",
        "Across the analysed sizes, each level's loss is fitted as a line in log10 training "
        "compute (FLOPs = flops_per_token × tokens); the multiplier is how much more compute the "
        "worse level needs to reach the better level's loss, at the geometric-mean compute, "
        "with a bootstrap interval over runs.",
        "",
        *[f"- {m.text()}" for m in analysis.multipliers],
        "",
    ]


def evidence_section(analysis: Analysis) -> list[str]:
    evidence = analysis.evidence
    numbers = evidence.source_numbers()
    rows = [
        {
            "Model": r.model,
            "Factor": r.factor,
            "Level": r.level,
            "Claim (as the source states it)": r.claim,
            "Source": f"[{numbers[r.source]}]",
        }
        for r in evidence.rows
    ]
    sources = [
        f"{n}. {title}: <{url}>"
        for (title, url), n in zip(evidence.sources.values(), numbers.values(), strict=True)
    ]
    return [
        "## Public evidence",
        "",
        "Shipped with the package (`gpt5_ablate/analysis/public_evidence.yaml`): one row per open "
        "model and factor level, only facts the source states. Nothing is known about GPT-5 "
        "itself.",
        "",
        markdown_table(pd.DataFrame(rows)),
        "",
        *sources,
        "",
    ]


def caveats_section(analysis: Analysis) -> list[str]:
    group = analysis.primary
    runs, arms = group.verdict_runs, group.arms
    items = []
    tokens_per_param = runs["tokens_seen"] / runs["n_params"]
    items.append(
        f"**Scale.** {group.label}: {range_text(runs['n_params'])} parameters, "
        f"{range_text(runs['tokens_seen'])} tokens each "
        f"({range_text(tokens_per_param, lambda v: f'{v:.3g}')} tokens per parameter; "
        f"compute-optimal training uses roughly {CHINCHILLA_TOKENS_PER_PARAM}). Effects at this "
        "scale can shrink, vanish or reverse in large models trained far longer."
    )
    seeds = arms["n_seeds"]
    items.append(
        f"**Seeds.** {range_text(seeds, lambda v: f'{v:g}')} seed(s) per arm; arm intervals need "
        f"{MIN_SEEDS_FOR_CI} seeds, and the verdict's precision is in the power lines."
    )
    spreads = [relative_spread(arms["n_params"]), relative_spread(arms["train_flops"])]
    if all(math.isnan(s) for s in spreads):
        matched = "Parameter counts and FLOPs were not logged, so compute matching is unknown."
    elif max(s for s in spreads if not math.isnan(s)) <= COMPUTE_MATCH_TOLERANCE:
        matched = f"Arms are compute-matched (parameters within {spreads[0]:.1%}, FLOPs within {spreads[1]:.1%})."
    else:
        matched = (
            f"Arms are **not** compute-matched: parameter counts differ by up to {spreads[0]:.1%} "
            f"and training FLOPs by up to {spreads[1]:.1%}; part of a loss gap can come from that."
        )
    items.append(f"**Compute.** {matched}")
    items.append(
        "**Learning rate.** "
        + (
            f"Tuned per optimizer, {analysis.lr_selection} (the protocol's selection stage); the "
            "arms of a design share their optimizer's rate."
            if analysis.lr_selection
            else "Tuned per arm (see the learning-rate section)."
            if analysis.tuned_lr
            else "Untuned: every arm at the same lr_scale; an arm whose best rate differs is at a disadvantage."
        )
    )
    column = "val_train_overlap_32"
    overlap = pd.to_numeric(runs[column], errors="coerce").dropna() if column in runs else []
    if len(overlap):
        items.append(
            f"**Train/validation overlap.** The runs log `data.val_train_overlap_32` = "
            f"{range_text(overlap, lambda v: f'{v:.3g}')} (the training side's measure of "
            "32-token spans shared by the validation and training splits); overlap flatters "
            "memorising arms."
        )
    items.append(
        "**GPT-5.** OpenAI has not published GPT-5's architecture or training recipe; the "
        "judgement says which design it is *most consistent with*, never what it contains."
    )
    return ["## Caveats", "", *[f"- {item}" for item in items], ""]
