"""Analysis layer: MLflow runs -> tables, statistics, figures and the Markdown ablation report.

* :mod:`~gpt5_ablate.analysis.load` – ``load_experiment`` / ``load_runs`` (one row per run and a
  long metric-history table, via the MLflow API);
* :mod:`~gpt5_ablate.analysis.select` – which runs a report compares (sweep, phase, budgets,
  the unigram plateau);
* :mod:`~gpt5_ablate.analysis.stats` – intervals, pairs, per-arm summaries, LR selection;
* :mod:`~gpt5_ablate.analysis.design` – the factorial linear model (statsmodels);
* :mod:`~gpt5_ablate.analysis.verdict` – Holm, equivalence tests, interactions, per-factor
  outcomes; :mod:`~gpt5_ablate.analysis.power` – detectable effects and seeds needed;
* :mod:`~gpt5_ablate.analysis.docboot` – the document-level bootstrap of evaluation noise;
* :mod:`~gpt5_ablate.analysis.evidence` – the cited public-evidence table
  (``public_evidence.yaml``: every model × factor, or ``undisclosed``);
* :mod:`~gpt5_ablate.analysis.judgement` – the weighted judgement rule, its posterior and its
  sensitivity line (``judgement(factor, table, measured_sizes, settings)``);
* :mod:`~gpt5_ablate.analysis.export` – a plain-file export that ``report source=<dir>`` reads
  instead of MLflow (committed results regenerate from it);
* :mod:`~gpt5_ablate.analysis.lr_grid` – best LR per arm, interior or edge, next grid point;
* :mod:`~gpt5_ablate.analysis.compute` – compute multipliers across model sizes;
* :mod:`~gpt5_ablate.analysis.ladder` – the scale ladder's data (``ladder_sizes``);
  :mod:`~gpt5_ablate.analysis.ladder_report` – its report (``write_ladder_report``);
  :mod:`~gpt5_ablate.analysis.plots_ladder` – its figures;
* :mod:`~gpt5_ablate.analysis.pipeline` – ``analyse`` (all of the above for one experiment);
* :mod:`~gpt5_ablate.analysis.verdict_table` – the verdict table (``verdict_frame``) and the
  report sections that show it and the public evidence;
* :mod:`~gpt5_ablate.analysis.plots`, :mod:`~gpt5_ablate.analysis.plots_arms` – the figures;
* :mod:`~gpt5_ablate.analysis.sections`, :mod:`~gpt5_ablate.analysis.markdown` – the report text
  and ``write_report`` (used by ``python -m gpt5_ablate.report``).
"""

from gpt5_ablate.analysis.load import ExperimentData, load_experiment, load_runs
from gpt5_ablate.analysis.pipeline import Analysis, ReportSettings, analyse
from gpt5_ablate.analysis.stats import (
    FACTORS,
    Interval,
    mean_ci,
    paired_differences,
    select_best_lr,
    t_quantile,
)
from gpt5_ablate.analysis.verdict_table import verdict_frame

__all__ = [
    "FACTORS",
    "Analysis",
    "ExperimentData",
    "Interval",
    "ReportSettings",
    "analyse",
    "load_experiment",
    "load_runs",
    "mean_ci",
    "paired_differences",
    "select_best_lr",
    "t_quantile",
    "verdict_frame",
]
