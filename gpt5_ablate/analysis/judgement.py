"""Which level GPT-5 is *most consistent with*, per factor: the stated, configurable rule.

1. **Voters.** Each lab votes once, through its latest listed model released before GPT-5
   (``cutoff``, 2025-08-07). A model whose level is ``undisclosed``, or has no harness
   counterpart, abstains.
2. **Shared architectures.** Voters of one ``architecture_family`` (Kimi K2 reuses DeepSeek-V3's)
   share one vote on the architecture factors; on the optimizer, which a lab picks itself, each
   keeps its own.
3. **Weights.** OpenAI's voter (gpt-oss, released two days before GPT-5) weighs ``w_openai``;
   every other voter 1.
4. **Posterior.** A Dirichlet(``prior``) prior over the factor's harness levels plus the weighted
   votes gives posterior mean shares ``(prior + v_k) / (K·prior + V)``. The judgement is "most
   consistent with X" when X's share reaches ``threshold``, else "undetermined (leans X)".
5. **Measured effects** add ``measured_votes`` to their level (a bounded move: never more than
   that many votes) only when the same level is favoured at ``min_sizes`` or more sizes spanning
   ``min_compute_span``× training compute, at a context where the factor can matter (window and
   sinks: context ≥ ``context_factor`` × the window), and no such size favours another level.
6. **Sensitivity.** The same judgement at w_openai = 1, 2, 4, 8 and without measured evidence.

:func:`judgement` is the one entry point; the report and the scale-ladder report both call it.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from gpt5_ablate.analysis.evidence import MIN_COMPUTE_SPAN, MIN_SIZES, EvidenceTable, ModelInfo

GPT5_RELEASE = dt.date(2025, 8, 7)
SENSITIVITY_WEIGHTS: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
#: Factors whose effect needs contexts longer than the attention window to show.
WINDOW_BOUND = ("window", "sinks")
#: The factor a lab chooses independently of the architecture it shares.
PER_LAB_FACTORS = ("optimizer",)


@dataclass(frozen=True)
class JudgementSettings:
    w_openai: float = 4.0
    threshold: float = 0.6
    prior: float = 1.0
    cutoff: dt.date = GPT5_RELEASE
    measured_votes: float = 2.0
    min_sizes: int = MIN_SIZES
    min_compute_span: float = MIN_COMPUTE_SPAN
    context_factor: float = 4.0
    #: Attention window of the measured runs (tokens), for the window/sinks context check.
    window_tokens: int | None = None
    openai_lab: str = "OpenAI"


@dataclass(frozen=True)
class MeasuredSize:
    """One model size's outcome for a factor: what the ladder or a report group measured."""

    compute_flops: float
    context_len: float | None
    favoured: str | None
    category: str
    label: str = ""


SizeLike = MeasuredSize | tuple[float, float | None, str | None, str]


@dataclass(frozen=True)
class Vote:
    model: str
    lab: str
    level: str | None  # harness level, None = abstains
    weight: float


@dataclass
class Judgement:
    factor: str
    level: str | None
    share: float
    decided: bool
    posterior: dict[str, float]
    votes: list[Vote]
    measured_note: str
    measured_level: str | None
    text: str = ""
    sensitivity: str = ""
    tie: bool = False
    by_weight: dict[float, tuple[str | None, float, bool]] = field(default_factory=dict)

    @property
    def short(self) -> str:
        return _short(self.level, self.share, self.decided)


def _short(level: str | None, share: float, decided: bool) -> str:
    if level is None:
        return "undetermined (no votes)"
    if " = " in level:
        return f"tie {level} ({share:.2f})"
    if decided:
        return f"{level} ({share:.2f})"
    return f"undetermined, leans {level} ({share:.2f})"


def voters(evidence: EvidenceTable, cutoff: dt.date) -> list[ModelInfo]:
    """Each lab's latest listed model released before ``cutoff``."""
    latest: dict[str, ModelInfo] = {}
    for info in evidence.models.values():
        if info.released >= cutoff:
            continue
        if info.lab not in latest or info.released > latest[info.lab].released:
            latest[info.lab] = info
    return sorted(latest.values(), key=lambda m: m.released)


def votes(evidence: EvidenceTable, factor: str, settings: JudgementSettings) -> list[Vote]:
    """Every voter's counted level and weight (families split one vote on shared factors)."""
    chosen = voters(evidence, settings.cutoff)
    base = {m.name: settings.w_openai if m.lab == settings.openai_lab else 1.0 for m in chosen}
    family: dict[str, list[str]] = {}
    for m in chosen:
        family.setdefault(m.architecture_family, []).append(m.name)
    out = []
    for m in chosen:
        row = evidence.row(m.name, factor)
        level = None if row is None else evidence.harness_level(factor, row.level)
        weight = base[m.name]
        members = family[m.architecture_family]
        if factor not in PER_LAB_FACTORS and len(members) > 1:
            weight = max(base[n] for n in members) / len(members)
        out.append(Vote(m.name, m.lab, level, weight))
    return out


def _as_size(size: SizeLike) -> MeasuredSize:
    return size if isinstance(size, MeasuredSize) else MeasuredSize(*size)


def _context_ok(factor: str, size: MeasuredSize, settings: JudgementSettings) -> bool:
    if factor not in WINDOW_BOUND:
        return True
    if settings.window_tokens is None or size.context_len is None:
        return False
    return size.context_len >= settings.context_factor * settings.window_tokens


def measured_support(
    factor: str, sizes: Iterable[SizeLike], settings: JudgementSettings
) -> tuple[str | None, str]:
    """The level measured effects support (None if they do not qualify) and why."""
    sizes = [_as_size(s) for s in sizes]
    if not sizes:
        return None, "no measurement"
    usable = [s for s in sizes if _context_ok(factor, s, settings)]
    if not usable:
        need = settings.context_factor * (settings.window_tokens or math.nan)
        return (
            None,
            f"no size at a context ≥ {need:g} tokens ({settings.context_factor:g}× the window)",
        )
    favoured = [s for s in usable if s.category == "favoured" and s.favoured]
    levels = {s.favoured for s in favoured}
    if len(levels) > 1:
        return None, f"sizes favour different levels ({', '.join(sorted(map(str, levels)))})"
    if not favoured:
        return None, f"no level favoured at any of {len(usable)} size(s)"
    level = favoured[0].favoured
    flops = [s.compute_flops for s in favoured if s.compute_flops and s.compute_flops > 0]
    span = max(flops) / min(flops) if len(flops) >= 2 else 1.0
    if len(favoured) < settings.min_sizes or span < settings.min_compute_span:
        return None, (
            f"{level} favoured at {len(favoured)} size(s) spanning {span:.3g}× compute; the rule "
            f"needs {settings.min_sizes} sizes spanning {settings.min_compute_span:g}×"
        )
    return level, f"{level} favoured at {len(favoured)} sizes spanning {span:.3g}× compute"


def _posterior(levels: Sequence[str], tally: dict[str, float], prior: float) -> dict[str, float]:
    total = sum(tally.values()) + prior * len(levels)
    return {lv: (prior + tally.get(lv, 0.0)) / total for lv in levels} if levels else {}


def _decide(
    factor: str,
    evidence: EvidenceTable,
    sizes: Sequence[MeasuredSize],
    settings: JudgementSettings,
    tested: Sequence[str],
) -> Judgement:
    cast = votes(evidence, factor, settings)
    tally: dict[str, float] = {}
    for v in cast:
        if v.level is not None:
            tally[v.level] = tally.get(v.level, 0.0) + v.weight
    measured_level, note = measured_support(factor, sizes, settings)
    if measured_level is not None:
        tally[measured_level] = tally.get(measured_level, 0.0) + settings.measured_votes
    levels = evidence.harness_levels(factor, [*tested, *tally])
    posterior = _posterior(levels, tally, settings.prior)
    if not tally:
        return Judgement(factor, None, math.nan, False, posterior, cast, note, measured_level)
    top = max(posterior.values())
    leaders = [lv for lv, p in posterior.items() if math.isclose(p, top)]
    level = leaders[0] if len(leaders) == 1 else None
    decided = level is not None and top >= settings.threshold
    judged = Judgement(factor, level, top, decided, posterior, cast, note, measured_level)
    if level is None:
        judged.level, judged.tie = " = ".join(leaders), True
    return judged


def _vote_text(evidence: EvidenceTable, factor: str, cast: Sequence[Vote]) -> str:
    by_level: dict[str, list[str]] = {}
    abstain = []
    for v in cast:
        row = evidence.row(v.model, factor)
        cite = evidence.cite(row) if row else ""
        weight = "" if math.isclose(v.weight, 1.0) else f" ×{v.weight:g}"
        if v.level is None:
            shown = row.level if row else "no row"
            abstain.append(f"{v.model} ({shown}){cite}")
        else:
            by_level.setdefault(v.level, []).append(f"{v.model}{weight}{cite}")
    parts = [f"{lv} {sum(w.weight for w in cast if w.level == lv):g}: {', '.join(ms)}"
             for lv, ms in sorted(by_level.items(), key=lambda kv: -sum(
                 w.weight for w in cast if w.level == kv[0]))]  # fmt: skip
    if abstain:
        parts.append("no vote: " + ", ".join(abstain))
    return "; ".join(parts)


def judgement(
    factor: str,
    evidence: EvidenceTable,
    measured_sizes: Sequence[SizeLike] = (),
    settings: JudgementSettings | None = None,
    tested: Sequence[str] = (),
) -> Judgement:
    """The judgement for ``factor``, with ``.text`` and a ``.sensitivity`` line.

    ``measured_sizes``: one entry per model size, ``(compute_flops, context_len, favoured level
    or None, category)`` or :class:`MeasuredSize`; ``tested``: the harness levels the runs tried.
    """
    settings = settings or JudgementSettings()
    sizes = [_as_size(s) for s in measured_sizes]
    main = _decide(factor, evidence, sizes, settings, tested)
    if main.level is None:
        main.text = "undetermined: no voting lab's latest flagship discloses it"
    elif main.tie:
        main.text = f"undetermined (tie {main.level}: posterior {main.share:.2f} each)"
    elif main.decided:
        main.text = f"most consistent with {main.level} (posterior {main.share:.2f})"
    else:
        main.text = (
            f"undetermined (leans {main.level}: posterior {main.share:.2f} < "
            f"{settings.threshold:g})"
        )
    grounds = _vote_text(evidence, factor, main.votes)
    measured = (
        f"measured evidence adds {settings.measured_votes:g} votes: {main.measured_note}"
        if main.measured_level
        else f"measured evidence not counted: {main.measured_note}"
    )
    untested = (
        "; level not run here"
        if tested and main.level and main.decided and main.level not in tested
        else ""
    )
    main.text += f"; votes: {grounds}; {measured}{untested}"
    for weight in SENSITIVITY_WEIGHTS:
        other = _decide(factor, evidence, sizes, replace(settings, w_openai=weight), tested)
        main.by_weight[weight] = (other.level, other.share, other.decided)
    bare = _decide(factor, evidence, [], settings, tested)
    weights = " · ".join(f"{w:g}: {_short(*main.by_weight[w])}" for w in SENSITIVITY_WEIGHTS)
    main.sensitivity = f"w_openai {weights}; without measured evidence: {_short(bare.level, bare.share, bare.decided)}"
    return main


def hinges_on_openai(j: Judgement) -> bool:
    """Whether the judged level or its decidedness changes across the sensitivity weights."""
    outcomes = {(level, decided) for level, _, decided in j.by_weight.values()}
    return len(outcomes) > 1


def rule_text(settings: JudgementSettings) -> str:
    """The rule in one paragraph, with the settings in force (the report prints it)."""
    return (
        f"Each lab votes once, through its latest listed model released before GPT-5 "
        f"({settings.cutoff.isoformat()}); models sharing one architecture (e.g. Kimi K2 and "
        "DeepSeek-V3) share one vote on architecture factors but not on the optimizer; an "
        "`undisclosed` level, or one with no harness counterpart, casts no vote. OpenAI's "
        f"gpt-oss weighs w_openai = {settings.w_openai:g}, every other vote 1. A "
        f"Dirichlet({settings.prior:g}) prior over the factor's levels plus the weighted votes "
        "gives posterior mean shares; the judgement is *most consistent with X* when X's share "
        f"reaches {settings.threshold:g}, else *undetermined (leans X)*. A measured effect adds "
        f"{settings.measured_votes:g} votes to its level (no more) only when the same level is "
        f"favoured at {settings.min_sizes} or more sizes spanning ≥{settings.min_compute_span:g}× "
        "training compute, with window and sinks measured at a context of at least "
        f"{settings.context_factor:g}× the window, and no size favours another level. Each factor's "
        "sensitivity line repeats the judgement at w_openai = "
        f"{', '.join(f'{w:g}' for w in SENSITIVITY_WEIGHTS)} and without measured evidence. "
        "GPT-5's architecture is not public: the judgement says what it is most consistent with, "
        "never what it contains."
    )
