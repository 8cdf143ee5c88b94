"""The committed ladder reports regenerate, word for word, from the committed MLflow stores:
cpu_ladder, and its runs at 3 and 20 tokens per parameter (compared with it)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cpu_ladder", "cpu_ladder_3tpp", "cpu_ladder_20tpp"])
def test_committed_ladder_report_regenerates(tmp_path: Path, name: str) -> None:
    from gpt5_ablate.analysis.ladder import write_ladder_report

    results = ROOT / "docs" / "results" / name
    summary = json.loads((results / "protocol.json").read_text())
    cwd = Path.cwd()
    os.chdir(ROOT)  # the stores name their artifacts relative to the repository root
    try:
        path = write_ladder_report(summary, tmp_path, f"sqlite:///docs/results/{name}/mlflow.db")
    finally:
        os.chdir(cwd)
    text = path.read_text()
    for reference in filter(None, summary.get("reference_ladder", "").split(",")):
        # The report links each reference ladder relative to where it is written.
        report = ROOT / reference / "ladder" / "report.md"
        text = text.replace(
            f"]({os.path.relpath(report.resolve(), path.parent.resolve())})",
            f"]({os.path.relpath(report, results / 'ladder')})",
        )
    assert text == (results / "ladder" / "report.md").read_text()
