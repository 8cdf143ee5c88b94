"""Which runs a report compares: one sweep, one protocol phase, one comparable context.

Rules, applied in this order (each leaves a warning or a note saying what it left out):

1. **Sweep.** By default the latest sweep: the ``sweep_id`` whose newest run started last. Runs
   of other sweeps and runs outside any sweep are left out. ``sweep=<id>`` (or a unique prefix)
   picks another; ``sweep=all`` keeps every run. A store whose runs carry no ``sweep_id`` (old
   runs) is taken whole.
2. **Phase.** LR-selection runs (``phase=select``) choose learning rates on their own seeds;
   reported comparisons use fresh seeds (``phase=report``, the default for untagged runs). The
   two are never mixed in one comparison: with both present the report compares the
   ``report`` runs and shows the ``select`` runs only in the LR section.
3. **Comparable context.** Runs are comparable only when they share the model preset, the token
   budget (``total_steps × tokens_per_step``) and the data. The largest such group (ties: the
   one with the newest run) is analysed and the others are left out with a warning that lists
   them; ``group_unlike=true`` analyses every group separately instead (e.g. a sweep over model
   sizes), never pairing runs across groups.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from gpt5_ablate.analysis.text import listing, si
from gpt5_ablate.errors import InputError

CONTEXT_COLUMNS: tuple[str, ...] = ("model", "budget_tokens", "data")


@dataclass
class RunSelection:
    """The runs a report analyses, split into comparable groups, and what was left out."""

    #: ``{group label: runs}``; one group unless ``group_unlike``.
    groups: dict[str, pd.DataFrame]
    #: The phase=select runs of the chosen sweep (shown in the LR section only).
    select_runs: pd.DataFrame
    sweep: str
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def runs(self) -> pd.DataFrame:
        frames = [g for g in self.groups.values() if not g.empty]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _names(runs: pd.DataFrame) -> list[str]:
    names = runs["run_name"] if "run_name" in runs else runs["run_id"]
    return [str(n) if pd.notna(n) else str(i) for n, i in zip(names, runs["run_id"], strict=True)]


def choose_sweep(runs: pd.DataFrame, sweep: str) -> tuple[pd.DataFrame, str, list[str]]:
    """Filter ``runs`` to one sweep (see rule 1); returns the runs, the sweep label, warnings."""
    ids = runs["sweep_id"] if "sweep_id" in runs else pd.Series(None, index=runs.index)
    present = ids.notna()
    if sweep == "all" or not present.any():
        return runs, "all runs" if sweep == "all" else "all runs (no sweep ids)", []
    starts = runs[present].groupby(ids[present])["start_time"].max().sort_values()
    if sweep == "latest":
        chosen = str(starts.index[-1])
    else:
        matches = [s for s in starts.index if str(s) == sweep] or [
            s for s in starts.index if str(s).startswith(sweep)
        ]
        if len(matches) != 1:
            problem = "matches several sweeps" if matches else "matches no sweep"
            raise InputError(
                f"sweep={sweep!r} {problem}. Sweeps (newest last): "
                f"{listing([str(s) for s in starts.index], 12)}; or use sweep=latest or sweep=all."
            )
        chosen = str(matches[0])
    keep = ids.astype(object).eq(chosen)
    if "also_in_sweeps" in runs:  # finished runs the sweep found instead of training them
        keep |= runs["also_in_sweeps"].map(lambda ids: chosen in str(ids).split(",")).astype(bool)
    left = runs[~keep]
    warnings = []
    if not left.empty:
        others = sorted({str(s) for s in left["sweep_id"].dropna()})
        loose = left[left["sweep_id"].isna()]
        parts = []
        if others:
            parts.append(f"other sweeps: {listing(others)}")
        if not loose.empty:
            parts.append(f"runs outside any sweep: {listing(_names(loose))}")
        warnings.append(
            f"Analysing sweep {chosen}; left out {len(left)} run(s) ({'; '.join(parts)}). "
            "Pick another with sweep=<id>, or sweep=all."
        )
    return runs[keep], chosen, warnings


def split_phases(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """``(runs to compare, phase=select runs, notes)`` (rule 2)."""
    phase = runs["phase"].fillna("report") if "phase" in runs else pd.Series("report", runs.index)
    select, report = runs[phase == "select"], runs[phase != "select"]
    if select.empty:
        return runs, select, []
    if report.empty:
        return (
            select,
            select,
            [
                "Only LR-selection runs (phase=select) are present: the effects below are "
                "measured on the seeds the learning rates were chosen on, so they are optimistic; "
                "rerun the chosen rates on fresh seeds with phase=report."
            ],
        )
    return (
        report,
        select,
        [
            f"{len(select)} LR-selection run(s) (phase=select) are kept out of every comparison "
            "and shown only in the learning-rate section; comparisons use the "
            f"{len(report)} phase=report run(s)."
        ],
    )


def context_label(key: tuple[object, ...]) -> str:
    model, budget, data = key
    return f"{model}, {si(budget)} tokens, data {data}"


def _context_keys(runs: pd.DataFrame) -> pd.Series:
    parts = []
    for column in CONTEXT_COLUMNS:
        values = runs[column] if column in runs else pd.Series(None, index=runs.index)
        parts.append(values.astype(object).where(values.notna(), "n/a"))
    return pd.Series(list(zip(*parts, strict=True)), index=runs.index)


def group_comparable(
    runs: pd.DataFrame, group_unlike: bool
) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """Split by (model, budget, data) (rule 3): the majority group, or all when ``group_unlike``."""
    keys = _context_keys(runs)
    sizes = keys.value_counts()
    if len(sizes) <= 1:
        return ({context_label(keys.iloc[0]): runs} if len(runs) else {}), []
    newest = runs.groupby(keys)["start_time"].max()
    order = sorted(sizes.index, key=lambda k: (sizes[k], newest[k]), reverse=True)
    if group_unlike:
        groups = {context_label(k): runs[keys == k] for k in order}
        note = (
            f"group_unlike=true: runs are analysed in {len(groups)} separate groups of equal "
            f"model preset, token budget and data ({'; '.join(groups)}); no comparison pairs runs "
            "across groups."
        )
        return groups, [note]
    majority = order[0]
    left = runs[keys != majority]
    details = [
        f"{name} ({context_label(key)})"
        for name, key in zip(_names(left), keys[keys != majority], strict=True)
    ]
    warning = (
        f"Left out {len(left)} run(s) whose model preset, token budget or data differ from the "
        f"majority ({context_label(majority)}), so they are never paired with it: "
        f"{listing(details)}. Use group_unlike=true to analyse each group separately."
    )
    return {context_label(majority): runs[keys == majority]}, [warning]


def select_runs(
    runs: pd.DataFrame, sweep: str = "latest", group_unlike: bool = False
) -> RunSelection:
    """Apply rules 1–3 to the loaded runs."""
    chosen, label, warnings = choose_sweep(runs, sweep)
    compared, select_phase, notes = split_phases(chosen)
    groups, group_messages = group_comparable(compared, group_unlike)
    if group_unlike:
        notes += group_messages
    else:
        warnings += group_messages
    return RunSelection(groups, select_phase, label, warnings, notes)
