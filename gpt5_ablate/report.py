"""Command line: turn an MLflow experiment into a Markdown ablation report.

    python -m gpt5_ablate.report experiment=quick tracking.uri=sqlite:///mlflow.db out=reports/quick

Arguments are ``key=value`` pairs (the training CLI's spelling), parsed by
:func:`gpt5_ablate.cli_args.parse_key_values`; ``--help`` lists them and ``--cfg job`` prints the
parsed values. Bad arguments or an unusable store end with one ``error: ...`` line and exit
status 2. By default the latest sweep of the experiment is analysed.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from gpt5_ablate.cli_args import parse_key_values, run_tool
from gpt5_ablate.errors import ConfigError

SUMMARY = "Analyse an MLflow experiment's runs and write a Markdown ablation report."


@dataclass
class ReportArgs:
    experiment: str = field(default="gpt5_ablate", metadata={"help": "MLflow experiment name"})
    tracking_uri: str = field(
        default="sqlite:///mlflow.db", metadata={"help": "MLflow tracking URI (tracking.uri)"}
    )
    out: Path | None = field(
        default=None, metadata={"help": "output directory (default reports/<experiment>)"}
    )
    sweep: str = field(
        default="latest",
        metadata={"help": "sweep id (or unique prefix) to analyse, 'latest' or 'all'"},
    )
    group_unlike: bool = field(
        default=False,
        metadata={
            "help": "analyse runs of different model preset/budget/data as separate groups "
            "instead of leaving the minority out"
        },
    )
    equivalence_margin: float = field(
        default=0.02, metadata={"help": "TOST equivalence margin in nats/token"}
    )
    alpha: float = field(default=0.05, metadata={"help": "family-wise error rate (Holm)"})
    bootstrap_samples: int = field(
        default=1000, metadata={"help": "document-level bootstrap resamples (0 skips it)"}
    )
    include_unfinished: bool = field(
        default=False, metadata={"help": "also analyse FAILED/KILLED/RUNNING runs"}
    )
    metric: Literal["final_val_loss", "best_val_loss"] = field(
        default="final_val_loss",
        metadata={"help": "final_val_loss (full split where logged) or best_val_loss"},
    )

    @property
    def out_dir(self) -> Path:
        return self.out if self.out is not None else Path("reports") / self.experiment

    def validate(self) -> None:
        if self.equivalence_margin <= 0:
            raise ConfigError(f"equivalence_margin={self.equivalence_margin} must be positive.")
        if not 0 < self.alpha < 1:
            raise ConfigError(f"alpha={self.alpha} must be between 0 and 1.")
        if self.bootstrap_samples < 0:
            raise ConfigError(f"bootstrap_samples={self.bootstrap_samples} must be >= 0.")


def parse_args(argv: Sequence[str]) -> ReportArgs:
    args = parse_key_values(ReportArgs, argv, "python -m gpt5_ablate.report", SUMMARY)
    args.validate()
    return args


def report(argv: Sequence[str]) -> int:
    """Parse ``argv``, analyse and write the report (errors propagate; see :func:`main`)."""
    args = parse_args(argv)
    # Imported late so argument errors and --help answer without paying MLflow's import time.
    # Headless: the report only writes files; select Agg before anything imports pyplot.
    import matplotlib

    matplotlib.use("Agg")
    from gpt5_ablate.analysis.load import load_experiment
    from gpt5_ablate.analysis.markdown import write_analysis
    from gpt5_ablate.analysis.pipeline import ReportSettings, analyse

    data = load_experiment(args.experiment, args.tracking_uri, args.include_unfinished)
    settings = ReportSettings(
        metric=args.metric,
        sweep=args.sweep,
        group_unlike=args.group_unlike,
        equivalence_margin=args.equivalence_margin,
        alpha=args.alpha,
        bootstrap_samples=args.bootstrap_samples,
        per_document=args.bootstrap_samples > 0,
    )
    analysis = analyse(data, settings)
    for warning in analysis.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    path = write_analysis(analysis, data, args.out_dir)
    print(
        f"Wrote {path} ({len(analysis.selection.runs)} runs of experiment {args.experiment!r}, "
        f"{analysis.selection.sweep})."
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The command: exit status 0, or 2 with one ``error:`` line for bad arguments or input."""
    return run_tool(report, argv)


if __name__ == "__main__":
    sys.exit(main())
