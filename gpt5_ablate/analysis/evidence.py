"""The cited public-evidence table and the rule that combines it with the measurements.

The table (``public_evidence.yaml``, shipped with the package) lists, per open model and
factor, the level its source states it uses. :func:`judge` applies the rule in
:data:`JUDGEMENT_RULE`, which the report prints verbatim.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

EVIDENCE_FILE = "public_evidence.yaml"
#: A measured preference decides only when it holds at this many sizes ...
MIN_SIZES = 3
#: ... spanning at least this ratio of training compute.
MIN_COMPUTE_SPAN = 10.0

JUDGEMENT_RULE = (
    f"A measured effect decides only if the same level is *favoured* (Holm-corrected, no material "
    f"interaction) at {MIN_SIZES} or more model sizes spanning at least {MIN_COMPUTE_SPAN:g}× "
    "training compute, and no size favours another level. Otherwise the public evidence decides: "
    "the level used by the most listed open models (each model counted once per level it uses); "
    "a tie leaves the factor undetermined, and a level backed by a single model is marked weak. "
    "The judgement says which design GPT-5 is *most consistent with*; GPT-5's architecture is "
    "not public, so the judgement is never a claim about its actual design."
)


@dataclass(frozen=True)
class EvidenceRow:
    model: str
    factor: str
    level: str
    claim: str
    source: str
    title: str
    url: str


@dataclass
class EvidenceTable:
    rows: list[EvidenceRow]
    #: ``{factor: {evidence level: harness level names}}``.
    aliases: dict[str, dict[str, list[str]]]
    sources: dict[str, tuple[str, str]] = field(default_factory=dict)

    def for_factor(self, factor: str) -> list[EvidenceRow]:
        return [row for row in self.rows if row.factor == factor]

    def harness_name(self, factor: str, level: str, tested: Sequence[str] = ()) -> str:
        """The harness's name for an evidence level (one of ``tested`` when one matches)."""
        names = self.aliases.get(factor, {}).get(level, [level])
        for name in names:
            if name in tested:
                return name
        return names[0] if names else level

    def matches(self, factor: str, evidence_level: str, harness_level: str) -> bool:
        names = self.aliases.get(factor, {}).get(evidence_level, [evidence_level])
        return harness_level in names or harness_level == evidence_level

    def models_by_level(self, factor: str, tested: Sequence[str] = ()) -> dict[str, list[str]]:
        """``{harness level: [models]}``, most-used level first."""
        out: dict[str, list[str]] = {}
        for row in self.for_factor(factor):
            name = self.harness_name(factor, row.level, tested)
            if row.model not in out.setdefault(name, []):
                out[name].append(row.model)
        return dict(sorted(out.items(), key=lambda item: -len(item[1])))

    def source_numbers(self) -> dict[str, int]:
        return {key: i + 1 for i, key in enumerate(self.sources)}

    def summary(self, factor: str, tested: Sequence[str] = ()) -> str:
        """``gqa: gpt-oss [1], Qwen3 [5]; mla: ...`` or ``none listed``."""
        numbers = self.source_numbers()
        by_level = self.models_by_level(factor, tested)
        if not by_level:
            return "none listed"
        parts = []
        for level, models in by_level.items():
            cited = []
            for model in models:
                refs = sorted(
                    {
                        numbers[r.source]
                        for r in self.for_factor(factor)
                        if r.model == model and self.harness_name(factor, r.level, tested) == level
                    }
                )
                cited.append(f"{model} {''.join(f'[{n}]' for n in refs)}")
            parts.append(f"{level}: {', '.join(cited)}")
        return "; ".join(parts)


def load_evidence(path: str | Path | None = None) -> EvidenceTable:
    """Read the shipped table (or ``path``)."""
    if path is None:
        text = resources.files("gpt5_ablate.analysis").joinpath(EVIDENCE_FILE).read_text("utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    sources = {key: (str(v["title"]), str(v["url"])) for key, v in raw["sources"].items()}
    rows = []
    for item in raw["rows"]:
        title, url = sources[item["source"]]
        rows.append(
            EvidenceRow(
                str(item["model"]),
                str(item["factor"]),
                str(item["level"]),
                str(item["claim"]),
                str(item["source"]),
                title,
                url,
            )
        )
    aliases = {f: {lv: list(v) for lv, v in levels.items()} for f, levels in raw["levels"].items()}
    return EvidenceTable(rows, aliases, sources)


@dataclass(frozen=True)
class SizeResult:
    """One factor's outcome at one model size (one comparable group of runs)."""

    label: str
    train_flops: float
    category: str
    best: str


@dataclass
class Measured:
    factor: str
    category: str
    favoured: str | None
    sizes: list[SizeResult]
    margin: float

    def robust(self) -> tuple[bool, str]:
        """Whether the measurement decides, and why not when it does not."""
        if self.category != "favoured" or self.favoured is None:
            reasons = {
                "equivalent": f"equivalent within ±{self.margin:g} (the loss does not discriminate)",
                "depends": "the effect depends on another factor",
                "untestable": "not testable with these runs",
                "unvaried": "not varied in these runs",
            }
            return False, reasons.get(self.category, "inconclusive")
        agreeing = [s for s in self.sizes if s.category == "favoured" and s.best == self.favoured]
        rivals = [s for s in self.sizes if s.category == "favoured" and s.best != self.favoured]
        if rivals:
            return False, f"another level is favoured at {', '.join(s.label for s in rivals)}"
        flops = [s.train_flops for s in agreeing if s.train_flops > 0]
        span = max(flops) / min(flops) if len(flops) >= 2 else 1.0
        if len(agreeing) < MIN_SIZES:
            return False, (
                f"favoured at {len(agreeing)} size(s); the rule needs {MIN_SIZES} sizes spanning "
                f"{MIN_COMPUTE_SPAN:g}× compute"
            )
        if math.isnan(span) or span < MIN_COMPUTE_SPAN:
            return False, (
                f"its {len(agreeing)} sizes span {span:.3g}× compute; the rule needs "
                f"{MIN_COMPUTE_SPAN:g}×"
            )
        return True, f"favoured at {len(agreeing)} sizes spanning {span:.3g}× compute"


def judge(measured: Measured, evidence: EvidenceTable, tested: Sequence[str]) -> str:
    """The judgement cell: which level the design is most consistent with, and on what grounds."""
    decisive, why = measured.robust()
    by_level = evidence.models_by_level(measured.factor, tested)
    n_models = len({m for models in by_level.values() for m in models})
    if decisive:
        agree = by_level.get(measured.favoured or "", [])
        public = (
            f"public evidence agrees: {len(agree)} of {n_models} listed models"
            if agree
            else "no listed open model uses it"
            if n_models
            else "no public evidence listed"
        )
        return f"most consistent with {measured.favoured} (measured: {why}; {public})"
    clause = "not varied here" if measured.category == "unvaried" else f"measured here: {why}"
    if not by_level:
        return f"undetermined: no public evidence listed; {clause}"
    counts = [len(models) for models in by_level.values()]
    top = [level for level, models in by_level.items() if len(models) == counts[0]]
    if len(top) > 1:
        split = ", ".join(f"{level}: {len(by_level[level])}" for level in top)
        return f"undetermined: public evidence split ({split} models); {clause}"
    level = top[0]
    if counts[0] == 1:
        grounds = f"weak: public evidence from one model, {by_level[level][0]}"
    else:
        grounds = f"public evidence: {counts[0]} of {n_models} listed models"
    if measured.category != "unvaried" and level not in tested:
        grounds += "; level not run here"
    if measured.favoured:
        agrees = "agrees" if measured.favoured == level else "disagrees"
        clause = f"measured here: favoured {measured.favoured} ({agrees}), not decisive: {why}"
    return f"most consistent with {level} ({grounds}); {clause}"
