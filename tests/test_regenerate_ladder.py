"""The committed cpu_ladder report regenerates, word for word, from the committed MLflow store."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results" / "cpu_ladder"


@pytest.mark.slow
def test_committed_ladder_report_regenerates(tmp_path: Path) -> None:
    from gpt5_ablate.analysis.ladder import write_ladder_report

    summary = json.loads((RESULTS / "protocol.json").read_text())
    cwd = Path.cwd()
    os.chdir(ROOT)  # the store names its artifacts relative to the repository root
    try:
        path = write_ladder_report(summary, tmp_path, "sqlite:///docs/results/cpu_ladder/mlflow.db")
    finally:
        os.chdir(cwd)
    committed = (RESULTS / "ladder" / "report.md").read_text()
    assert path.read_text() == committed
