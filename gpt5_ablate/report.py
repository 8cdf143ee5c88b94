"""Command line: turn an MLflow experiment into a Markdown ablation report.

    python -m gpt5_ablate.report experiment=quick tracking.uri=sqlite:///mlflow.db out=reports/quick

Arguments are ``key=value`` pairs (the same spelling as the training CLI's Hydra overrides):

* ``experiment``         MLflow experiment name (default ``gpt5_ablate``)
* ``tracking.uri``       MLflow tracking URI (default ``sqlite:///mlflow.db``)
* ``out``                output directory (default ``reports/<experiment>``)
* ``include_unfinished`` also analyse FAILED/KILLED/RUNNING runs (default ``false``)
* ``metric``             ``final_val_loss`` (default) or ``best_val_loss``
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gpt5_ablate.errors import InputError

METRICS = ("final_val_loss", "best_val_loss")
TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off"}


@dataclass
class ReportArgs:
    experiment: str = "gpt5_ablate"
    tracking_uri: str = "sqlite:///mlflow.db"
    out: Path | None = None
    include_unfinished: bool = False
    metric: str = "final_val_loss"

    @property
    def out_dir(self) -> Path:
        return self.out if self.out is not None else Path("reports") / self.experiment


def parse_args(argv: Sequence[str]) -> ReportArgs:
    """Parse ``key=value`` arguments; a leading ``+`` (Hydra's append syntax) is tolerated."""
    args = ReportArgs()
    for item in argv:
        key, sep, value = item.lstrip("+").partition("=")
        if not sep:
            raise InputError(f"Argument {item!r} is not key=value.\n{__doc__}")
        if key == "experiment":
            args.experiment = value
        elif key in ("tracking.uri", "tracking_uri"):
            args.tracking_uri = value
        elif key == "out":
            args.out = Path(value)
        elif key == "include_unfinished":
            if value.lower() not in TRUE | FALSE:
                raise InputError(f"include_unfinished={value!r}: use true or false.")
            args.include_unfinished = value.lower() in TRUE
        elif key == "metric":
            if value not in METRICS:
                raise InputError(
                    f"metric={value!r} is invalid. Valid choices: {', '.join(METRICS)}."
                )
            args.metric = value
        else:
            raise InputError(
                f"Unknown argument {key!r}. Valid keys: experiment, tracking.uri, out, "
                "include_unfinished, metric."
            )
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help", "help") for a in argv):
        print(__doc__)
        return 0
    try:
        args = parse_args(argv)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    # Imported late so argument errors and --help answer without paying MLflow's import time.
    # Headless: the report only writes files; select Agg before anything imports pyplot.
    import matplotlib

    matplotlib.use("Agg")
    from gpt5_ablate.analysis.load import load_experiment
    from gpt5_ablate.analysis.markdown import write_report

    try:
        data = load_experiment(args.experiment, args.tracking_uri, args.include_unfinished)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    path = write_report(data, args.out_dir, args.metric)
    print(f"Wrote {path} ({len(data.runs)} runs from experiment {args.experiment!r}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
