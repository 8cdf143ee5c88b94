"""What ``--help`` and the README say matches the config and the tests: every preset, the run-dir
pattern, the markers, where outputs go."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import tomllib

from gpt5_ablate.cli import CONFIG_DIR, REPO_ROOT
from tests.test_reliability import cli_env

README = (REPO_ROOT / "README.md").read_text()
GROUPS_IN_HELP = ("attention", "norm", "pos", "ffn", "window", "sinks", "model", "optimizer")


@pytest.fixture(scope="module")
def help_text() -> str:
    done = subprocess.run(
        [sys.executable, "-m", "gpt5_ablate", "--help"],
        cwd=REPO_ROOT, env=cli_env(), text=True, capture_output=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize("group", GROUPS_IN_HELP)
def test_help_and_readme_list_every_option(group: str, help_text: str) -> None:
    line = next(x for x in help_text.splitlines() if x.strip().startswith(f"{group} "))
    row = next(x for x in README.splitlines() if x.startswith(f"| `{group}` |"))
    for option in options(group):
        assert re.search(rf"\b{option}\b", line), f"--help omits {group}={option}"
        assert f"`{option}`" in row, f"README's Configuration table omits {group}={option}"


def test_help_shows_the_run_dir_pattern_of_the_config(help_text: str) -> None:
    config = (CONFIG_DIR / "config.yaml").read_text()
    assert "${gpt5_ablate_arm:}-${model.name}-s${seed}-${gpt5_ablate_run_hash:}" in config
    assert "outputs/<tracking.experiment>/<arm>-<preset>-s<seed>-<hash>/" in help_text
    assert "trainer.resume=false" in help_text  # how to retrain a finished run


def test_readme_names_every_declared_marker_and_each_is_used() -> None:
    options = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["pytest"]
    names = {m.split(":")[0].strip() for m in options["ini_options"]["markers"]}
    tests_section = README[README.index("## Tests") :]
    assert all(f"`{name}`" in tests_section for name in names), names
    sources = "".join(p.read_text() for p in (REPO_ROOT / "tests").glob("test_*.py"))
    for name in names:
        assert f"pytest.mark.{name}" in sources, f"README names marker {name!r}; no test uses it"


def test_readme_says_where_mlflow_artifacts_go_and_gives_the_run_time_as_a_range() -> None:
    outputs = README[README.index("## Where outputs go") : README.index("## When things go wrong")]
    assert "./mlruns/" in outputs
    setup = README[README.index("## Set up and run") : README.index("## Sweep and compare")]
    assert re.search(r"\d+–\d+ s measured", setup)


def test_typed_protocol_times_match_the_committed_runs() -> None:
    """The minutes the README and the protocol's YAML quote are the committed run's wall time."""
    recorded = json.loads((REPO_ROOT / "docs/results/cpu_ladder/protocol.json").read_text())
    minutes = f"{recorded['wall_s'] / 60:.1f} min measured"
    yaml_head = (CONFIG_DIR / "protocol" / "cpu_ladder.yaml").read_text().splitlines()[0]
    readme_line = next(x for x in README.splitlines() if "protocol name=cpu_ladder " in x)
    assert minutes in yaml_head, f"{yaml_head!r} should quote {minutes!r}"
    assert minutes in readme_line, f"{readme_line!r} should quote {minutes!r}"
    table = (REPO_ROOT / "experiments/README.md").read_text()
    row = next(x for x in table.splitlines() if x.startswith("| `cpu_ladder` |"))
    assert f"**{minutes}**" in row, (
        f"experiments/README.md's cpu_ladder row should quote {minutes!r}"
    )
    for name in ("cpu_ladder_3tpp", "cpu_ladder_20tpp"):
        budget = json.loads((REPO_ROOT / f"docs/results/{name}/protocol.json").read_text())
        minutes = f"{budget['wall_s'] / 60:.1f} min measured"
        row = next(x for x in table.splitlines() if f"docs/results/{name}/" in x)
        assert f"**{minutes}**" in row, f"the {name} row should quote {minutes!r}"


def test_concurrency_tables_and_speedups_are_the_committed_measurements() -> None:
    """docs/performance.md shows each committed concurrency table as written, and the speed-ups
    the README and experiments/README.md quote are the best of those tables' rows."""
    performance = (REPO_ROOT / "docs/performance.md").read_text()
    speedups = []
    for record in sorted((REPO_ROOT / "docs/bench_concurrent").glob("concurrent-*.md")):
        table = record.read_text().split("\n\n", 1)[1].strip()
        assert table in performance, f"docs/performance.md should show {record.name} as written"
        rows = json.loads(record.with_suffix(".json").read_text())["rows"]
        speedups.append(max(row["speedup"] for row in rows))
    quoted = f"{min(speedups):.2f}–{max(speedups):.2f}x"
    assert quoted in README, f"README should quote {quoted}"
    assert quoted in (REPO_ROOT / "experiments/README.md").read_text()
