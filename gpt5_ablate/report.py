"""Command line: turn an MLflow experiment into a Markdown ablation report.

    python -m gpt5_ablate.report experiment=quick tracking.uri=sqlite:///mlflow.db out=reports/quick
    python -m gpt5_ablate.report source=docs/results/cpu_hour/export sweep=<id> out=...

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
    metric: Literal["final_loss", "final_val_loss", "best_val_loss"] = field(
        default="final_loss",
        metadata={
            "help": "final_loss (held-out test split where every run logged it, else the full "
            "validation split), final_val_loss (validation split) or best_val_loss"
        },
    )
    source: Path | None = field(
        default=None,
        metadata={
            "help": "read an export directory (export.json, runs.csv, per-document CSVs) "
            "instead of MLflow; experiment and tracking.uri are then ignored"
        },
    )
    export: Path | None = field(
        default=None,
        metadata={"help": "also write the analysed experiment as an export directory here"},
    )
    w_openai: float = field(
        default=4.0, metadata={"help": "judgement: weight of OpenAI's gpt-oss vote"}
    )
    posterior_threshold: float = field(
        default=0.6,
        metadata={"help": "judgement: posterior share a level needs to be 'most consistent'"},
    )
    measured_votes: float = field(
        default=2.0,
        metadata={"help": "judgement: votes a replicated measured effect adds (its bound)"},
    )
    min_sizes: int = field(
        default=3, metadata={"help": "judgement: sizes a measured effect must hold at"}
    )
    min_compute_span: float = field(
        default=100.0,
        metadata={"help": "judgement: training-compute ratio those sizes must span"},
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
        if self.w_openai < 0 or self.measured_votes < 0:
            raise ConfigError(
                f"w_openai={self.w_openai} and measured_votes={self.measured_votes} must be >= 0."
            )
        if not 0 < self.posterior_threshold <= 1:
            raise ConfigError(
                f"posterior_threshold={self.posterior_threshold} must be in (0, 1], e.g. 0.6."
            )
        if self.min_sizes < 1 or self.min_compute_span < 1:
            raise ConfigError(
                f"min_sizes={self.min_sizes} and min_compute_span={self.min_compute_span} must "
                "be >= 1."
            )


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
    from gpt5_ablate.analysis.export import load_export, write_export
    from gpt5_ablate.analysis.judgement import JudgementSettings
    from gpt5_ablate.analysis.load import load_experiment
    from gpt5_ablate.analysis.markdown import write_analysis
    from gpt5_ablate.analysis.pipeline import ReportSettings, analyse

    if args.source is not None:
        data = load_export(args.source, args.include_unfinished)
    else:
        data = load_experiment(args.experiment, args.tracking_uri, args.include_unfinished)
    judgement = JudgementSettings(
        w_openai=args.w_openai,
        threshold=args.posterior_threshold,
        measured_votes=args.measured_votes,
        min_sizes=args.min_sizes,
        min_compute_span=args.min_compute_span,
    )
    settings = ReportSettings(
        metric=args.metric,
        sweep=args.sweep,
        group_unlike=args.group_unlike,
        equivalence_margin=args.equivalence_margin,
        alpha=args.alpha,
        bootstrap_samples=args.bootstrap_samples,
        per_document=args.bootstrap_samples > 0,
        judgement=judgement,
    )
    analysis = analyse(data, settings)
    for warning in analysis.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    path = write_analysis(analysis, data, args.out_dir)
    if args.export is not None:
        run_ids = data.runs["run_id"].tolist()
        write_export(
            data,
            args.export,
            data.per_document(run_ids),
            per_document_val=data.per_document(run_ids, validation=True),
        )
        print(f"Wrote the export {args.export} ({len(data.runs)} runs).")
    print(
        f"Wrote {path} ({len(analysis.selection.runs)} runs of experiment {data.experiment!r}, "
        f"{analysis.selection.sweep})."
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The command: exit status 0, or 2 with one ``error:`` line for bad arguments or input."""
    return run_tool(report, argv)


if __name__ == "__main__":
    sys.exit(main())
