"""Analysis layer: MLflow runs -> tables, statistics, figures and the Markdown ablation report.

* :mod:`~gpt5_ablate.analysis.load` – ``load_experiment`` / ``load_runs`` (one row per run and a
  long metric-history table, via the MLflow API);
* :mod:`~gpt5_ablate.analysis.stats` – t-intervals, paired factor effects, verdicts, LR selection;
* :mod:`~gpt5_ablate.analysis.plots` – the figures (PNG + SVG);
* :mod:`~gpt5_ablate.analysis.markdown` – ``write_report`` (used by ``python -m gpt5_ablate.report``).
"""

from gpt5_ablate.analysis.load import ExperimentData, load_experiment, load_runs
from gpt5_ablate.analysis.stats import (
    FACTORS,
    Interval,
    factor_effect,
    factor_verdicts,
    mean_ci,
    paired_differences,
    select_best_lr,
    t_quantile,
)

__all__ = [
    "FACTORS",
    "ExperimentData",
    "Interval",
    "factor_effect",
    "factor_verdicts",
    "load_experiment",
    "load_runs",
    "mean_ci",
    "paired_differences",
    "select_best_lr",
    "t_quantile",
]
