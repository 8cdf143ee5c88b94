"""The report's sections, each a list of Markdown lines built from an :class:`Analysis`."""

from __future__ import annotations

import math

import pandas as pd

from gpt5_ablate.analysis.lr_grid import best_rates, lr_table
from gpt5_ablate.analysis.pipeline import Analysis, GroupAnalysis
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
        f"TOST at ±{margin:g}), α = {verdicts.alpha:g}. Intervals are simultaneous at "
        f"{1 - verdicts.alpha / max(verdicts.n_tests, 1):.4g} (Bonferroni) and TOST intervals at "
        f"{1 - 2 * verdicts.alpha / max(verdicts.n_tests, 1):.4g}; the outcome is read from "
        "them: *favoured* only when the simultaneous interval lies below 0, *equivalent* only "
        f"when the TOST interval lies inside ±{margin:g}. The document bootstrap holds the "
        "trained models fixed, so it measures evaluation noise only and never enters the outcome.",
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
                        "TOST interval": f"[{c.tost_ci[0]:+.4f}, {c.tost_ci[1]:+.4f}]",
                        "se (df)": f"{c.effect.se:.4f} ({c.effect.df:g})",
                        "p (Holm)": p_text(c.p_holm),
                        "TOST p (Holm)": p_text(c.tost_p_holm),
                        "Doc-bootstrap 95% CI (evaluation noise only)": c.doc_ci.text()
                        if c.doc_ci
                        else "n/a",
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
                "Non-emb. params (active)": [
                    _params_text(total, active)
                    for total, active in zip(
                        arms["n_params_non_embedding"],
                        arms["n_params_non_embedding_active"],
                        strict=True,
                    )
                ],
                "Tokens": arms["tokens_seen"].map(si),
                "Train FLOPs": arms["train_flops"].map(si),
                "KV bytes/token": arms["kv_cache_bytes_per_token"].map(si),
                "Train time (s)": arms["wall_time_s"].map(lambda s: f"{s:.3g}"),
                "Loss (95% CI)": [
                    _interval(r.loss, r.loss_ci_low, r.loss_ci_high, r.seed_values)
                    for r in arms.itertuples()
                ],
                "Perplexity (exp of loss CI)": [
                    _interval(
                        r.perplexity,
                        r.perplexity_ci_low,
                        r.perplexity_ci_high,
                        r.seed_perplexities,
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
    lines += [_train_time_note(analysis.primary.runs), ""]
    return lines


def _train_time_note(runs: pd.DataFrame) -> str:
    source = runs["wall_time_source"] if "wall_time_source" in runs else pd.Series(dtype=object)
    if len(source) and (source == "final/elapsed_s").all():
        clock = (
            "the training run's own clock at its end (`final/elapsed_s`, the time the console "
            "prints after `... tokens in`)"
        )
    else:
        clock = (
            "the training loop's last logged clock (`time/elapsed_s`): it leaves out the final "
            "full-split evaluation, which the console's `... tokens in N s` includes"
        )
    return (
        f"*Train time* (mean over seeds) is {clock}; neither counts start-up and data "
        "preparation, which a sweep's wall time does. *Non-emb. params* excludes the token "
        "embedding and output head; for a mixture of experts it is total (active per token)."
    )


def _params_text(total: float, active: float) -> str:
    if math.isnan(total):
        return "n/a"
    if math.isnan(active) or math.isclose(total, active, rel_tol=1e-9):
        return si(total)
    return f"{si(total)} ({si(active)} active)"


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


def _compute_matching(arms: pd.DataFrame) -> str:
    """Parameter and FLOP disparities between arms, on non-embedding parameters (total and,
    for a mixture of experts, active), which is what differs between designs."""
    column = (
        "n_params_non_embedding" if arms["n_params_non_embedding"].notna().any() else "n_params"
    )
    params = relative_spread(arms[column])
    flops = relative_spread(arms["train_flops"])
    active = relative_spread(arms["n_params_non_embedding_active"])
    if math.isnan(params) and math.isnan(flops):
        return "Parameter counts and FLOPs were not logged, so compute matching is unknown."
    what = "non-embedding parameters" if column == "n_params_non_embedding" else "parameters"
    moe = arms["n_params_non_embedding_active"] < arms["n_params_non_embedding"] * (1 - 1e-9)
    moe_text = ""
    if moe.any():
        pairs = sorted(
            {
                f"{si(r.n_params_non_embedding)} non-embedding parameters, "
                f"{si(r.n_params_non_embedding_active)} active per token"
                for r in arms[moe].itertuples()
            }
        )
        moe_text = (
            f" Mixture-of-experts arms ({', '.join(arms.loc[moe, 'arm'].astype(str))}) hold "
            f"{'; '.join(pairs)} (active non-embedding parameters differ by up to {active:.1%} "
            "across all arms)."
        )
    if max(v for v in (params, flops) if not math.isnan(v)) <= COMPUTE_MATCH_TOLERANCE:
        return (
            f"Arms are compute-matched ({what} within {params:.1%}, training FLOPs within "
            f"{flops:.1%}).{moe_text}"
        )
    return (
        f"Arms are **not** compute-matched: {what} differ by up to {params:.1%} and training "
        f"FLOPs by up to {flops:.1%}; part of a loss gap can come from that.{moe_text}"
    )


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
    matched = _compute_matching(arms)
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
