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
pick each arm's best learning rate (if swept), plot the curves and effects, and compute the
verdict table. Set the tracking URI and experiment below, or through the environment variables
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

from gpt5_ablate.analysis import plots, stats
from gpt5_ablate.analysis.load import load_experiment
from gpt5_ablate.analysis.markdown import verdict_markdown, write_report

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

Only FINISHED runs unless `INCLUDE_UNFINISHED`. Factor levels, seed and `lr_scale` come from
run tags; sizes and compute from params; best/final metrics from the metric histories.""",
    ),
    (
        "code",
        """data = load_experiment(EXPERIMENT, TRACKING_URI, include_unfinished=INCLUDE_UNFINISHED)
print(f"{len(data.runs)} runs loaded; left out by status: {data.excluded or 'none'}")
columns = ["arm", *stats.FACTORS, "seed", "lr_scale", "n_params", "tokens_seen", "wall_time_s",
           "best_val_loss", "final_val_loss", "final_val_accuracy", "final_val_perplexity"]
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
        """## 3. Learning-rate selection

With several `lr_scale` values per arm, each arm is compared at its own best one (lowest
seed-averaged final validation loss). Without a sweep nothing changes.""",
    ),
    (
        "code",
        """selection = stats.select_best_lr(data.runs, METRIC)
runs = selection.runs
print("LR sweep present:", selection.swept)
selection.table""",
    ),
    (
        "markdown",
        """## 4. Arms: size, compute and final metrics

Check whether arms are compute-matched before reading loss differences as design effects.""",
    ),
    ("code", """stats.arm_summary(runs)"""),
    ("markdown", """## 5. Validation loss vs tokens seen"""),
    ("code", """show(plots.plot_val_loss_curves(data.history, runs, FIGURE_DIR))"""),
    ("markdown", """## 6. Final perplexity per arm (95% t-interval over seeds)"""),
    ("code", """show(plots.plot_final_perplexity(runs, FIGURE_DIR))"""),
    (
        "markdown",
        """## 7. Main effects and two-factor interactions

Main effects average over the other factors; interaction residuals show where two factors do
not simply add up (needs at least two varied factors).""",
    ),
    (
        "code",
        """display(stats.main_effects(runs, METRIC))
show(plots.plot_main_effects(runs, FIGURE_DIR, METRIC))
show(plots.plot_interactions(runs, FIGURE_DIR, METRIC))""",
    ),
    ("markdown", """## 8. Efficiency: loss vs wall-clock time and vs training FLOPs"""),
    ("code", """show(plots.plot_efficiency(data.history, runs, FIGURE_DIR))"""),
    ("markdown", """## 9. KV-cache bytes per token vs validation loss"""),
    ("code", """show(plots.plot_kv_cache(runs, FIGURE_DIR))"""),
    (
        "markdown",
        """## 10. Verdict

For each varied factor: the better level, the paired effect on validation loss (better − other,
over runs that differ only in that factor) with a 95% CI, and the choice the numbers support.""",
    ),
    (
        "code",
        """verdicts = stats.factor_verdicts(runs, METRIC)
display(Markdown(verdict_markdown(verdicts)) if verdicts else "No factor varies.")
stats.comparisons_frame(verdicts)""",
    ),
    (
        "markdown",
        """The matched pairs behind the first factor's effect (one row per pair of runs):""",
    ),
    (
        "code",
        """if verdicts:
    first = verdicts[0].comparisons[0]
    display(stats.paired_differences(runs, first.factor, first.level, first.reference, METRIC))""",
    ),
    (
        "markdown",
        """## 11. The full report

`python -m gpt5_ablate.report experiment=<name> tracking.uri=<uri>` writes this analysis as a
Markdown report with its figures; from here, `write_report(data, out_dir, METRIC)` does the
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
