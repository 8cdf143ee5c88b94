"""The scale ladder: the protocol's LR selection and optimizer comparison at several model sizes.

Each size is its own fair comparison (its own LR grids on the selection seed, then fresh report
seeds at the chosen rates); what the ladder adds is the trend across sizes, which
``gpt5_ablate.analysis.ladder`` turns into compute multipliers. A size's work for one optimizer
is a *chain*: its grids in the order listed (a later grid, e.g. Muon's AdamW-side rate, runs at
the best rates found so far), then its report seeds. Chains of different sizes and optimizers
do not depend on each other, so up to ``parallel_runs`` of them train at once, each run one
process (on CPU one thread each; on a GPU several small runs share the device). The context
set (window x sinks at a long context) runs at each of its sizes after the chain whose rates it
borrows, so a long-range preference can be replicated across sizes like the optimizer's.

A protocol run resumed under its own ``stamp`` with a ``protocol.json`` from that stamp (e.g. on
a machine that has the MLflow store but not the run dirs) keeps what that file records: stages
left out of ``stages=`` keep their recorded selections, rates and sweeps, and a context sweep it
records with the same overrides is not run again.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gpt5_ablate.errors import ConfigError

if TYPE_CHECKING:
    from gpt5_ablate.protocol import LrGrid, ProtocolConfig, Runner


@dataclass
class LadderSize:
    name: str  # also the runs' model.name, so every run says which rung it is
    overrides: list[str] = field(default_factory=list)  # the shape (layers, width, heads, batch)
    # Grid centres for this size, "<optimizer>:<key>" -> rate; unnamed ones use the grid's centre.
    centers: dict[str, float] = field(default_factory=dict)

    def start_rates(self, grids: list[LrGrid], optimizer: str) -> dict[str, float]:
        """``optimizer``'s rates where this size's selection starts: each grid's centre here."""
        return {
            g.key: self.centers.get(f"{optimizer}:{g.key}", g.center)
            for g in grids
            if g.optimizer == optimizer
        }


@dataclass
class ContextSet:
    """Factors that act only at long range (sliding windows, sinks), at a context several times
    the window, on each of ``sizes`` at that size's selected rates."""

    sizes: list[str] = field(default_factory=list)
    optimizer: str = "muon_adamw"
    overrides: list[str] = field(default_factory=list)  # e.g. model.max_seq_len=512 window.size=128
    # Per size, after ``overrides``: e.g. a micro-batch that keeps the size's tokens per step.
    size_overrides: dict[str, list[str]] = field(default_factory=dict)
    design: dict[str, list[str]] = field(default_factory=dict)  # factor -> levels
    seeds: list[int] = field(default_factory=lambda: [1, 2])

    def overrides_at(self, size: str) -> list[str]:
        """The context set's overrides at ``size`` (its own batch, where it has one)."""
        return merge_overrides([*self.overrides, *self.size_overrides.get(size, [])])


def check_ladder(protocol: ProtocolConfig) -> None:
    """Refuse a ladder that cannot run, before any training."""
    names = [s.name for s in protocol.sizes]
    if len(set(names)) != len(names):
        raise ConfigError(f"protocol {protocol.name}: ladder size names repeat: {names}.")
    if protocol.selection_rounds < 1:
        raise ConfigError(
            f"protocol {protocol.name}: selection_rounds={protocol.selection_rounds} must be >= 1 "
            "(1: each rate grid once; 2: each again at the others' best)."
        )
    optimizers = {g.optimizer for g in protocol.lr_grids}
    for size in protocol.sizes:
        for key in size.centers:
            opt, _, rate_key = key.partition(":")
            if not any(g.optimizer == opt and g.key == rate_key for g in protocol.lr_grids):
                valid = ", ".join(f"{g.optimizer}:{g.key}" for g in protocol.lr_grids)
                raise ConfigError(
                    f"protocol {protocol.name}: size {size.name} has a centre for {key!r}, which "
                    f"no lr grid searches. Valid keys: {valid}."
                )
    context = protocol.context
    if context is not None:
        if not context.sizes:
            raise ConfigError(
                f"protocol {protocol.name}: context.sizes is empty; name the ladder sizes the "
                f"long-context set runs at. Valid choices: {', '.join(names)}."
            )
        for what, chosen in (("sizes", context.sizes), ("size_overrides", context.size_overrides)):
            unknown = [size for size in chosen if size not in names]
            if unknown:
                raise ConfigError(
                    f"protocol {protocol.name}: context.{what} names {', '.join(unknown)}, not a "
                    f"ladder size. Valid choices: {', '.join(names)}."
                )
        if context.optimizer not in optimizers:
            raise ConfigError(
                f"protocol {protocol.name}: context.optimizer={context.optimizer!r} has no lr "
                f"grid. Valid choices: {', '.join(sorted(optimizers))}."
            )


class Ladder:
    """Runs every chain of a ladder protocol and collects what ``protocol.json`` records."""

    def __init__(self, runner: Runner, previous: Mapping[str, Any] | None = None) -> None:
        """``previous``: the ``protocol.json`` of an earlier call under the same stamp."""
        self.runner = runner
        self.protocol = runner.protocol
        self.slots = threading.Semaphore(max(1, self.protocol.parallel_runs))
        self.recorded = {s["name"]: s for s in (previous or {}).get("sizes", [])}
        self.sizes: dict[str, dict[str, Any]] = {
            s.name: copy.deepcopy(self.recorded.get(s.name)) or _size_record(s)
            for s in self.protocol.sizes
        }
        self.recorded_contexts = {c["size"]: c for c in context_sets(previous or {})}
        self.contexts: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()

    def run(self, stages: set[str]) -> dict[str, Any]:
        p = self.protocol
        chains: dict[tuple[str, str], Future[None]] = {}
        # Largest sizes first: their runs are the longest, so they should not be left for last.
        with ThreadPoolExecutor(max_workers=2 * len(p.sizes) * len(self._optimizers()) + 8) as pool:
            for size in reversed(p.sizes):
                for optimizer in self._optimizers():
                    chains[size.name, optimizer] = pool.submit(self._chain, size, optimizer, stages)
            context_futures = []
            if p.context is not None and "context" in stages:
                context_futures = self._submit_context(pool, chains)
            for future in [*chains.values(), *context_futures]:
                future.result()  # re-raises a failed sweep
        # Sizes an earlier call recorded and this one left out (``sizes=``) stay recorded.
        order = [*self.recorded, *(name for name in self.sizes if name not in self.recorded)]
        summary: dict[str, Any] = {
            "sizes": [self.sizes.get(name) or self.recorded[name] for name in order]
        }
        contexts = {**self.recorded_contexts, **self.contexts}
        if contexts:
            summary["contexts"] = [contexts[name] for name in order if name in contexts]
        return summary

    def _optimizers(self) -> list[str]:
        return list(dict.fromkeys(g.optimizer for g in self.protocol.lr_grids))

    def _sweep(self, stage: str, overrides: list[str]) -> None:
        with self.slots:
            self.runner.sweep(stage, overrides, parallel=False)

    def _chain(self, size: LadderSize, optimizer: str, stages: set[str]) -> None:
        """Selection grids for one optimizer at one size, then its report seeds."""
        from gpt5_ablate.protocol import select_rate

        record = self.sizes[size.name]
        base = [*size.overrides, f"model.name={size.name}", f"optimizer={optimizer}"]
        grids = [g for g in self.protocol.lr_grids if g.optimizer == optimizer]
        chosen = size.start_rates(grids, optimizer)
        if "select" in stages:
            with self.lock:
                record["selections"] = [
                    s for s in record["selections"] if s["optimizer"] != optimizer
                ]
        elif record["best_rates"].get(optimizer):
            # Not selecting now: the rates an earlier call of this protocol run chose.
            chosen.update(record["best_rates"][optimizer])
        elif stages & {"compare", "context"}:
            print(
                f"Note: {size.name} {optimizer}: no selected rates recorded for stamp "
                f"{self.runner.stamp} and stages= leaves out select: the grid centres are used."
            )
        # Rounds of coordinate descent: each grid runs at the best of the other rates so far, and
        # a later round re-centres it on its own best (an unchanged best costs nothing: those runs
        # are found finished by their identity).
        rounds = self.protocol.selection_rounds if "select" in stages else 0
        for round_ in range(1, rounds + 1):
            for grid in grids:
                stage = f"select-{size.name}-{optimizer}-{grid.key.rsplit('.', 1)[-1]}"
                stage += f"-r{round_}" if round_ > 1 else ""
                fixed = [*base, *(f"{k}={v}" for k, v in chosen.items() if k != grid.key)]
                selection = select_rate(
                    self.runner, _recentred(grid, chosen[grid.key]), stage, fixed, self._sweep
                )
                chosen[grid.key] = selection["best"]
                with self.lock:
                    record["selections"].append({"size": size.name, "round": round_, **selection})
                    record["sweeps"][stage] = self.runner.sweep_id(stage)
        with self.lock:
            record["best_rates"][optimizer] = dict(chosen)
        if "compare" in stages:
            stage = f"compare-{size.name}"
            seeds = ",".join(map(str, self.protocol.compare_seeds))
            rates = [f"{k}={v}" for k, v in chosen.items()]
            self._sweep(stage, [*base, *rates, f"seed={seeds}"])
            with self.lock:
                record["sweeps"]["compare"] = self.runner.sweep_id(stage)

    def _submit_context(
        self, pool: ThreadPoolExecutor, chains: dict[tuple[str, str], Future[None]]
    ) -> list[Future[None]]:
        """Every arm of the context set at each of its sizes (largest first, like the chains),
        each size its own sweep ``context-<size>``, once its chain has chosen the rates."""
        context = self.protocol.context
        assert context is not None
        futures = []
        for size in reversed(self.protocol.sizes):
            if size.name not in context.sizes:
                continue
            overrides = context.overrides_at(size.name)
            recorded = self.recorded_contexts.get(size.name)
            if recorded is not None and recorded.get("overrides") == overrides:
                print(f"[context-{size.name}] recorded as done ({recorded['sweep_id']}): not rerun")
                self.contexts[size.name] = recorded
                continue
            stage = f"context-{size.name}"
            self.contexts[size.name] = {
                "size": size.name, "sweep_id": self.runner.sweep_id(stage),
                "overrides": overrides, **_context_shape(overrides),
            }  # fmt: skip
            dependency = chains[size.name, context.optimizer]
            futures += [
                pool.submit(self._context_arm, size, stage, overrides, levels, dependency)
                for levels in _arms(context.design)
            ]
        return futures

    def _context_arm(
        self,
        size: LadderSize,
        stage: str,
        context_overrides: list[str],
        levels: list[str],
        dependency: Future[None],
    ) -> None:
        context = self.protocol.context
        assert context is not None
        dependency.result()
        rates = self.sizes[size.name]["best_rates"][context.optimizer]
        seeds = ",".join(map(str, context.seeds))
        overrides = [
            *size.overrides, f"model.name={size.name}", *context_overrides,
            f"optimizer={context.optimizer}", *(f"{k}={v}" for k, v in rates.items()),
            *levels, f"seed={seeds}",
        ]  # fmt: skip
        self._sweep(stage, merge_overrides(overrides))


def context_sets(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The context sweeps a ``protocol.json`` records, one per size: ``size, sweep_id,
    overrides, seq_len, window``. Reads the one-size ``context`` entry older files hold."""
    sets = summary.get("contexts")
    if isinstance(sets, list):
        return [dict(c) for c in sets]
    old = summary.get("context")
    if isinstance(old, Mapping) and old.get("sweep_id"):
        return [{"size": str(old.get("size") or "context"), **old}]
    return []


def merge_overrides(overrides: list[str]) -> list[str]:
    """One value per key, the last given winning (a context set's batch replaces its size's), in
    first-seen order: Hydra refuses a key given twice."""
    merged: dict[str, str] = {}
    for item in overrides:
        key = item.partition("=")[0]
        merged.pop(key, None)
        merged[key] = item
    return list(merged.values())


def _size_record(size: LadderSize) -> dict[str, Any]:
    """What ``protocol.json`` records per size; the chains fill it in."""
    return {
        "name": size.name,
        "overrides": list(size.overrides),
        "sweeps": {},
        "selections": [],
        "best_rates": {},
    }


def _recentred(grid: LrGrid, center: float) -> LrGrid:
    from dataclasses import replace

    return replace(grid, center=center)


def _arms(design: dict[str, list[str]]) -> list[list[str]]:
    """Every combination of the design's levels, as override lists."""
    arms: list[list[str]] = [[]]
    for factor, levels in design.items():
        arms = [[*arm, f"{factor}={level}"] for arm in arms for level in levels]
    return arms


def _context_shape(overrides: list[str]) -> dict[str, int]:
    """The context length and window the context set's overrides name (for the report)."""
    shape = {}
    for item in overrides:
        key, _, value = item.partition("=")
        if key == "model.max_seq_len":
            shape["seq_len"] = int(value)
        elif key == "window.size":
            shape["window"] = int(value)
    return shape
