"""The scale ladder's data: the runs a ladder reports, per-size losses at tuned rates, compute
multipliers and their trend, the long-context comparisons, and what the judgement rule counts
(:func:`ladder_sizes`). The Markdown report is :mod:`~gpt5_ablate.analysis.ladder_report`.

Input is the protocol's ``protocol.json`` summary (sizes with their sweep ids, LR selections and
best rates; context sweeps, one per size) plus the MLflow runs it names. Selection reads
validation; every reported loss reads the held-out test split (``final/test_loss``), falling
back to validation, with a visible note, for runs that logged no test split.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from gpt5_ablate.analysis.compute import SizeMultipliers, size_multipliers
from gpt5_ablate.analysis.load import load_experiment, search_runs
from gpt5_ablate.analysis.stats import MIN_SEEDS_FOR_CI, Interval, mean_ci, welch_ci
from gpt5_ablate.errors import InputError
from gpt5_ablate.ladder import context_sets

MUON, ADAMW = "muon_adamw", "adamw"
#: The context sweep's reference arm: every layer full attention, no sinks.
CONTEXT_REFERENCE = {"window": "all_full", "sinks": "none"}
CONTEXT_FACTORS: tuple[str, ...] = ("window", "sinks")
TEST_SOURCE, VAL_SOURCE = "test", "validation (no test split logged)"
BIN_PREFIX = "test_loss_pos_"
#: The context runs' test loss over their first positions (from per-position artifacts).
FIRST_COLUMN = "test_loss_first_positions"
POSITION_FILE = "eval/loss_by_position.csv"
#: Positions are averaged in this many equal buckets (figures; the first-positions column).
POSITION_BUCKETS = 32
ALPHA = 0.05
#: Compute-optimal tokens per parameter (Hoffmann et al. 2022, arXiv:2203.15556).
CHINCHILLA_TOKENS_PER_PARAM = 20.0


@dataclass
class LadderData:
    """The runs the ladder reports: ``report`` (one row per compare run, with ``size``) and
    ``context`` (the context sweeps' runs with their ``size``, or None); ``loss`` is test loss
    where logged. ``positions``: the context runs' per-position test loss
    (:func:`position_tables`; empty when not logged), read once for the columns and figures."""

    report: pd.DataFrame
    context: pd.DataFrame | None
    sizes: list[dict[str, Any]]
    notes: list[str]
    positions: pd.DataFrame = field(default_factory=pd.DataFrame)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _check_summary(summary: Mapping[str, Any], tracking_uri: str | None) -> str:
    sizes = summary.get("sizes")
    uri = tracking_uri or summary.get("tracking_uri")
    problems = []
    if not isinstance(sizes, list) or not sizes:
        problems.append(f"'sizes' must be a non-empty list (got {sizes!r:.80})")
    else:
        for i, size in enumerate(sizes):
            if (
                not isinstance(size, dict)
                or "name" not in size
                or "compare" not in size.get("sweeps", {})
            ):
                problems.append(f"sizes[{i}] needs 'name' and 'sweeps.compare' (got {size!r:.80})")
    if not summary.get("experiment"):
        problems.append("'experiment' (the MLflow experiment name) is missing")
    if not uri:
        problems.append("no tracking URI: pass tracking_uri or set summary['tracking_uri']")
    if problems:
        raise InputError(
            "The ladder summary (protocol.json) is not usable: " + "; ".join(problems) + ". "
            "Expected keys: sizes (name, overrides, sweeps.compare, selections, best_rates), "
            "contexts (a list of size, sweep_id, window, seq_len; may be absent), "
            "tracking_uri, experiment."
        )
    return str(uri)


def _extras(raw: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Columns load.py does not read: test-split metrics, the cache at the context length,
    the context length, Muon's AdamW-side rate, and the params the sizes are overridden by."""
    out = pd.DataFrame({"run_id": raw["run_id"]})
    for column in raw.columns:
        if column.startswith("metrics.final/test_"):
            out[column.removeprefix("metrics.final/")] = pd.to_numeric(raw[column], "coerce")
    named = {
        "kv_cache_bytes_at_max_seq_len": "kv_cache_bytes_at_context",
        "model.max_seq_len": "context_len",
        "optimizer.adamw_lr": "adamw_lr",
    }
    for param, column in named.items():
        values = raw.get(f"params.{param}", pd.Series(np.nan, index=raw.index))
        out[column] = pd.to_numeric(values, errors="coerce")
    for key in keys:
        out[f"param:{key}"] = raw.get(f"params.{key}", pd.Series(None, index=raw.index))
    return out


def _matches(value: object, wanted: str) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    try:
        return math.isclose(float(value), float(wanted), rel_tol=1e-6)  # type: ignore[arg-type]
    except ValueError:
        return str(value) == wanted


def _select(runs: pd.DataFrame, wanted: Mapping[str, object]) -> pd.DataFrame:
    """Runs whose ``param:<key>`` equals each wanted value (keys no run logged are skipped)."""
    keep = pd.Series(True, index=runs.index)
    for key, value in wanted.items():
        column = f"param:{key}"
        if column in runs.columns and runs[column].notna().any():
            keep &= runs[column].map(lambda v, w=str(value): _matches(v, w))
    return runs[keep]


def _overrides(size: Mapping[str, Any]) -> dict[str, str]:
    pairs = (o.split("=", 1) for o in size.get("overrides", []) if "=" in o)
    return {k.lstrip("+"): v for k, v in pairs}


def load_ladder(summary: Mapping[str, Any], tracking_uri: str | None = None) -> LadderData:
    uri = _check_summary(summary, tracking_uri)
    experiment = str(summary["experiment"])
    sizes = list(summary["sizes"])
    keys = {k for s in sizes for k in _overrides(s)}
    keys |= {k for s in sizes for rates in s.get("best_rates", {}).values() for k in rates}
    runs = load_experiment(experiment, uri, history_metrics=()).runs
    raw, _ = search_runs(experiment, uri)
    extras = _extras(raw, sorted(keys))
    # load.py's own columns (e.g. context_len) win over the same ones read here.
    extras = extras[[c for c in extras.columns if c == "run_id" or c not in runs.columns]]
    runs = runs.merge(extras, on="run_id", how="left")
    if "test_loss" not in runs.columns:
        runs["test_loss"] = np.nan
    runs["loss"] = runs["test_loss"].fillna(runs["final_val_loss"])
    runs["loss_source"] = np.where(runs["test_loss"].notna(), TEST_SOURCE, VAL_SOURCE)
    runs = runs[runs["phase"] != "select"]
    notes, parts = [], []
    for size in sizes:
        in_size = _select(runs[runs["sweep_id"] == size["sweeps"]["compare"]], _overrides(size))
        for optimizer, rates in size.get("best_rates", {}).items():
            arm = in_size[in_size["optimizer"] == optimizer]
            at_best = _select(arm, rates)
            if at_best.empty and not arm.empty:
                notes.append(
                    f"{size['name']}: no {optimizer} run at its best rates {rates}; "
                    f"all {len(arm)} of its compare runs are used."
                )
                at_best = arm
            parts.append(at_best.assign(size=size["name"]))
    report = pd.concat(parts, ignore_index=True) if parts else runs.head(0).assign(size="")
    if report.empty:
        raise InputError(
            f"No finished report runs of the ladder's compare sweeps in experiment "
            f"{experiment!r} at {uri} (sweeps: "
            f"{', '.join(s['sweeps']['compare'] for s in sizes)})."
        )
    context_parts = []
    for spec in context_sets(summary):
        in_set = runs[runs["sweep_id"] == spec["sweep_id"]]
        if in_set.empty:
            notes.append(f"The context sweep {spec['sweep_id']} ({spec['size']}) has no runs.")
        context_parts.append(in_set.assign(size=spec["size"]))
    context = pd.concat(context_parts, ignore_index=True) if context_parts else None
    if context is not None and context.empty:
        context = None
    positions = pd.DataFrame()
    if context is not None:
        positions = position_tables(context, uri)
        context = add_first_positions(context, positions)
    select_seed = (summary.get("protocol") or {}).get("select_seed")
    if select_seed is not None and (report["seed"] == select_seed).any():
        notes.append(f"**The selection seed {select_seed} is also a report seed.**")
    for frame, what in ((report, "ladder"), (context, "context")):
        if frame is not None and (frame["loss_source"] == VAL_SOURCE).any():
            n = int((frame["loss_source"] == VAL_SOURCE).sum())
            notes.append(
                f"**{n} {what} run(s) logged no test split: their reported loss is VALIDATION "
                "loss, the split their rates were selected on.**"
            )
    return LadderData(report, context, sizes, notes, positions)


# --------------------------------------------------------------------------------------------
# Comparisons
# --------------------------------------------------------------------------------------------


def difference(a: pd.Series, b: pd.Series) -> tuple[Interval, str]:
    """``mean(a) − mean(b)`` over seeds (series indexed by seed): paired where at least two
    seeds are shared, Welch otherwise."""
    common = a.index.intersection(b.index)
    if len(common) >= 2:
        return mean_ci((a[common] - b[common]).astype(float)), f"paired, {len(common)} seeds"
    return welch_ci(a.astype(float), b.astype(float)), "Welch"


def _p_value(a: pd.Series, b: pd.Series) -> float:
    common = a.index.intersection(b.index)
    if len(common) >= 2:
        diffs = (a[common] - b[common]).astype(float)
        if diffs.std(ddof=1) == 0:
            return 0.0 if diffs.mean() != 0 else 1.0
        return float(scipy_stats.ttest_1samp(diffs, 0.0).pvalue)
    if len(a) >= 2 and len(b) >= 2:
        return float(scipy_stats.ttest_ind(a, b, equal_var=False).pvalue)
    return math.nan


def favoured_level(by_level: Mapping[str, pd.Series]) -> tuple[str, str]:
    """``(best level, category)``: the level with the lowest mean loss, ``favoured`` when it
    beats every other level (Holm over best-vs-other t-tests at 5%), else ``inconclusive``."""
    best = min(by_level, key=lambda level: float(by_level[level].mean()))
    pvalues = sorted(_p_value(by_level[best], by_level[o]) for o in by_level if o != best)
    m = len(pvalues)
    holm = all(p * (m - k) < ALPHA for k, p in enumerate(pvalues))  # NaN compares False
    return best, "favoured" if m and holm else "inconclusive"


def _per_seed(frame: pd.DataFrame, column: str = "loss") -> pd.Series:
    return frame.groupby("seed")[column].mean().dropna().astype(float)


def _loss_text(interval: Interval, values: pd.Series, digits: int = 4) -> str:
    if interval.n == 0:
        return "n/a (no runs)"
    if interval.n >= MIN_SEEDS_FOR_CI and interval.has_ci:
        return f"{interval.mean:.{digits}f} [{interval.low:.{digits}f}, {interval.high:.{digits}f}]"
    return f"{interval.mean:.{digits}f} (seeds {', '.join(f'{v:.4f}' for v in values)}; no CI)"


def size_table(data: LadderData) -> pd.DataFrame:
    """Per size: non-embedding params, tokens, tokens/param, training FLOPs, context."""
    rows = []
    for name, group in data.report.groupby("size", sort=False):
        params = group["n_params_non_embedding"].mean()
        tokens = group["tokens_seen"].mean()
        rows.append({
            "size": name,
            "non_embedding_params": params,
            "tokens": tokens,
            "tokens_per_param": tokens / params if params else math.nan,
            "train_flops": group["train_flops"].mean(),
            "context_len": group["context_len"].mean(),
        })  # fmt: skip
    return pd.DataFrame(rows).sort_values("train_flops", kind="stable").reset_index(drop=True)


def selection_table(sizes: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per (size, optimizer, rate key): the grid's validation losses and the choice."""
    rows = []
    for size in sizes:
        for sel in size.get("selections", []):
            losses = {float(r): float(v) for r, v in sel.get("losses", {}).items()}
            grid = ", ".join(
                f"{r:g}: {v:.4f}{'*' if math.isclose(r, float(sel['best'])) else ''}"
                for r, v in sorted(losses.items())
            )
            rows.append({
                "size": size["name"], "optimizer": sel["optimizer"], "rate": sel["key"],
                "round": sel.get("round", 1), "best": sel["best"], "interior": sel.get("interior"), "val_loss_by_rate": grid,
            })  # fmt: skip
    return pd.DataFrame(rows)


def _best_loss(selections: Sequence[Mapping[str, Any]]) -> float:
    """The lowest selection loss any of ``selections``' grids reached."""
    return min(float(v) for s in selections for v in s.get("losses", {}).values())


def unsettled_selections(sizes: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Per (size, optimizer) tuned in 2+ rounds whose last round still moved a rate: the rates
    that moved (``moved``) and how much that round lowered the best selection loss (``gain``),
    which bounds what one more round might be expected to find."""
    rows = []
    for size in sizes:
        by_optimizer: dict[str, list[Mapping[str, Any]]] = {}
        for sel in size.get("selections", []):
            by_optimizer.setdefault(sel["optimizer"], []).append(sel)
        for optimizer, sels in by_optimizer.items():
            last = max(int(s.get("round", 1)) for s in sels)
            if last < 2:
                continue
            before = {
                s["key"]: float(s["best"]) for s in sels if int(s.get("round", 1)) == last - 1
            }
            final = [s for s in sels if int(s.get("round", 1)) == last]
            moved = [
                f"`{s['key']}` {before[s['key']]:g}→{float(s['best']):g}"
                for s in final
                if s["key"] in before and not math.isclose(before[s["key"]], float(s["best"]))
            ]
            if not moved:
                continue
            earlier = [s for s in sels if int(s.get("round", 1)) < last]
            rows.append({
                "size": size["name"], "optimizer": optimizer, "moved": ", ".join(moved),
                "gain": _best_loss(earlier) - _best_loss(final),
            })  # fmt: skip
    return pd.DataFrame(rows, columns=["size", "optimizer", "moved", "gain"])


def loss_table(data: LadderData, arm: str = MUON, baseline: str = ADAMW) -> pd.DataFrame:
    """Per size and optimizer: test loss over report seeds; then ``arm − baseline``."""
    rows = []
    for name, group in data.report.groupby("size", sort=False):
        seeds = {opt: _per_seed(group[group["optimizer"] == opt]) for opt in (arm, baseline)}
        for opt, values in seeds.items():
            interval = mean_ci(values)
            rows.append({
                "size": name, "what": opt, "mean": interval.mean,
                "low": interval.low if interval.n >= MIN_SEEDS_FOR_CI else math.nan,
                "high": interval.high if interval.n >= MIN_SEEDS_FOR_CI else math.nan,
                "n_seeds": interval.n, "text": _loss_text(interval, values),
                "seeds": ", ".join(f"{s}: {v:.4f}" for s, v in values.items()),
            })  # fmt: skip
        diff, how = difference(seeds[arm], seeds[baseline])
        text = "n/a" if diff.n == 0 else f"{diff.format(4, signed=True)} ({how})"
        rows.append({
            "size": name, "what": f"{arm} − {baseline}", "mean": diff.mean, "low": diff.low,
            "high": diff.high, "n_seeds": diff.n, "text": text,
            "seeds": "",
        })  # fmt: skip
    return pd.DataFrame(rows)


def optimizer_multipliers(
    data: LadderData, n_resamples: int = 1000, seed: int = 0
) -> SizeMultipliers | None:
    return size_multipliers(
        data.report, "optimizer", MUON, ADAMW, size="size", n_resamples=n_resamples, seed=seed
    )


def multiplier_frame(mult: SizeMultipliers) -> pd.DataFrame:
    """Per-size multipliers, then the extrapolated ones (``measured`` says which is which)."""
    rows = [
        {"size": size, "train_flops": 10**c, "measured": True, "multiplier": e.value,
         "low": e.low, "high": e.high}
        for size, c, e in zip(mult.sizes, mult.log_c, mult.multipliers, strict=True)
    ]  # fmt: skip
    rows += [
        {"size": "extrapolation", "train_flops": c, "measured": False, "multiplier": e.value,
         "low": e.low, "high": e.high}
        for c, e in mult.extrapolated.items()
    ]  # fmt: skip
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# The context sweeps
# --------------------------------------------------------------------------------------------


def bin_columns(runs: pd.DataFrame) -> list[str]:
    """``test_loss_pos_<lo>_<hi>`` columns, ordered by position."""
    columns = [c for c in runs.columns if c.startswith(BIN_PREFIX) and runs[c].notna().any()]
    return sorted(columns, key=lambda c: int(c.removeprefix(BIN_PREFIX).split("_")[0]))


def position_tables(runs: pd.DataFrame, tracking_uri: str) -> pd.DataFrame:
    """``run_id, position, loss, tokens``: each run's ``eval/loss_by_position.csv`` (test loss
    per token position), or an empty frame when any run lacks the artifact."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    frames = []
    with tempfile.TemporaryDirectory() as tmp:
        for run_id in runs["run_id"]:
            try:
                path = client.download_artifacts(str(run_id), POSITION_FILE, tmp)
            except Exception:  # MLflow raises several types for a missing artifact
                return pd.DataFrame(columns=["run_id", "position", "loss", "tokens"])
            frames.append(pd.read_csv(path).assign(run_id=run_id))
    if not frames:
        return pd.DataFrame(columns=["run_id", "position", "loss", "tokens"])
    return pd.concat(frames, ignore_index=True)


def first_positions(context_len: float) -> int:
    """How many leading positions the ``first`` column covers: the first of the
    :data:`POSITION_BUCKETS` equal buckets the figures average positions in."""
    return max(1, math.ceil(context_len / POSITION_BUCKETS))


def add_first_positions(context: pd.DataFrame, tables: pd.DataFrame) -> pd.DataFrame:
    """``context`` with :data:`FIRST_COLUMN`: each run's test loss over its first positions
    (where a query has the fewest keys to attend to, and a sink the most to offer)."""
    if tables.empty:
        return context.assign(**{FIRST_COLUMN: np.nan})
    width = first_positions(float(context["context_len"].max()))
    early = tables[tables["position"] < width]
    weighted = early.assign(weighted=early["loss"] * early["tokens"]).groupby("run_id")
    sums = weighted[["weighted", "tokens"]].sum()
    loss = (sums["weighted"] / sums["tokens"]).rename(FIRST_COLUMN)
    return context.drop(columns=FIRST_COLUMN, errors="ignore").merge(
        loss, left_on="run_id", right_index=True, how="left"
    )


def loss_columns(context: pd.DataFrame) -> list[str]:
    """The context runs' loss columns: overall, the first positions (when per-position
    artifacts were logged), then each position bin."""
    first = [FIRST_COLUMN] if context.get(FIRST_COLUMN, pd.Series()).notna().any() else []
    return ["loss", *first, *bin_columns(context)]


def context_arm(runs: pd.DataFrame) -> pd.Series:
    return runs["window"].astype(str) + " / " + runs["sinks"].astype(str)


def context_tables(context: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per arm: loss overall and per position bin with intervals, and KV-cache bytes; and per
    arm and bin, the difference from the all_full / none arm."""
    context = context.assign(arm=context_arm(context))
    reference = " / ".join(CONTEXT_REFERENCE[f] for f in CONTEXT_FACTORS)
    columns = loss_columns(context)
    rows, diffs = [], []
    for arm, group in context.groupby("arm", sort=True):
        row: dict[str, object] = {"arm": arm, "n_seeds": int(group["seed"].nunique())}
        row["kv_cache_bytes_at_context"] = group["kv_cache_bytes_at_context"].mean()
        for column in columns:
            values = _per_seed(group, column)
            row[column] = _loss_text(mean_ci(values), values)
            if arm != reference and (context["arm"] == reference).any():
                ref = _per_seed(context[context["arm"] == reference], column)
                diff, how = difference(values, ref)
                diffs.append({"arm": arm, "bin": column, "diff": diff.mean, "low": diff.low,
                              "high": diff.high, "how": how})  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows), pd.DataFrame(diffs)


def _level_means(frame: pd.DataFrame, factor: str, column: str) -> dict[str, pd.Series]:
    """Per level of ``factor``: each seed's ``column``, averaged over the other factors' levels
    (a main effect, as in a balanced factorial)."""
    return {str(level): _per_seed(group, column) for level, group in frame.groupby(factor)}


def effect_columns(context: pd.DataFrame) -> list[str]:
    """Beside the overall loss: the first positions (where sinks act) when per-position
    artifacts were logged, and the last bin (where a window cuts off context)."""
    columns = loss_columns(context)
    return [c for c in columns if c == FIRST_COLUMN] + bin_columns(context)[-1:]


def context_effects(context: pd.DataFrame) -> pd.DataFrame:
    """Per size and context factor, each level's main effect against the reference level
    (:data:`CONTEXT_REFERENCE`), over all positions, the first positions and the last position
    bin (:func:`effect_columns`): ``size, train_flops, factor, level, reference, bin, diff,
    low, high, how``."""
    rows = []
    columns = ["loss", *effect_columns(context)]
    for size, runs in context.groupby("size", sort=False):
        for factor in CONTEXT_FACTORS:
            reference = CONTEXT_REFERENCE[factor]
            for column in columns:
                by_level = _level_means(runs, factor, column)
                if reference not in by_level:
                    continue
                for level, values in by_level.items():
                    if level == reference:
                        continue
                    diff, how = difference(values, by_level[reference])
                    rows.append({
                        "size": size, "train_flops": float(runs["train_flops"].mean()),
                        "factor": factor, "level": level, "reference": reference,
                        "bin": column, "diff": diff.mean, "low": diff.low, "high": diff.high,
                        "how": how,
                    })  # fmt: skip
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# Sizes for the judgement rule
# --------------------------------------------------------------------------------------------


def size_rows(data: LadderData) -> list[dict[str, Any]]:
    """The rows of :func:`ladder_sizes`, from loaded data."""
    rows = []
    for name, group in data.report.groupby("size", sort=False):
        by_level = {o: _per_seed(g) for o, g in group.groupby("optimizer")}
        if len(by_level) < 2:
            continue
        best, category = favoured_level(by_level)
        rows.append({
            "factor": "optimizer", "size": name, "flops": float(group["train_flops"].mean()),
            "context_len": float(group["context_len"].mean()), "window_tokens": None,
            "favoured": best, "category": category,
        })  # fmt: skip
    context = data.context if data.context is not None else pd.DataFrame()
    for factor in CONTEXT_FACTORS if not context.empty else ():
        for name, runs in context.groupby("size", sort=False):
            if runs[factor].nunique() < 2:
                continue
            best, category = favoured_level(_level_means(runs, factor, "loss"))
            rows.append({
                "factor": factor, "size": name, "flops": float(runs["train_flops"].mean()),
                "context_len": float(runs["context_len"].mean()),
                "window_tokens": _window_tokens(runs), "favoured": best, "category": category,
            })  # fmt: skip
    return rows


def _window_tokens(context: pd.DataFrame) -> float | None:
    if "window_size" not in context.columns or context["window_size"].isna().all():
        return None
    return float(context["window_size"].max())


def ladder_sizes(summary: Mapping[str, Any], tracking_uri: str | None = None) -> list[dict]:
    """One row per (measured factor, size): ``factor, size, flops, context_len,
    window_tokens`` (the context sweep's window, else None), ``favoured`` (the level with the
    lowest mean test loss) and ``category`` (``favoured`` when that level beats every other,
    Holm at 5%, else ``inconclusive``): what the judgement rule counts. For
    :mod:`~gpt5_ablate.analysis.judgement`: ``MeasuredSize(r["flops"], r["context_len"],
    r["favoured"], r["category"], r["size"])`` per row of one factor."""
    return size_rows(load_ladder(summary, tracking_uri))


def write_ladder_report(
    summary: dict, out: Path, tracking_uri: str | None = None, n_resamples: int = 1000
) -> Path:
    """Write ``<out>/ladder/report.md``; see :func:`.ladder_report.write_ladder_report`."""
    # Imported here: the report module builds on this one, so a top-level import would cycle.
    from gpt5_ablate.analysis.ladder_report import write_ladder_report as write

    return write(summary, out, tracking_uri, n_resamples)
