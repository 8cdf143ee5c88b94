"""Generate ``compare_runs.ipynb`` from the cell sources below (run: python notebooks/make_notebook.py).

The notebook is kept as generated code so diffs stay reviewable; it is committed without outputs.
``tests/test_analysis.py`` checks that the committed notebook matches this script and executes it.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

NOTEBOOK_PATH = Path(__file__).with_name("compare_runs.ipynb")

CELLS: list[tuple[str, str]] = [
    (
        "markdown",
        """# Compare ablation runs

Step-by-step version of `python -m gpt5_ablate.report`: load an experiment's runs from MLflow,
choose the runs to compare (latest sweep, one phase, one model size/budget/data), fit the
factorial model, and build the three-column verdict (measured here / public evidence /
judgement). Set the tracking URI and experiment below, or through the environment variables
`GPT5_ABLATE_TRACKING_URI` and `GPT5_ABLATE_EXPERIMENT`.""",
    ),
    (
        "code",
        """import os
import sys
import tempfile
from pathlib import Path

TRACKING_URI = os.environ.get("GPT5_ABLATE_TRACKING_URI", "sqlite:///mlflow.db")
EXPERIMENT = os.environ.get("GPT5_ABLATE_EXPERIMENT", "gpt5_ablate")
INCLUDE_UNFINISHED = False  # True also analyses FAILED / KILLED runs
METRIC = "final_val_loss"  # or "best_val_loss"
SWEEP = "latest"  # a sweep id, "latest" or "all"
MARGIN = 0.02  # equivalence margin, nats/token
FIGURE_DIR = Path(os.environ.get("GPT5_ABLATE_NOTEBOOK_OUT") or tempfile.mkdtemp(prefix="ablate_"))

# Work from the repository root, like the CLI: relative URIs such as sqlite:///mlflow.db then
# point at the same store, and the package imports without being installed.
REPO_ROOT = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "gpt5_ablate").is_dir())
os.chdir(REPO_ROOT)
sys.path.insert(0, str(REPO_ROOT))
print(f"{EXPERIMENT=} {TRACKING_URI=} {FIGURE_DIR=}")""",
    ),
    (
        "code",
        """import pandas as pd
from IPython.display import Image, Markdown, display

from gpt5_ablate.analysis import plots, plots_arms
from gpt5_ablate.analysis.judgement import rule_text
from gpt5_ablate.analysis.load import load_experiment
from gpt5_ablate.analysis.markdown import comparisons_frame, write_analysis
from gpt5_ablate.analysis.pipeline import ReportSettings, analyse
from gpt5_ablate.analysis.sections import markdown_table
from gpt5_ablate.analysis.verdict_table import verdict_frame

pd.set_option("display.max_columns", 40)
pd.set_option("display.width", 200)


def show(paths):
    \"\"\"Display the PNG of a figure the plotting functions saved (they also write an SVG).\"\"\"
    for path in paths:
        if path.suffix == ".png":
            display(Image(filename=str(path)))""",
    ),
    (
        "markdown",
        """## 1. One row per run

Only FINISHED runs unless `INCLUDE_UNFINISHED`. Factor levels, seed, phase, sweep and `lr_scale`
come from run tags; sizes, budgets and the unigram baseline from params; the final loss from
`final/val_loss` (the whole validation split) where the run logged it.""",
    ),
    (
        "code",
        """data = load_experiment(EXPERIMENT, TRACKING_URI, include_unfinished=INCLUDE_UNFINISHED)
print(f"{len(data.runs)} runs loaded; left out by status: {data.excluded or 'none'}")
columns = ["arm", "sweep_id", "phase", "model", "seed", "lr_scale", "budget_tokens",
           "unigram_val_loss", "final_val_loss", "final_val_loss_source", "best_val_loss"]
data.runs[columns]""",
    ),
    (
        "markdown",
        """## 2. Metric histories (long table)

One row per (run, metric, step), with the tokens seen and the wall-clock seconds at that step.""",
    ),
    (
        "code",
        """print(data.history.shape)
display(data.history.groupby("metric").size().rename("points"))
data.history.head()""",
    ),
    (
        "markdown",
        """## 3. Which runs are compared, and the model

`analyse` picks the latest sweep, keeps LR-selection runs (`phase=select`) out of comparisons,
leaves out runs of another model preset, budget or data (with a warning), picks each arm's
best `lr_scale` when swept, keeps arms within 0.5 nats of the unigram loss out of the verdict,
and fits the factorial model.""",
    ),
    (
        "code",
        """analysis = analyse(data, ReportSettings(metric=METRIC, sweep=SWEEP, equivalence_margin=MARGIN))
for message in analysis.warnings + analysis.selection.notes:
    print("-", message)
group = analysis.primary
runs = group.runs
print(f"Compared on: {analysis.response_note}")
print(f"Group: {group.label}; model: {group.fit.method}, {group.fit.df_resid:g} residual df")
for note in group.notes:
    print("-", note)
group.lr.table""",
    ),
    (
        "markdown",
        """## 4. Arms: size, compute, loss (intervals from 3 seeds) and distance to the unigram baseline""",
    ),
    ("code", """group.arms"""),
    ("markdown", """## 5. Validation loss vs tokens seen (dashed line: unigram baseline)"""),
    ("code", """show(plots.plot_val_loss_curves(data.history, runs, FIGURE_DIR))"""),
    ("markdown", """## 6. Final perplexity per arm (exp of the loss interval)"""),
    ("code", """show(plots_arms.plot_final_perplexity(runs, FIGURE_DIR))"""),
    (
        "markdown",
        """## 7. Main effects (model marginal means) and two-factor interactions""",
    ),
    (
        "code",
        """marginal = group.fit.marginal_table() if group.fit.ok else None
display(marginal)
show(plots_arms.plot_main_effects(runs, FIGURE_DIR, marginal=marginal))
show(plots_arms.plot_interactions(runs, FIGURE_DIR))""",
    ),
    ("markdown", """## 8. Efficiency and KV cache"""),
    (
        "code",
        """show(plots.plot_efficiency(data.history, runs, FIGURE_DIR))
show(plots_arms.plot_kv_cache(runs, FIGURE_DIR))""",
    ),
    (
        "markdown",
        """## 9. The tests behind the verdict

Every comparison (best level vs each other level, pooled or per condition when an interaction
is material) with its simultaneous interval, Holm-adjusted p, TOST equivalence p and the
document-level bootstrap interval; then the interaction checks and each factor's power.""",
    ),
    (
        "code",
        """display(comparisons_frame(analysis))
for result in group.verdicts.factors:
    for check in result.interactions:
        print(check.text())
    if result.power:
        print(f"{result.factor}: {result.power.text()}")""",
    ),
    (
        "markdown",
        """## 10. Verdict: measured here, public evidence, judgement""",
    ),
    (
        "code",
        """verdict = verdict_frame(analysis)
display(Markdown(markdown_table(verdict)))
display(Markdown(f"**Judgement rule.** {rule_text(analysis.judgement_settings)}"))""",
    ),
    (
        "markdown",
        """## 11. The full report

`python -m gpt5_ablate.report experiment=<name> tracking.uri=<uri>` writes this analysis as a
Markdown report with its figures; from here, `write_analysis(analysis, data, out_dir)` does the
same.""",
    ),
]


def build_notebook() -> nbformat.NotebookNode:
    cells = []
    for index, (kind, source) in enumerate(CELLS):
        cell = new_markdown_cell(source) if kind == "markdown" else new_code_cell(source)
        # Fixed ids keep regeneration byte-for-byte stable (nbformat would draw random ones).
        cell["id"] = f"cell-{index:02d}"
        cells.append(cell)
    notebook = new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
        "name": "python3",
    }
    notebook.metadata["language_info"] = {"name": "python"}
    return notebook


def main() -> None:
    nbformat.write(build_notebook(), NOTEBOOK_PATH)
    print(f"Wrote {NOTEBOOK_PATH}")


if __name__ == "__main__":
    main()
