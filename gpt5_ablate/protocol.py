"""``python -m gpt5_ablate.protocol name=cpu_hour``: a fair experiment, run as three stages.

1. **LR selection** (``phase=select``, one seed): per optimizer, a log2-spaced grid of learning
   rates around its default. A best rate at an edge of the grid is only a bound, so the grid is
   extended by one step on that side (up to ``max_extensions`` times) until the best is interior.
2. **Optimizer comparison** (``phase=report``, fresh seeds): every optimizer at its own best rate.
3. **Architecture design** (``phase=report``, fresh seeds): a factorial over design factors at
   the chosen optimizer's best rate.

Selecting on one seed and reporting on others keeps the selection's luck out of the reported
effects; the analysis refuses to mix the two phases. Each stage is one sweep (one ``sweep_id``),
so ``python -m gpt5_ablate.report sweep=<id>`` analyses it alone; the stage reports, the LR
bracket and the wall times go to ``out`` (``protocol.json``, ``protocol.md``, ``<stage>/``).

Protocols are YAML files in ``conf/protocol/`` (keys: ``ProtocolConfig``).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gpt5_ablate.cli_args import parse_key_values, run_tool
from gpt5_ablate.errors import ConfigError, InputError
from gpt5_ablate.ladder import (
    ContextSet,
    Ladder,
    LadderSize,
    check_ladder,
    context_sets,
    merge_overrides,
)
from gpt5_ablate.registry import as_typed
from gpt5_ablate.train.finished import SWEEP_MEMBER_TAG
from gpt5_ablate.train.tracking import sqlite_file

PROTOCOL_DIR = Path(__file__).resolve().parent.parent / "conf" / "protocol"
SWEEP_ID_ENV = "GPT5_ABLATE_SWEEP_ID"  # shared by a stage's sweeps (hydra_callbacks reads it)


@dataclass
class LrGrid:
    optimizer: str  # the optimizer option (its own best rate is searched)
    center: float  # the grid's middle rate (the preset's default)
    key: str = "optimizer.lr"  # muon_adamw: Muon's rate; its AdamW-side rate is optimizer.adamw_lr
    points: int = 5
    step: float = 2.0  # multiplicative spacing (log2 steps)
    max_extensions: int = 2

    def rates(self) -> list[float]:
        half = self.points // 2
        return [_round(self.center * self.step**k) for k in range(-half, self.points - half)]


@dataclass
class ProtocolConfig:
    name: str = "cpu_hour"
    experiment: str = "cpu_hour"  # MLflow experiment (tracking.experiment)
    run_overrides: list[str] = field(default_factory=list)  # every run: preset, budget, threads
    sweep_overrides: list[str] = field(default_factory=list)  # every sweep: the launcher
    lr_grids: list[LrGrid] = field(default_factory=list)
    select_seed: int = 0
    compare_seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    design: dict[str, list[str]] = field(default_factory=dict)  # factor -> levels
    design_optimizer: str = "muon_adamw"
    design_seeds: list[int] = field(default_factory=lambda: [1, 2])
    # A scale ladder (gpt5_ablate/ladder.py): select and compare at every size; empty: one size.
    sizes: list[LadderSize] = field(default_factory=list)
    context: ContextSet | None = None  # long-context window x sinks set (ladders only)
    parallel_runs: int = 1  # ladder runs training at once (one process each)
    # Ladders: passes over an optimizer's rate grids (coordinate descent; 2 re-checks each rate
    # at the others' best, which matters when two rates interact, e.g. matrices vs embeddings).
    selection_rounds: int = 1


@dataclass
class ProtocolArgs:
    name: str = field(default="cpu_hour", metadata={"help": "conf/protocol/<name>.yaml"})
    tracking_uri: str = "sqlite:///mlflow.db"
    out: str | None = field(default=None, metadata={"help": "default: reports/<name>"})
    stages: str = field(
        default="select,compare,design,context,report",
        metadata={
            "help": "stages to run (ladders also: context); 'report' alone rewrites the reports "
            "of a finished run"
        },
    )
    stamp: str | None = field(
        default=None,
        metadata={
            "help": "resume a protocol run: its sweep ids (the stamp it printed as it started), "
            "and for ladders the selections and context sweeps its protocol.json records"
        },
    )
    dry_run: bool = field(default=False, metadata={"help": "print the commands only"})
    # Scale without editing the protocol file (both are recorded in protocol.json).
    sizes: str | None = field(
        default=None,
        metadata={"help": "ladders: run only these of the protocol's sizes, comma-separated"},
    )
    tokens_per_param: float | None = field(
        default=None,
        metadata={
            "help": "every run's budget in tokens per non-embedding parameter, replacing the "
            "protocol's (~20 is compute-optimal)"
        },
    )
    selection_rounds: int | None = field(
        default=None,
        metadata={
            "help": "ladders: rounds of coordinate descent over each optimizer's rates, replacing "
            "the protocol's (resumed under stamp=, only the new round's runs train)"
        },
    )
    reference_ladder: str | None = field(
        default=None,
        metadata={
            "help": "ladders: out dirs (comma-separated) of runs of this ladder at other "
            "tokens_per_param; the report adds how many more tokens AdamW needs at each shared size"
        },
    )


def _round(rate: float) -> float:
    return float(f"{rate:.4g}")


def load_protocol(name: str) -> ProtocolConfig:
    from omegaconf import OmegaConf

    path = PROTOCOL_DIR / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PROTOCOL_DIR.glob("*.yaml")))
        raise ConfigError(f"name={name!r}: no conf/protocol/{name}.yaml. Valid choices: {known}.")
    config = as_typed(ProtocolConfig, OmegaConf.load(path))
    check_ladder(config)
    for grid in config.lr_grids:
        if grid.points < 3 or grid.step <= 1 or grid.center <= 0:
            raise ConfigError(
                f"{path}: lr grid for {grid.optimizer} needs points >= 3, step > 1, center > 0."
            )
    return config


def apply_scale(protocol: ProtocolConfig, args: ProtocolArgs) -> ProtocolConfig:
    """The command line's ``sizes=``, ``tokens_per_param=`` and ``selection_rounds=`` applied to
    the protocol file's settings; refused, naming the valid choices, before anything runs."""
    if args.tokens_per_param is not None:
        if not (math.isfinite(args.tokens_per_param) and args.tokens_per_param > 0):
            raise ConfigError(
                f"tokens_per_param={args.tokens_per_param} is invalid: use a positive number of "
                "training tokens per non-embedding parameter (e.g. 20, compute-optimal)."
            )
        budget = f"trainer.tokens_per_param={args.tokens_per_param:g}"
        protocol.run_overrides = merge_overrides([*protocol.run_overrides, budget])
    if args.selection_rounds is not None:
        if args.selection_rounds < 1:
            raise ConfigError(
                f"selection_rounds={args.selection_rounds} is invalid: use 1 or more rounds of "
                "coordinate descent over each optimizer's rates."
            )
        protocol.selection_rounds = args.selection_rounds
    if args.sizes is None:
        return protocol
    known = [s.name for s in protocol.sizes]
    if not known:
        # A ladder is a protocol whose file lists sizes, whatever its name.
        ladders = sorted(p.stem for p in PROTOCOL_DIR.glob("*.yaml") if load_protocol(p.stem).sizes)
        raise ConfigError(
            f"sizes={args.sizes!r}: protocol {protocol.name} is not a ladder (its file lists no "
            f"sizes). Ladders: {', '.join(ladders)}."
        )
    wanted = [name.strip() for name in args.sizes.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in known]
    if unknown or not wanted:
        raise ConfigError(
            f"sizes={args.sizes!r}: {', '.join(unknown) or 'no size named'} is not a size of "
            f"protocol {protocol.name}. Valid choices: {', '.join(known)}."
        )
    protocol.sizes = [s for s in protocol.sizes if s.name in wanted]
    context = protocol.context
    if context is not None:
        kept = [size for size in context.sizes if size in wanted]
        if not kept:
            print(
                f"Note: the long-context set runs on {', '.join(context.sizes)}, which sizes= "
                "leaves out; this run has no context set."
            )
            protocol.context = None
        else:
            context.sizes = kept
    return protocol


class Runner:
    """Runs the training CLI for a stage and reads back what it measured."""

    def __init__(self, protocol: ProtocolConfig, args: ProtocolArgs, out: Path) -> None:
        self.protocol, self.args, self.out = protocol, args, out
        self.log: list[dict[str, Any]] = []
        # Ties a protocol run's sweep ids together.
        self.stamp = args.stamp or time.strftime("%Y%m%d-%H%M%S")

    def sweep(self, stage: str, overrides: list[str], parallel: bool = True) -> None:
        """One Hydra multirun; ``parallel=False`` leaves out ``sweep_overrides`` (the launcher)
        for ladder chains, which run several sweeps at once instead."""
        p = self.protocol
        launcher = p.sweep_overrides if parallel else []
        command = [
            sys.executable, "-m", "gpt5_ablate", "-m", *launcher, *p.run_overrides,
            f"tracking.experiment={p.experiment}", f"tracking.uri={self.args.tracking_uri}",
            f"experiment_name={p.name}", *overrides,
        ]  # fmt: skip
        shown = " ".join(command[1:])
        print(f"[{stage}] {shown}\n", end="", flush=True)  # one write: chains print at once
        started = time.perf_counter()
        if not self.args.dry_run:
            env = {**os.environ, SWEEP_ID_ENV: self.sweep_id(stage)}
            done = subprocess.run(command, env=env)
            if done.returncode != 0:
                raise InputError(f"the {stage} sweep failed (exit {done.returncode}): {shown}")
        self.log.append({"stage": stage, "command": shown, "wall_s": time.perf_counter() - started})

    def create_experiment(self) -> None:
        """The MLflow experiment, with its artifacts (per-document losses, configs) kept beside
        the protocol's outputs, so a results folder holds everything its reports read."""
        from mlflow.tracking import MlflowClient

        from gpt5_ablate.train.tracking import check_tracking_uri

        check_tracking_uri(self.args.tracking_uri)
        client = MlflowClient(self.args.tracking_uri)
        if client.get_experiment_by_name(self.protocol.experiment) is None:
            location = (self.out / "artifacts").resolve().as_uri()
            client.create_experiment(self.protocol.experiment, artifact_location=location)

    def report(self, stage: str, sweep_id: str | None = None) -> None:
        """The stage's report (its sweep alone) into ``out/<stage>/``; from the committed
        ``out/export/`` when the MLflow store is not there (see gpt5_ablate.analysis.export)."""
        uri, export = self.args.tracking_uri, self.out / "export"
        store = sqlite_file(uri)
        gone = store is not None and not store.is_file()
        source = [f"source={export}"] if gone and (export / "export.json").is_file() else []
        command = [
            sys.executable, "-m", "gpt5_ablate.report", f"experiment={self.protocol.experiment}",
            f"tracking.uri={uri}", *source, f"sweep={sweep_id or self.sweep_id(stage)}",
            f"out={self.out / stage}",
        ]  # fmt: skip
        print(f"[report {stage}] {' '.join(command[1:])}", flush=True)
        if not self.args.dry_run:
            subprocess.run(command, check=False)

    def sweep_id(self, stage: str) -> str:
        return f"{self.protocol.name}-{stage}-{self.stamp}"

    def final_losses(self, stage: str, key: str) -> dict[float, float]:
        """``{rate: final full-split val loss}`` of a stage's finished runs."""
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.args.tracking_uri)
        experiment = client.get_experiment_by_name(self.protocol.experiment)
        if experiment is None:
            return {}
        sweep_id = self.sweep_id(stage)
        # A run trained by an earlier sweep and found finished by this one keeps its own
        # sweep_id and joins this one by a tag; MLflow filters have no OR, so search twice.
        runs = [
            run
            for tag in ("sweep_id", f"`{SWEEP_MEMBER_TAG}{sweep_id}`")
            for run in client.search_runs(
                [experiment.experiment_id],
                filter_string=f"tags.{tag} = '{sweep_id if tag == 'sweep_id' else 'true'}' "
                "and attributes.status = 'FINISHED'",
            )
        ]
        losses = {}
        for run in runs:
            rate = run.data.params.get(key)
            loss = run.data.metrics.get("final/val_loss", run.data.metrics.get("val/loss"))
            if rate is not None and loss is not None:
                losses[float(rate)] = loss
        return losses


def next_rate(losses: dict[float, float], step: float) -> tuple[str | None, float | None]:
    """Where the best rate of a grid sits, and the rate to try next: ``(None, None)`` when the
    best is interior, else the edge (``low``/``high``) and one step beyond it."""
    rates = sorted(losses)
    best = min(rates, key=losses.__getitem__)
    if len(rates) < 2 or rates[0] < best < rates[-1]:
        return None, None
    if best == rates[0]:
        return "low", _round(best / step)
    return "high", _round(best * step)


def select_rate(
    runner: Runner,
    grid: LrGrid,
    stage: str | None = None,
    fixed: list[str] | None = None,
    sweep: Callable[[str, list[str]], None] | None = None,
) -> dict[str, Any]:
    """Stage 1 for one optimizer: run the grid, extend it while the best rate is at an edge.
    ``fixed``: overrides every run of the grid shares (a ladder's size, rates chosen before)."""
    stage = stage or f"select-{grid.optimizer}"
    run_sweep = sweep or runner.sweep
    fixed = fixed if fixed is not None else [f"optimizer={grid.optimizer}"]
    todo = grid.rates()
    for extension in range(grid.max_extensions + 1):
        run_sweep(
            stage,
            [
                *fixed,
                f"{grid.key}={','.join(str(r) for r in todo)}",
                f"seed={runner.protocol.select_seed}",
                "phase=select",
            ],
        )
        losses = {} if runner.args.dry_run else runner.final_losses(stage, grid.key)
        if not losses:
            return {"optimizer": grid.optimizer, "key": grid.key, "rates": grid.rates(),
                    "best": grid.center, "interior": None, "losses": {}}  # fmt: skip
        best = min(losses, key=losses.__getitem__)
        edge, nxt = next_rate(losses, grid.step)
        if nxt is None or extension == grid.max_extensions:
            break
        todo = [nxt]
    return {
        "optimizer": grid.optimizer,
        "key": grid.key,
        "center": grid.center,
        "rates": sorted(losses),
        "losses": {str(r): losses[r] for r in sorted(losses)},
        "best": best,
        "interior": edge is None,
        "sweep_id": runner.sweep_id(stage),
    }


def run_protocol(args: ProtocolArgs) -> int:
    protocol = apply_scale(load_protocol(args.name), args)
    stages = {s.strip() for s in args.stages.split(",")}
    if args.reference_ladder is not None and stages != {"report"}:
        check_reference_ladder(protocol, args.reference_ladder)
    out = Path(args.out or f"reports/{protocol.name}")
    out.mkdir(parents=True, exist_ok=True)
    runner = Runner(protocol, args, out)
    if stages == {"report"}:  # regenerate the stage reports of a finished protocol
        return rerun_reports(runner)
    if not args.dry_run:
        runner.create_experiment()
        print(f"Protocol {protocol.name}, run {runner.stamp} (a cut run resumes with "
              f"stamp={runner.stamp}).")  # fmt: skip
    if protocol.sizes:
        return run_ladder(runner, stages)
    started = time.perf_counter()
    best: dict[str, float] = {g.optimizer: g.center for g in protocol.lr_grids}
    selections = []
    if "select" in stages:
        for grid in protocol.lr_grids:
            selections.append(select_rate(runner, grid))
            best[grid.optimizer] = selections[-1]["best"]
    if "compare" in stages:
        for optimizer, rate in best.items():
            seeds = ",".join(map(str, protocol.compare_seeds))
            key = next(g.key for g in protocol.lr_grids if g.optimizer == optimizer)
            runner.sweep("compare", [f"optimizer={optimizer}", f"{key}={rate}", f"seed={seeds}"])
    if "design" in stages and protocol.design:
        opt = protocol.design_optimizer
        key = next(g.key for g in protocol.lr_grids if g.optimizer == opt)
        factors = [f"{f}={','.join(levels)}" for f, levels in protocol.design.items()]
        seeds = ",".join(map(str, protocol.design_seeds))
        runner.sweep(
            "design", [*factors, f"optimizer={opt}", f"{key}={best[opt]}", f"seed={seeds}"]
        )
    for stage in ("compare", "design"):
        if stage in stages:
            runner.report(stage)
    summary = {
        "protocol": asdict(protocol),
        "selections": selections,
        "best_rates": best,
        "sweeps": {s: runner.sweep_id(s) for s in ("compare", "design")},
        "stages": runner.log,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    (out / "protocol.json").write_text(json.dumps(summary, indent=2))
    (out / "protocol.md").write_text(protocol_markdown(summary))
    print(f"Wrote {out / 'protocol.md'} ({summary['wall_s'] / 60:.1f} min).")
    return 0


def run_ladder(runner: Runner, stages: set[str]) -> int:
    """A ladder protocol: every size's chains, then its report (``gpt5_ablate/ladder.py``).
    Resumed under its own stamp, it builds on that call's ``protocol.json`` (see the ladder
    module): the stage log and wall time add up over the calls."""
    started = time.perf_counter()
    previous = _previous_summary(runner)
    ladder = Ladder(runner, previous).run(stages)
    call = previous.get("calls", 1) + 1 if previous else 1
    for entry in runner.log:
        entry["call"] = call
    summary: dict[str, Any] = {
        "protocol": asdict(runner.protocol),
        "stamp": runner.stamp,
        "experiment": runner.protocol.experiment,
        "tracking_uri": runner.args.tracking_uri,
        **ladder,
        **_reference(runner.args.reference_ladder or previous.get("reference_ladder")),
        "stages": [*previous.get("stages", []), *runner.log],
        "calls": call,
        "wall_s": round(previous.get("wall_s", 0.0) + time.perf_counter() - started, 1),
    }
    # A dry run's summary is kept apart: protocol.json records only sweeps that ran, and a
    # resumed call trusts it.
    path = runner.out / ("protocol.dry_run.json" if runner.args.dry_run else "protocol.json")
    path.write_text(json.dumps(summary, indent=2))
    if "report" in stages and not runner.args.dry_run:
        ladder_reports(runner, summary)
    print(f"Wrote {path} ({summary['wall_s'] / 60:.1f} min).")
    return 0


def check_reference_ladder(protocol: ProtocolConfig, reference: str) -> None:
    """``reference_ladder=`` names the same ladder at another budget; refused before any run."""
    from gpt5_ablate.analysis.ladder_budget import check_references

    if not protocol.sizes:
        raise ConfigError(
            f"reference_ladder={reference}: protocol {protocol.name} is not a ladder (its file "
            "lists no sizes); only a ladder's report compares budgets."
        )
    this = {"protocol": asdict(protocol), "sizes": [{"name": s.name} for s in protocol.sizes]}
    check_references(this, reference)


def _reference(reference: str | None) -> dict[str, str]:
    return {"reference_ladder": reference} if reference else {}


def _previous_summary(runner: Runner) -> dict[str, Any]:
    """``out/protocol.json`` when it is an earlier call of this protocol run (same stamp)."""
    path = runner.out / "protocol.json"
    if runner.args.stamp is None or not path.is_file():
        return {}
    try:
        summary = json.loads(path.read_text())
    except ValueError as error:
        raise InputError(
            f"{path} is damaged ({error}); move it aside to resume stamp={runner.args.stamp} "
            "without it (finished runs are still found in their run dirs)."
        ) from None
    same = summary.get("stamp") == runner.stamp and summary.get("sizes")
    if same:
        print(f"Resuming protocol run {runner.stamp}: building on {path}.")
    return summary if same else {}


def ladder_reports(runner: Runner, summary: dict[str, Any]) -> None:
    """The ladder's own report (sizes, multipliers, trend) and each context sweep's report."""
    from gpt5_ablate.analysis.ladder import write_ladder_report

    path = write_ladder_report(summary, runner.out, runner.args.tracking_uri)
    print(f"Wrote {path}.")
    for context in context_sets(summary):
        runner.report(f"context-{context['size']}", context["sweep_id"])


def rerun_reports(runner: Runner) -> int:
    """``stages=report``: the stage reports again, from the sweeps ``protocol.json`` names."""
    path = runner.out / "protocol.json"
    if not path.is_file():
        raise InputError(f"stages=report needs {path} from a finished run of the protocol.")
    summary = json.loads(path.read_text())
    if summary.get("sizes"):
        if runner.args.reference_ladder and not runner.args.dry_run:
            from gpt5_ablate.analysis.ladder_budget import check_references

            where = runner.args.reference_ladder
            check_references(summary, where)
            # Recorded, so that a later stages=report compares the same budgets.
            summary["reference_ladder"] = where
            path.write_text(json.dumps(summary, indent=2))
        ladder_reports(runner, summary)
        return 0
    if runner.args.reference_ladder:
        raise InputError(
            f"reference_ladder={runner.args.reference_ladder}: {path} is not a ladder run; only "
            "a ladder's report compares budgets."
        )
    for stage, sweep_id in summary["sweeps"].items():
        runner.report(stage, sweep_id)
    return 0


def protocol_markdown(summary: dict[str, Any]) -> str:
    lines = [f"# Protocol `{summary['protocol']['name']}`", ""]
    lines.append(f"Wall time: **{summary['wall_s'] / 60:.1f} min** in all.")
    lines += ["", "## LR selection (phase=select, one seed)", ""]
    lines += ["| optimizer | rate key | rate | final val loss (full split) |", "|---|---|---|---|"]
    for sel in summary["selections"]:
        for rate, loss in sel["losses"].items():
            mark = " **best**" if math.isclose(float(rate), sel["best"]) else ""
            lines.append(f"| {sel['optimizer']} | `{sel['key']}` | {rate}{mark} | {loss:.4f} |")
    lines += ["", "| optimizer | chosen rate | interior of the grid |", "|---|---|---|"]
    for sel in summary["selections"]:
        lines.append(f"| {sel['optimizer']} | {sel['best']} | {sel['interior']} |")
    lines += ["", "## Stages", "", "| stage | wall time (min) | command |", "|---|---|---|"]
    for stage in summary["stages"]:
        lines.append(f"| {stage['stage']} | {stage['wall_s'] / 60:.1f} | `{stage['command']}` |")
    return "\n".join(lines) + "\n"


def _main(argv: list[str]) -> int:
    args = parse_key_values(ProtocolArgs, argv, "python -m gpt5_ablate.protocol", __doc__ or "")
    return run_protocol(args)


def main(argv: list[str] | None = None) -> int:
    return run_tool(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
