"""The judgement rule on planted evidence tables, and the shipped table's completeness."""

from __future__ import annotations

import datetime as dt

import pytest

from gpt5_ablate.analysis.evidence import (
    UNDISCLOSED,
    EvidenceRow,
    EvidenceTable,
    ModelInfo,
    load_evidence,
)
from gpt5_ablate.analysis.judgement import (
    GPT5_RELEASE,
    JudgementSettings,
    MeasuredSize,
    hinges_on_openai,
    judgement,
    measured_support,
    rule_text,
    voters,
)
from gpt5_ablate.analysis.stats import FACTORS

BEFORE = dt.date(2025, 1, 1)


def planted(
    models: dict[str, tuple[str, str, dict[str, str]]], **released: dt.date
) -> EvidenceTable:
    """``{model: (lab, family, {factor: level})}`` as an evidence table with one source."""
    infos = {
        name: ModelInfo(name, lab, released.get(name.replace(" ", "_"), BEFORE), name, family)
        for name, (lab, family, _) in models.items()
    }
    rows = [
        EvidenceRow(name, factor, level, "planted", "src", "Planted source", "https://example.org")
        for name, (_, _, levels) in models.items()
        for factor, level in levels.items()
    ]
    counts_as = {
        "window": {"alternate": "alternate", "all_full": "all_full", "local_5to1": "alternate"},
        "sinks": {"learned": "learned", "none": "none"},
        "optimizer": {"muon": "muon_adamw", "adamw": "adamw"},
        "attention": {"gqa": "gqa", "mla": "mla", "mha": "mha"},
    }
    return EvidenceTable(infos, rows, counts_as, {}, {"src": ("Planted source", "https://x")})


def test_a_tie_is_undetermined_and_says_so() -> None:
    table = planted(
        {
            "A": ("Lab A", "a", {"sinks": "learned"}),
            "B": ("Lab B", "b", {"sinks": "none"}),
        }
    )
    result = judgement("sinks", table, settings=JudgementSettings(w_openai=1))
    assert result.tie and not result.decided
    assert result.text.startswith("undetermined (tie")
    assert result.posterior == {"learned": 0.5, "none": 0.5}


def test_a_shared_architecture_pair_casts_one_vote_except_for_the_optimizer() -> None:
    levels = {"attention": "mla", "optimizer": "adamw"}
    table = planted(
        {
            "DS": ("Lab DS", "ds-arch", levels),
            "Kimi": ("Lab K", "ds-arch", {"attention": "mla", "optimizer": "muon"}),
            "Q": ("Lab Q", "q", {"attention": "gqa", "optimizer": "muon"}),
        }
    )
    settings = JudgementSettings(w_openai=1)
    attention = judgement("attention", table, settings=settings)
    # One family vote for mla against one for gqa: a tie, not mla 2 : gqa 1.
    weights = {v.model: v.weight for v in attention.votes}
    assert weights == {"DS": 0.5, "Kimi": 0.5, "Q": 1.0}
    assert attention.tie and attention.posterior["mla"] == attention.posterior["gqa"]
    optimizer = judgement("optimizer", table, settings=settings)
    # Each lab chose its optimizer itself: muon 2 (Kimi, Q) against adamw 1.
    assert {v.model: v.weight for v in optimizer.votes} == {"DS": 1.0, "Kimi": 1.0, "Q": 1.0}
    assert optimizer.level == "muon_adamw"
    assert optimizer.posterior["muon_adamw"] == pytest.approx(3 / 5)


def test_the_openai_weight_flips_the_judgement_and_the_sensitivity_line_shows_it() -> None:
    table = planted(
        {
            "gpt-oss": ("OpenAI", "oss", {"window": "alternate"}),
            "A": ("Lab A", "a", {"window": "all_full"}),
            "B": ("Lab B", "b", {"window": "all_full"}),
            "C": ("Lab C", "c", {"window": "all_full"}),
        }
    )
    light = judgement("window", table, settings=JudgementSettings(w_openai=1))
    heavy = judgement("window", table, settings=JudgementSettings(w_openai=8))
    # w=1: all_full (1+3)/(2+4) = 0.67; w=8: alternate (1+8)/(2+11) = 0.69.
    assert light.decided and light.level == "all_full"
    assert light.share == pytest.approx(4 / 6)
    assert heavy.decided and heavy.level == "alternate"
    assert heavy.share == pytest.approx(9 / 13)
    assert "1: all_full (0.67)" in light.sensitivity and "8: alternate (0.69)" in light.sensitivity
    assert hinges_on_openai(light)


def test_only_each_labs_latest_model_before_the_cutoff_votes() -> None:
    table = planted(
        {
            "Old": ("Lab A", "a1", {"sinks": "learned"}),
            "New": ("Lab A", "a2", {"sinks": "none"}),
            "After": ("Lab B", "b", {"sinks": "learned"}),
        },
        Old=dt.date(2023, 1, 1),
        New=dt.date(2025, 3, 1),
        After=dt.date(2025, 9, 1),
    )
    assert [m.name for m in voters(table, GPT5_RELEASE)] == ["New"]
    result = judgement("sinks", table, settings=JudgementSettings(threshold=0.6))
    assert result.level == "none" and result.share == pytest.approx(2 / 3)


def test_undisclosed_and_uncounted_levels_cast_no_vote() -> None:
    table = planted(
        {
            "gpt-oss": ("OpenAI", "oss", {"optimizer": UNDISCLOSED}),
            "A": ("Lab A", "a", {"optimizer": "adamw"}),
        }
    )
    result = judgement("optimizer", table)
    assert [v.level for v in result.votes] == [None, "adamw"]
    assert "gpt-oss (undisclosed)" in result.text
    assert result.posterior["adamw"] == pytest.approx(2 / 3)


def test_measured_effects_count_only_when_replicated_across_compute_at_a_long_enough_context() -> (
    None
):
    settings = JudgementSettings(window_tokens=128)
    wide = [(1e12 * 10**i, 1024, "alternate", "favoured") for i in (0, 1, 2)]
    assert measured_support("window", wide, settings)[0] == "alternate"
    narrow = [(1e12 * (1 + i), 1024, "alternate", "favoured") for i in range(3)]
    level, why = measured_support("window", narrow, settings)
    assert level is None and "spanning 3× compute" in why
    short = [(1e12 * 10**i, 256, "alternate", "favoured") for i in (0, 1, 2)]
    level, why = measured_support("window", short, settings)
    assert level is None and "512 tokens" in why
    split = [*wide, MeasuredSize(1e15, 1024, "all_full", "favoured")]
    assert measured_support("window", split, settings)[0] is None
    # The optimizer has no context condition; two sizes are too few.
    assert measured_support("optimizer", wide[:2], settings)[0] is None


def test_a_measured_effect_moves_the_posterior_by_a_bounded_amount() -> None:
    table = planted(
        {
            "A": ("Lab A", "a", {"window": "all_full"}),
            "B": ("Lab B", "b", {"window": "all_full"}),
            "C": ("Lab C", "c", {"window": "all_full"}),
        }
    )
    sizes = [(1e12 * 10**i, 1024, "alternate", "favoured") for i in (0, 1, 2)]
    settings = JudgementSettings(window_tokens=128, measured_votes=2)
    result = judgement("window", table, sizes, settings)
    # all_full 3 votes, alternate 2 measured: (1+3)/(2+5) = 0.57, not decided; it still leans.
    assert result.posterior["alternate"] == pytest.approx(3 / 7)
    assert not result.decided and result.level == "all_full"
    assert "measured evidence adds 2 votes" in result.text
    assert "without measured evidence: all_full (0.80)" in result.sensitivity


def test_the_shipped_table_covers_every_factor_of_every_model() -> None:
    table = load_evidence()
    assert table.missing() == []
    expected = {
        "gpt-oss", "GPT-3", "DeepSeek-V3", "Kimi K2", "Qwen3", "Qwen3-Next", "OLMo 2", "Llama 3",
        "Llama 4", "GLM-4.5", "Gemma 2", "Gemma 3", "Mistral 7B", "Mixtral",
    }  # fmt: skip
    assert set(table.models) == expected
    assert (
        table.models["Kimi K2"].architecture_family
        == table.models["DeepSeek-V3"].architecture_family
    )
    for row in table.rows:
        assert row.factor in FACTORS, row
        assert row.level == UNDISCLOSED or row.level in table.counts_as[row.factor], row
        assert row.url.startswith("https://") and row.claim, row
    assert table.row("gpt-oss", "optimizer").level == UNDISCLOSED
    assert table.row("OLMo 2", "attention").level == "gqa"  # the 32B flagship
    # Every lab but OpenAI's older GPT-3, Meta's Llama 3, Google's Gemma 2, Mistral 7B and the
    # post-GPT-5 Qwen3-Next votes.
    names = {m.name for m in voters(table, GPT5_RELEASE)}
    assert names == expected - {"GPT-3", "Llama 3", "Gemma 2", "Mistral 7B", "Qwen3-Next"}


def test_the_shipped_judgements_and_the_rule_text() -> None:
    table = load_evidence()
    window = judgement("window", table)
    assert window.text.startswith("undetermined (leans alternate")
    assert judgement("sinks", table).text.startswith("most consistent with none")
    assert "gpt-oss (undisclosed)" in judgement("optimizer", table).text
    text = rule_text(JudgementSettings())
    assert "w_openai = 4" in text and "100×" in text and "2025-08-07" in text
