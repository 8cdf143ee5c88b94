"""The cited public-evidence table (``public_evidence.yaml``, shipped with the package).

Every listed model has one row per factor: the level its config, code or paper shows, or
``undisclosed``. Each evidence level maps to the harness level it counts as (``None``: no vote);
:mod:`gpt5_ablate.analysis.judgement` turns the table into a judgement.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from gpt5_ablate.analysis.stats import FACTORS
from gpt5_ablate.errors import InputError

EVIDENCE_FILE = "public_evidence.yaml"
UNDISCLOSED = "undisclosed"
#: A measured preference counts only when it holds at this many sizes ...
MIN_SIZES = 3
#: ... spanning at least this ratio of training compute (see analysis.judgement).
MIN_COMPUTE_SPAN = 100.0


@dataclass(frozen=True)
class ModelInfo:
    name: str
    lab: str
    released: dt.date
    flagship: str
    architecture_family: str


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
    models: dict[str, ModelInfo]
    rows: list[EvidenceRow]
    #: ``{factor: {evidence level: harness level, or None for no vote}}``.
    counts_as: dict[str, dict[str, str | None]]
    counting_rules: dict[str, str] = field(default_factory=dict)
    sources: dict[str, tuple[str, str]] = field(default_factory=dict)

    def row(self, model: str, factor: str) -> EvidenceRow | None:
        return next((r for r in self.rows if r.model == model and r.factor == factor), None)

    def for_factor(self, factor: str) -> list[EvidenceRow]:
        return [row for row in self.rows if row.factor == factor]

    def harness_level(self, factor: str, level: str) -> str | None:
        """The harness level an evidence level counts as (None: undisclosed or no counterpart)."""
        if level == UNDISCLOSED:
            return None
        return self.counts_as.get(factor, {}).get(level, level)

    def harness_levels(self, factor: str, tested: Sequence[str] = ()) -> list[str]:
        """Every harness level of ``factor`` the table or the runs know, in a stable order."""
        known = [v for v in self.counts_as.get(factor, {}).values() if v is not None]
        return list(dict.fromkeys([*known, *tested]))

    def missing(self) -> list[tuple[str, str]]:
        """``(model, factor)`` pairs with no row: the table must say ``undisclosed`` instead."""
        return [(m, f) for m in self.models for f in FACTORS if self.row(m, f) is None]

    def source_numbers(self) -> dict[str, int]:
        return {key: i + 1 for i, key in enumerate(self.sources)}

    def cite(self, row: EvidenceRow) -> str:
        return f"[{self.source_numbers()[row.source]}]"


def _date(value: object, model: str) -> dt.date:
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError as error:
        raise InputError(f"{model}: released={value!r} is not an ISO date (YYYY-MM-DD).") from error


def load_evidence(path: str | Path | None = None) -> EvidenceTable:
    """Read the shipped table (or ``path``), checking every row names a known model and source."""
    if path is None:
        text = resources.files("gpt5_ablate.analysis").joinpath(EVIDENCE_FILE).read_text("utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    sources = {key: (str(v["title"]), str(v["url"])) for key, v in raw["sources"].items()}
    models = {
        str(name): ModelInfo(
            str(name),
            str(info["lab"]),
            _date(info["released"], str(name)),
            str(info.get("flagship", name)),
            str(info.get("architecture_family", name)),
        )
        for name, info in raw["models"].items()
    }
    rows = []
    for item in raw["rows"]:
        model, source = str(item["model"]), str(item["source"])
        if model not in models or source not in sources:
            raise InputError(
                f"{path or EVIDENCE_FILE}: row {item} names an unknown model or source. Models: "
                f"{', '.join(models)}; sources: {', '.join(sources)}."
            )
        title, url = sources[source]
        rows.append(
            EvidenceRow(
                model,
                str(item["factor"]),
                str(item["level"]),
                str(item["claim"]),
                source,
                title,
                url,
            )
        )
    counts_as = {
        str(f): {str(lv): (None if v is None else str(v)) for lv, v in levels.items()}
        for f, levels in raw["levels"].items()
    }
    rules = {str(k): str(v) for k, v in (raw.get("counting_rules") or {}).items()}
    return EvidenceTable(models, rows, counts_as, rules, sources)
