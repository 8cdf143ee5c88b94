"""The committed reports regenerate from committed files (the MLflow stores are not committed)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from gpt5_ablate.analysis.export import load_export, write_export
from gpt5_ablate.analysis.pipeline import ReportSettings, analyse
from gpt5_ablate.cli import REPO_ROOT
from gpt5_ablate.errors import InputError
from gpt5_ablate.protocol import main as protocol_main
from gpt5_ablate.report import main as report_main

RESULTS = Path("docs") / "results"


def _without_timestamp(text: str) -> str:
    return re.sub(r"^Generated \d{4}-\d\d-\d\d \d\d:\d\d UTC", "Generated", text, flags=re.M)


def test_the_committed_compare_report_regenerates_from_its_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO_ROOT)  # the report names its source by the path it was given
    committed = RESULTS / "cpu_hour" / "compare"
    sweep = json.loads((RESULTS / "cpu_hour" / "protocol.json").read_text())["sweeps"]["compare"]
    status = report_main(
        [f"source={RESULTS / 'cpu_hour' / 'export'}", f"sweep={sweep}", f"out={tmp_path}"]
    )
    assert status == 0
    fresh = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert _without_timestamp(fresh) == _without_timestamp(
        (committed / "report.md").read_text(encoding="utf-8")
    )
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "verdict.csv"), pd.read_csv(committed / "verdict.csv")
    )
    assert "the committed export `docs/results/cpu_hour/export`" in fresh
    assert "VALIDATION split" in fresh  # these runs predate the test split, and it says so
    assert "Not drawn: these runs' metric histories are not available" in fresh


def test_the_protocol_reports_from_the_export_when_its_store_is_gone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cpu_hour"
    (out / "export").mkdir(parents=True)
    shutil.copy(REPO_ROOT / RESULTS / "cpu_hour" / "protocol.json", out)
    shutil.copy(REPO_ROOT / RESULTS / "cpu_hour" / "export" / "export.json", out / "export")
    store = f"sqlite:///{tmp_path / 'absent.db'}"
    argv = ["name=cpu_hour", f"tracking.uri={store}", f"out={out}", "stages=report", "dry_run=true"]
    assert protocol_main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count(f"source={out / 'export'}") == 2  # compare and design


def test_an_export_round_trips_and_bad_sources_say_what_to_pass(tmp_path: Path) -> None:
    data = load_export(REPO_ROOT / RESULTS / "gpt_oss_choices" / "export")
    assert len(data.runs) == 16 and data.history.empty
    tables = data.per_document(data.runs["run_id"].tolist())
    assert len(tables) == 16
    write_export(data, tmp_path / "copy", tables, origin="test")
    again = load_export(tmp_path / "copy")
    pd.testing.assert_frame_equal(
        again.runs[["run_id", "arm", "full_val_loss", "context_len"]],
        data.runs[["run_id", "arm", "full_val_loss", "context_len"]],
    )
    run_id = data.runs["run_id"].iloc[0]
    pd.testing.assert_frame_equal(again.per_document([run_id])[run_id], tables[run_id])
    with pytest.raises(InputError, match=r"no export\.json"):
        load_export(tmp_path)


def test_runs_with_a_test_split_are_compared_and_bootstrapped_on_it(tmp_path: Path) -> None:
    """An export of runs that logged both splits: the report reads the test split's loss and
    documents by default, and validation's loss and documents with metric=final_val_loss."""
    source = load_export(REPO_ROOT / RESULTS / "gpt_oss_choices" / "export")
    tables = source.per_document(source.runs["run_id"].tolist())
    source.runs["full_test_loss"] = source.runs["full_val_loss"] + 0.01
    write_export(source, tmp_path, tables, per_document_val=tables)
    data = load_export(tmp_path)
    for metric, column, split, artifact in (
        ("final_loss", "full_test_loss", "test", "eval/per_document.csv"),
        ("final_val_loss", "full_val_loss", "validation", "eval/per_document_val.csv"),
    ):
        analysis = analyse(data, ReportSettings(metric=metric, bootstrap_samples=50))
        assert analysis.response == column
        notes = analysis.primary.notes
        assert f"{split}-split documents, from `{artifact}`." in " ".join(notes)
        assert all(c.doc_ci is not None for c in analysis.primary.verdicts.comparisons)
