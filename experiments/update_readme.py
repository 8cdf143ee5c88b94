"""Write the README's results section from the committed ``docs/results/cpu_hour`` files.

    python experiments/update_readme.py            # rewrite README.md between the markers
    python experiments/update_readme.py --check    # exit 1 if README.md is out of date

The section is copied from the protocol's own outputs (its LR bracket and wall times, and the
verdict tables of its stage reports, with each factor's judgement and its sensitivity to the
weight of gpt-oss), so the README shows what the committed run measured and nothing typed by
hand.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

from gpt5_ablate.analysis.ladder_budget import budget_of
from gpt5_ablate.protocol import load_protocol

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results" / "cpu_hour"
BEGIN = "<!-- results:begin (written by `python experiments/update_readme.py` from docs/results/cpu_hour) -->"
END = "<!-- results:end -->"
LADDER = ROOT / "docs" / "results" / "cpu_ladder"
LADDER_BEGIN = "<!-- ladder:begin (written by `python experiments/update_readme.py` from docs/results/cpu_ladder) -->"
LADDER_END = "<!-- ladder:end -->"
#: cpu_ladder again at more tokens per parameter; the last one's report compares them all.
BUDGET_RUNS = tuple(ROOT / "docs" / "results" / n for n in ("cpu_ladder_3tpp", "cpu_ladder_20tpp"))
BUDGET_BEGIN = "<!-- budget:begin (written by `python experiments/update_readme.py` from docs/results/cpu_ladder_*tpp) -->"
BUDGET_END = "<!-- budget:end -->"
#: The ladder report's sections the README shows, in order (the rest stays in the report).
LADDER_SECTIONS = (
    "Sizes",
    "Test loss at each optimizer",
    "Compute multiplier",
    "Against published anchors",
    "Figures",
    "Long context",
    "Judgement",
)


def section(markdown: str, heading: str) -> str:
    """The body of the first ``## heading...`` section of a Markdown file."""
    match = re.search(rf"^## {re.escape(heading)}.*?\n(.*?)(?=^## |\Z)", markdown, re.S | re.M)
    return match.group(1).strip() if match else ""


def results_text() -> str:
    protocol = (RESULTS / "protocol.md").read_text()
    parts = [
        "Measured with `python -m gpt5_ablate.protocol name=cpu_hour "
        "tracking.uri=sqlite:///docs/results/cpu_hour/mlflow.db out=docs/results/cpu_hour` "
        "on this project's 2-core CPU machine; every file is in "
        "[docs/results/cpu_hour/](docs/results/cpu_hour/). The MLflow store is not committed: "
        "the same command with `stages=report` regenerates both reports from the committed "
        "export ([docs/results/cpu_hour/export/](docs/results/cpu_hour/export/): every run's "
        "final values, and per-document losses under `artifacts/`). Every run here is one size "
        "(tiny), so under the judgement rule these measurements add no votes: the judgement "
        "columns below rest on public evidence alone, and measurement enters the judgement only "
        "through the ladder above.",
        "",
        protocol.split("\n", 2)[2].strip().replace("## ", "#### "),
    ]
    for stage, title in (("compare", "Optimizers"), ("design", "Architecture (under Muon)")):
        report = RESULTS / stage / "report.md"
        if report.is_file():
            verdict = section(report.read_text(), "Verdict")
            parts += ["", f"#### {title}: the verdict ([full report]({report.relative_to(ROOT)}))"]
            parts += ["", verdict.replace("](#", f"]({report.relative_to(ROOT)}#")]
    return "\n".join(parts)


def _calls_text() -> str:
    """How a protocol run resumed in several calls split its work (from its protocol.json)."""
    summary = json.loads((LADDER / "protocol.json").read_text())
    calls = int(summary.get("calls", 1))
    if calls < 2:
        return ""
    later = []
    for call in range(2, calls + 1):
        stages = [s["stage"] for s in summary["stages"] if s.get("call") == call]
        later.append(f"call {call}: {_stages_text(stages)}")
    return (
        f" It ran in {calls} calls under `stamp={summary['stamp']}` (a later call names what it "
        "adds with `stages=`, `sizes=` or `selection_rounds=`, and finds the runs earlier calls "
        f"finished without training them again; {'; '.join(later)})."
    )


def _stages_text(stages: list[str]) -> str:
    """A call's stages by kind, e.g. "selection rounds 1–3 at `ladder_s2`, `ladder_s1`, report
    seeds at `ladder_s2`": stage names are ``select-<size>-<optimizer>-<key>[-r<round>]``,
    ``compare-<size>`` and ``context-<size>``."""
    sizes: dict[str, dict[str, None]] = {}
    rounds: set[int] = set()
    for stage in stages:
        kind, _, rest = stage.partition("-")
        parts = rest.split("-")
        sizes.setdefault(kind, {})[parts[0]] = None
        if kind == "select":
            last = parts[-1]
            rounds.add(int(last[1:]) if last[:1] == "r" and last[1:].isdigit() else 1)
    named = {"select": "selection", "compare": "report seeds", "context": "long-context arms"}
    texts = []
    for kind, at in sizes.items():
        label = named.get(kind, kind)
        if kind == "select":
            low, high = min(rounds), max(rounds)
            label += f" round {low}" if low == high else f" rounds {low}–{high}"
        texts.append(f"{label} at {', '.join(f'`{s}`' for s in at if s)}")
    return ", ".join(texts)


def ladder_text() -> str:
    report_path = LADDER / "ladder" / "report.md"
    report = report_path.read_text()
    link = report_path.relative_to(ROOT)
    parts = [
        "Measured with `python -m gpt5_ablate.protocol name=cpu_ladder "
        "tracking_uri=sqlite:///docs/results/cpu_ladder/mlflow.db out=docs/results/cpu_ladder` "
        "on this project's 2-core CPU machine; the same command with `stages=report` regenerates "
        f"the [full report]({link}) from the committed store.{_calls_text()} "
        f"{report.splitlines()[2]}",
    ]
    for heading in LADDER_SECTIONS:
        body = section(report, heading)
        title = re.search(rf"^## ({re.escape(heading)}.*)$", report, re.M)
        if body and title:
            parts += ["", f"#### {title.group(1)}", "", body.replace("](", f"]({link.parent}/")]
        if heading == "Test loss at each optimizer":
            # The rate-selection table stays in the report; its caveat on these losses does not.
            caveat = rates_caveat(report)
            parts += ["", caveat] if caveat else []
    return "\n".join(parts)


def rates_caveat(report: str) -> str | None:
    """A ladder report's note on rates still moving in its last selection round, if any."""
    found = re.search(r"^\*\*Rates still moving.*$", report, re.M)
    return found.group(0) if found else None


def budget_text() -> str:
    """The budget comparison: runs of cpu_ladder at more tokens per parameter, the section of
    the last one's report (which compares every budget)."""
    lines = ["Measured on the same machine, every rate selected again at each new budget:", ""]
    caveats: list[str] = []
    default_rounds = load_protocol("cpu_ladder").selection_rounds
    for folder in BUDGET_RUNS:
        summary = json.loads((folder / "protocol.json").read_text())
        sizes = ",".join(s["name"] for s in summary["sizes"])
        budget = budget_of(summary["protocol"])
        rounds = summary["protocol"].get("selection_rounds")
        extra = f" selection_rounds={rounds}" if rounds != default_rounds else ""
        calls = int(summary.get("calls", 1))
        resumed = f" in {calls} calls under `stamp={summary['stamp']}`" if calls > 1 else ""
        report = (folder / "ladder" / "report.md").relative_to(ROOT)
        caveat = rates_caveat((ROOT / report).read_text())
        caveats += [f"In `{folder.name}`: {caveat}"] if caveat else []
        lines.append(
            f"- `python -m gpt5_ablate.protocol name=cpu_ladder sizes={sizes} "
            f"tokens_per_param={budget:g}{extra} reference_ladder={summary['reference_ladder']} "
            f"tracking_uri={summary['tracking_uri']} out={folder.relative_to(ROOT)}`: "
            f"{summary['wall_s'] / 60:.1f} min{resumed} ([report]({report}))."
        )
    link = (BUDGET_RUNS[-1] / "ladder" / "report.md").relative_to(ROOT)
    body = section((ROOT / link).read_text(), "Budget")
    body = re.sub(r"\]\(([^)#:]+)\)", lambda m: f"]({_joined(link.parent, m.group(1))})", body)
    return "\n".join([*lines, "", body, *(f"\n{c}" for c in caveats)])


def _joined(folder: Path, link: str) -> str:
    """``link`` (relative to ``folder``) relative to the repository root, without ``..``."""
    return os.path.normpath(folder / link)


def replace_between(text: str, begin: str, end: str, body: str) -> str:
    start, stop = text.index(begin) + len(begin), text.index(end)
    return f"{text[:start]}\n{body}\n{text[stop:]}"


def main(argv: list[str]) -> int:
    readme = ROOT / "README.md"
    text = readme.read_text()
    updated = replace_between(text, BEGIN, END, results_text())
    updated = replace_between(updated, LADDER_BEGIN, LADDER_END, ladder_text())
    updated = replace_between(updated, BUDGET_BEGIN, BUDGET_END, budget_text())
    if "--check" in argv:
        return 0 if updated == text else 1
    readme.write_text(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
