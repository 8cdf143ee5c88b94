"""``python -m gpt5_ablate.bench_concurrent``: how much a ladder gains from training several runs at once.

A ladder's runs are small: one alone leaves most of a GPU idle (kernel launches, Python, data and
start-up dominate), and on a CPU one process may not use every core well. This benchmark trains
the same set of real runs (``python -m gpt5_ablate``, one ladder size of a protocol, distinct
seeds) once per concurrency level, ``k`` processes at a time, and reports the wall time of the
whole set, runs per hour, training tokens per second summed over the runs, and the speed-up over
one run at a time. Each level trains in its own scratch directory and MLflow store, so no level
finds another's runs finished; one untimed run first fills the shared tokenizer and data cache.

On a CPU each process gets ``cores // k`` threads (``threads_per_run=auto``), so every level uses
the whole machine; on a GPU the protocol's own thread setting is kept. Results go to ``out`` as
CSV, JSON (with the hardware) and a Markdown table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpt5_ablate.cli_args import parse_key_values, run_tool
from gpt5_ablate.errors import ConfigError, InputError
from gpt5_ablate.ladder import LadderSize, merge_overrides

EXPERIMENT = "bench_concurrent"
SEED_BASE = 1000  # far from every protocol's selection and report seeds
COLUMNS = [
    "concurrency",
    "runs",
    "threads_per_run",
    "wall_s",
    "runs_per_hour",
    "tokens_per_s",
    "speedup",
    "mean_run_s",
]


@dataclass
class ConcurrentArgs:
    protocol: str = field(default="cpu_ladder", metadata={"help": "conf/protocol/<name>.yaml"})
    size: str | None = field(default=None, metadata={"help": "a ladder size (default: its first)"})
    runs: int = field(default=4, metadata={"help": "runs trained at every concurrency level"})
    concurrency: str = field(default="1,2", metadata={"help": "processes at once, e.g. 1,4,8"})
    threads_per_run: str = field(
        default="auto", metadata={"help": "auto (CPU: cores // concurrency) or a number"}
    )
    tokens_per_param: float | None = field(
        default=None, metadata={"help": "every run's budget, replacing the protocol's"}
    )
    overrides: str = field(
        default="", metadata={"help": "more training overrides, space-separated"}
    )
    out: str = field(default="docs/bench_concurrent", metadata={"help": "results folder"})


@dataclass
class Plan:
    """What one benchmark trains: the runs' shared overrides and the levels to time."""

    base: list[str]
    levels: list[int]
    runs: int
    threads: dict[int, int | None]  # concurrency -> threads per run (None: the protocol's own)
    size: str


def make_plan(args: ConcurrentArgs, cores: int, on_gpu: bool) -> Plan:
    """Check every argument and build the run overrides, before anything trains."""
    from gpt5_ablate.protocol import load_protocol

    protocol = load_protocol(args.protocol)
    if not protocol.sizes:
        raise ConfigError(
            f"protocol={args.protocol!r} lists no ladder sizes; this benchmark times a ladder's "
            "runs. Use a ladder protocol, e.g. protocol=cpu_ladder or protocol=gpu_ladder."
        )
    size = _find_size(protocol.sizes, args.size, args.protocol)
    levels = _levels(args.concurrency)
    if args.runs < max(levels):
        raise ConfigError(
            f"runs={args.runs} is fewer than the largest concurrency ({max(levels)}): every "
            f"level must have enough runs to fill its slots. Use runs >= {max(levels)}."
        )
    threads = {k: _threads(args.threads_per_run, k, cores, on_gpu) for k in levels}
    optimizer = protocol.lr_grids[0].optimizer
    rates = size.start_rates(protocol.lr_grids, optimizer)
    base = [
        *protocol.run_overrides,
        *size.overrides,
        f"model.name={size.name}",
        f"optimizer={optimizer}",
        *(f"{key}={rate}" for key, rate in rates.items()),
        f"tracking.experiment={EXPERIMENT}",
        "phase=select",
    ]
    if args.tokens_per_param is not None:
        if not args.tokens_per_param > 0:
            raise ConfigError(
                f"tokens_per_param={args.tokens_per_param} is invalid: use a positive number."
            )
        base.append(f"trainer.tokens_per_param={args.tokens_per_param:g}")
    base += args.overrides.split()
    return Plan(merge_overrides(base), levels, args.runs, threads, size.name)


def _find_size(sizes: list[LadderSize], name: str | None, protocol: str) -> LadderSize:
    if name is None:
        return sizes[0]
    for size in sizes:
        if size.name == name:
            return size
    raise ConfigError(
        f"size={name!r} is not a size of protocol {protocol}. "
        f"Valid choices: {', '.join(s.name for s in sizes)}."
    )


def _levels(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        levels = []
    if not levels or min(levels) < 1:
        raise ConfigError(
            f"concurrency={text!r} is invalid: give positive whole numbers of processes at once, "
            "comma-separated, e.g. concurrency=1,2 (CPU) or concurrency=1,4,8 (GPU)."
        )
    return sorted(set(levels))


def _threads(setting: str, concurrency: int, cores: int, on_gpu: bool) -> int | None:
    if setting == "auto":
        return None if on_gpu else max(1, cores // concurrency)
    if setting.isdigit() and int(setting) >= 1:
        return int(setting)
    raise ConfigError(
        f"threads_per_run={setting!r} is invalid. Valid choices: auto (CPU: cores // "
        "concurrency; GPU: the protocol's own) or a positive whole number."
    )


def run_command(plan: Plan, seed: int, threads: int | None, uri: str) -> list[str]:
    extra = [] if threads is None else [f"trainer.num_threads={threads}"]
    overrides = merge_overrides([*plan.base, *extra, f"tracking.uri={uri}", f"seed={seed}"])
    return [sys.executable, "-m", "gpt5_ablate", *overrides]


def _train(command: list[str], cwd: Path) -> float:
    """One run to the end; its wall time. A failed run stops the benchmark: its timing would lie."""
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-5:]
        raise InputError(
            f"a benchmark run failed (exit {done.returncode}): {' '.join(command[1:])}\n"
            + "\n".join(tail)
        )
    return time.perf_counter() - started


def tokens_trained(uri: str) -> float:
    """Training tokens summed over a level's runs (each run's last ``train/tokens_seen``)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return 0.0
    runs = client.search_runs([experiment.experiment_id])
    return float(sum(r.data.metrics.get("train/tokens_seen", 0.0) for r in runs))


def _create_store(uri: str, folder: Path) -> None:
    """The store and its experiment, made once before any run starts: runs that start together
    on a fresh SQLite file would otherwise each try to create its tables (and fail)."""
    from mlflow.tracking import MlflowClient

    location = (folder / "artifacts").resolve().as_uri()
    MlflowClient(uri).create_experiment(EXPERIMENT, artifact_location=location)


def time_level(plan: Plan, concurrency: int, scratch: Path) -> dict[str, Any]:
    """Train the plan's runs ``concurrency`` at a time in a fresh directory and store."""
    folder = scratch / f"k{concurrency}"
    folder.mkdir()
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    _create_store(uri, folder)
    threads = plan.threads[concurrency]
    commands = [run_command(plan, SEED_BASE + i, threads, uri) for i in range(plan.runs)]
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        run_s = list(pool.map(lambda c: _train(c, folder), commands))
    wall = time.perf_counter() - started
    return {
        "concurrency": concurrency,
        "runs": plan.runs,
        "threads_per_run": threads if threads is not None else "protocol",
        "wall_s": round(wall, 1),
        "runs_per_hour": round(plan.runs * 3600 / wall, 1),
        "tokens_per_s": round(tokens_trained(uri) / wall),
        "mean_run_s": round(sum(run_s) / len(run_s), 1),
    }


def run_benchmark(args: ConcurrentArgs, command: str) -> int:
    import torch

    from gpt5_ablate.bench import environment, format_table

    on_gpu = torch.cuda.is_available()
    cores = os.cpu_count() or 1
    plan = make_plan(args, cores, on_gpu)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench_concurrent-") as tmp:
        scratch = Path(tmp)
        warm = scratch / "warm-up"
        warm.mkdir()
        print(
            f"warm-up run (untimed: fills the tokenizer and data cache) at {plan.size}", flush=True
        )
        _train(run_command(plan, SEED_BASE - 1, plan.threads[plan.levels[0]],
                           f"sqlite:///{warm / 'mlflow.db'}"), warm)  # fmt: skip
        for k in plan.levels:
            rows.append(time_level(plan, k, scratch))
            print(f"{k} at once: {rows[-1]['wall_s']} s for {plan.runs} runs", flush=True)
    fewest_at_once_s = rows[0]["wall_s"]  # levels are sorted: the speed-up is over the first
    for row in rows:
        row["speedup"] = round(fewest_at_once_s / row["wall_s"], 2)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    record = {
        "command": command,
        "protocol": args.protocol,
        "size": plan.size,
        "overrides": plan.base,
        "environment": {**environment(), "cpu_count": cores},
        "rows": rows,
    }
    import pandas as pd

    pd.DataFrame(rows, columns=COLUMNS).to_csv(out / f"concurrent-{stamp}.csv", index=False)
    (out / f"concurrent-{stamp}.json").write_text(json.dumps(record, indent=2))
    table = format_table(rows, COLUMNS)
    (out / f"concurrent-{stamp}.md").write_text(
        f"`{record['command']}` ({plan.size} of {args.protocol})\n\n{table}\n"
    )
    print(f"{table}\nSaved to {out}/concurrent-{stamp}.{{csv,json,md}}")
    return 0


def _main(argv: list[str]) -> int:
    prog = "python -m gpt5_ablate.bench_concurrent"
    args = parse_key_values(ConcurrentArgs, argv, prog, __doc__ or "")
    return run_benchmark(args, " ".join([prog, *argv]))


def main(argv: list[str] | None = None) -> int:
    return run_tool(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
