"""``analyse``: loaded runs -> selection, model fit, verdicts, bootstrap and judgement.

The Markdown report and the notebook both render an :class:`Analysis`; nothing here writes
files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import pandas as pd

from gpt5_ablate.analysis.compute import MultiplierResult, compute_multiplier
from gpt5_ablate.analysis.design import DesignFit, fit_design
from gpt5_ablate.analysis.docboot import bootstrap_pairs, matched_pairs
from gpt5_ablate.analysis.evidence import EvidenceTable, load_evidence
from gpt5_ablate.analysis.judgement import (
    Judgement,
    JudgementSettings,
    MeasuredSize,
    judgement,
)
from gpt5_ablate.analysis.load import ExperimentData
from gpt5_ablate.analysis.select import RunSelection, select_runs
from gpt5_ablate.analysis.stats import (
    LrSelection,
    arm_summary,
    select_best_lr,
    varied_factors,
)
from gpt5_ablate.analysis.verdict import (
    DEFAULT_ALPHA,
    DEFAULT_MARGIN,
    FactorResult,
    VerdictSet,
    analyse_factors,
)
from gpt5_ablate.errors import InputError

METRICS = ("final_loss", "final_val_loss", "best_val_loss")
#: An arm whose loss is within this many nats of the unigram baseline has not learned past it.
PLATEAU_MARGIN = 0.5


@dataclass
class ReportSettings:
    metric: str = "final_loss"
    sweep: str = "latest"
    group_unlike: bool = False
    equivalence_margin: float = DEFAULT_MARGIN
    alpha: float = DEFAULT_ALPHA
    plateau_margin: float = PLATEAU_MARGIN
    bootstrap_samples: int = 1000
    per_document: bool = True
    judgement: JudgementSettings = field(default_factory=JudgementSettings)


@dataclass
class GroupAnalysis:
    """One comparable group of runs (one model size, budget and data) and its verdicts."""

    label: str
    #: Analysed runs (after LR selection), with the compared value in ``loss``.
    runs: pd.DataFrame
    lr: LrSelection
    arms: pd.DataFrame
    #: Arms not past the unigram plateau (kept out of the verdicts).
    plateau: list[str]
    factors: list[str]
    fit: DesignFit
    verdicts: VerdictSet
    notes: list[str] = field(default_factory=list)

    @property
    def verdict_runs(self) -> pd.DataFrame:
        return self.runs[~self.runs["arm"].isin(self.plateau)]

    @property
    def train_flops(self) -> float:
        return float(pd.to_numeric(self.runs["train_flops"], errors="coerce").median())

    @property
    def context_len(self) -> float | None:
        if "context_len" not in self.runs:
            return None
        value = pd.to_numeric(self.runs["context_len"], errors="coerce").median()
        return None if math.isnan(value) else float(value)

    def factor(self, name: str) -> FactorResult | None:
        return next((f for f in self.verdicts.factors if f.factor == name), None)


@dataclass
class Analysis:
    experiment: str
    tracking_uri: str
    settings: ReportSettings
    selection: RunSelection
    response: str
    response_note: str
    groups: list[GroupAnalysis]
    evidence: EvidenceTable
    #: Per factor, its outcome at every analysed size (the judgement's measured evidence).
    measured: dict[str, list[MeasuredSize]]
    tuned_lr: bool
    #: How the rates were chosen when an LR grid of phase=select runs in the same experiment
    #: chose them (the protocol's stage 1), else empty.
    lr_selection: str = ""
    #: Compute multipliers of each factor's other levels against its best (several sizes only).
    multipliers: list[MultiplierResult] = field(default_factory=list)

    @property
    def primary(self) -> GroupAnalysis:
        """The group the headline numbers come from: the largest training compute."""
        usable = [g for g in self.groups if g.verdicts.factors] or self.groups
        return max(usable, key=lambda g: 0 if math.isnan(g.train_flops) else g.train_flops)

    @property
    def warnings(self) -> list[str]:
        return self.selection.warnings

    @property
    def judgement_settings(self) -> JudgementSettings:
        """The rule's settings, with the runs' attention window filled in for the context check."""
        settings = self.settings.judgement
        runs = self.primary.runs
        if settings.window_tokens is None and "window_size" in runs:
            size = pd.to_numeric(runs["window_size"], errors="coerce").median()
            if not math.isnan(size):
                settings = replace(settings, window_tokens=int(size))
        return settings

    def judge(self, factor: str, tested: list[str]) -> Judgement:
        return judgement(
            factor, self.evidence, self.measured.get(factor, []), self.judgement_settings, tested
        )

    @property
    def factors(self) -> list[str]:
        """The factors varied among the analysed runs (plateau arms included)."""
        return list(dict.fromkeys(f for g in self.groups for f in varied_factors(g.runs)))


def resolve_response(runs: pd.DataFrame, metric: str) -> tuple[str, str]:
    """The column compared, and a sentence saying what it is and which split it reads.

    ``final_loss`` reads the held-out test split (``final/test_loss``) when every run logged it,
    else the full validation split (``final/val_loss``, older runs), else the periodic sample.
    The validation split chose the learning rates, so the test split is the unbiased one.
    """
    if metric == "best_val_loss":
        return "best_val_loss", "the lowest periodic validation loss of each run"
    test = runs["full_test_loss"].notna() if "full_test_loss" in runs else pd.Series(False)
    if metric == "final_loss" and len(runs) and test.all():
        return "full_test_loss", (
            "`final/test_loss`: one pass over the entire held-out TEST split (the validation "
            "split is used only to choose learning rates)"
        )
    older = ""
    if metric == "final_loss":
        older = (
            f"; {int((~test).sum())} of {len(runs)} runs predate the test split, so every run "
            "is compared on validation"
            if test.any()
            else "; these runs predate the held-out test split, so this is the split the "
            "learning rates were chosen on"
        )
    full = runs["full_val_loss"].notna() if "full_val_loss" in runs else pd.Series(False)
    if len(runs) and full.all():
        return "full_val_loss", (
            f"`final/val_loss`: one pass over the entire VALIDATION split{older}"
        )
    if full.any():
        return "last_val_loss", (
            f"the last periodic `val/loss` (a fixed seeded sample of validation blocks): "
            f"{int((~full).sum())} of {len(runs)} runs predate the full-split `final/val_loss`, "
            "so every run is compared on the same, periodic evaluation"
        )
    return "last_val_loss", (
        "the last periodic `val/loss` (a fixed seeded sample of validation blocks): these runs "
        "predate the full-split `final/val_loss`"
    )


def _plateau(arms: pd.DataFrame, margin: float) -> list[str]:
    gap = arms["unigram_val_loss"] - arms["loss"]
    return arms.loc[gap.notna() & (gap < margin), "arm"].astype(str).tolist()


def _bootstrap(group: GroupAnalysis, data: ExperimentData, settings: ReportSettings) -> None:
    runs = group.verdict_runs
    # The documents of the split compared: test runs keep validation's in a second file.
    has_test = "full_test_loss" in runs and bool(runs["full_test_loss"].notna().all())
    on_test = bool((runs["loss_split"] == "full_test_loss").all())
    validation = has_test and not on_test
    artifact = "eval/per_document_val.csv" if validation else "eval/per_document.csv"
    tables = data.per_document(runs["run_id"].tolist(), validation)
    if not tables:
        group.notes.append(
            f"Document-level bootstrap skipped: no run has an `{artifact}` artifact "
            "(runs logged before the full-split evaluation)."
        )
        return
    split = "test" if on_test else "validation"
    group.notes.append(
        f"Document-level bootstrap (evaluation noise only): {split}-split documents, from "
        f"`{artifact}`."
    )
    if len(tables) < len(runs):
        group.notes.append(
            f"Document-level bootstrap uses the {len(tables)} of {len(runs)} runs that logged "
            f"`{artifact}`; pairs with a run lacking it are left out of it."
        )
    for c in group.verdicts.comparisons:
        pairs = matched_pairs(runs, c.factor, c.level, c.reference, c.condition, group.factors)
        c.doc_ci = bootstrap_pairs(pairs, tables, settings.bootstrap_samples)


def analyse_group(
    label: str, runs: pd.DataFrame, response: str, data: ExperimentData, settings: ReportSettings
) -> GroupAnalysis:
    runs = runs.assign(loss=pd.to_numeric(runs[response], errors="coerce"), loss_split=response)
    notes = []
    missing = runs["loss"].isna()
    if missing.any():
        notes.append(f"{int(missing.sum())} run(s) without a `{response}` value are left out.")
        runs = runs[~missing]
    lr = select_best_lr(runs, "loss")
    kept = lr.runs
    arms = arm_summary(kept, "loss")
    plateau = _plateau(arms, settings.plateau_margin) if len(arms) else []
    verdict_runs = kept[~kept["arm"].isin(plateau)]
    factors = varied_factors(verdict_runs)
    fit = fit_design(verdict_runs, "loss", factors)
    verdicts = analyse_factors(
        fit, verdict_runs, "loss", factors, settings.equivalence_margin, settings.alpha
    )
    group = GroupAnalysis(label, kept, lr, arms, plateau, factors, fit, verdicts, notes)
    if plateau:
        group.notes.append(
            f"{len(plateau)} arm(s) are not past the unigram plateau (loss within "
            f"{settings.plateau_margin:g} nats of the unigram baseline) and are kept out of the "
            f"verdict: {', '.join(plateau)}."
        )
    if settings.per_document and verdicts.comparisons:
        _bootstrap(group, data, settings)
    return group


def _measured(groups: list[GroupAnalysis], primary: GroupAnalysis) -> dict[str, list[MeasuredSize]]:
    out: dict[str, list[MeasuredSize]] = {}
    for result in primary.verdicts.factors:
        sizes = []
        for group in groups:
            other = group.factor(result.factor)
            if other is not None:
                sizes.append(
                    MeasuredSize(
                        group.train_flops,
                        group.context_len,
                        other.favoured,
                        other.category,
                        group.label,
                    )
                )
        out[result.factor] = sizes
    return out


def analyse(data: ExperimentData, settings: ReportSettings | None = None) -> Analysis:
    """Select the runs, fit each comparable group, and judge every varied factor."""
    settings = settings or ReportSettings()
    if settings.metric not in METRICS:
        raise InputError(
            f"metric={settings.metric!r} is invalid. Valid choices: {', '.join(METRICS)}."
        )
    selection = select_runs(data.runs, settings.sweep, settings.group_unlike)
    runs = selection.runs
    if runs.empty:
        raise InputError(
            f"Experiment {data.experiment!r}: no runs left to compare ({selection.sweep})."
        )
    response, note = resolve_response(runs, settings.metric)
    groups = [
        analyse_group(label, group, response, data, settings)
        for label, group in selection.groups.items()
        if not group.empty
    ]
    if all(g.runs["arm"].nunique() < 2 for g in groups):
        arms = sorted({str(a) for g in groups for a in g.runs["arm"].unique()})
        raise InputError(
            f"Experiment {data.experiment!r} ({selection.sweep}) has only one arm "
            f"({', '.join(arms)}): nothing to compare. Sweep a factor, e.g. "
            "`python -m gpt5_ablate -m attention=gqa,mla`."
        )
    groups = [g for g in groups if g.runs["arm"].nunique() >= 2]
    evidence = load_evidence()
    partial = Analysis(
        data.experiment,
        data.tracking_uri,
        settings,
        selection,
        response,
        note,
        groups,
        evidence,
        {},
        False,
    )
    primary = partial.primary
    partial.measured = _measured(groups, primary)
    select = selection.select_runs
    lr_grid = not select.empty and select.groupby("arm")["lr_scale"].nunique().max() > 1
    partial.lr_selection = selected_rates(data.runs, primary.verdict_runs)
    partial.tuned_lr = bool(primary.lr.swept or lr_grid or partial.lr_selection)
    if len(groups) > 1:
        partial.multipliers = _multipliers(groups, primary, settings.bootstrap_samples)
    return partial


def selected_rates(all_runs: pd.DataFrame, reported: pd.DataFrame) -> str:
    """Whether the reported runs' learning rates are the best of an LR grid of ``phase=select``
    runs in the same experiment (same optimizer, preset and budget), per optimizer; "" if not."""
    select = all_runs[all_runs["phase"] == "select"]
    texts = []
    for optimizer, rep in reported.groupby("optimizer"):
        grid = select[
            (select["optimizer"] == optimizer)
            & select["model"].isin(rep["model"].unique())
            & select["budget_tokens"].isin(rep["budget_tokens"].unique())
        ]
        by_rate = grid.groupby("lr")["final_val_loss"].mean()
        if len(by_rate) < 3 or rep["lr"].nunique() != 1:
            return ""
        best = float(by_rate.idxmin())
        if not math.isclose(float(rep["lr"].iloc[0]), best, rel_tol=1e-6):
            return ""
        edge = "" if by_rate.index.min() < best < by_rate.index.max() else ", at the grid's edge"
        texts.append(f"{optimizer} at {best:g}, the best of {len(by_rate)} rates{edge}")
    return "selected on separate seeds: " + "; ".join(texts) if texts else ""


def _multipliers(
    groups: list[GroupAnalysis], primary: GroupAnalysis, n_resamples: int
) -> list[MultiplierResult]:
    """Per factor, each other level against the primary group's best, across all sizes."""
    runs = pd.concat([g.verdict_runs for g in groups], ignore_index=True)
    out = []
    for result in primary.verdicts.factors:
        best = result.pooled.best
        for other in result.levels:
            if other == best:
                continue
            found = compute_multiplier(
                runs, result.factor, best, other, n_resamples=max(n_resamples, 200)
            )
            if found is not None:
                out.append(found)
    return out
