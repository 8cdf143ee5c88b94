"""One ladder at two budgets: the data multiplier at a fixed size is recovered from planted
losses, its change across budgets is judged by its interval, and a reference that is not the
same ladder at another budget is refused before anything runs."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from gpt5_ablate.analysis.ladder import LadderData
from gpt5_ablate.analysis.ladder_budget import (
    budget_comparisons,
    budget_lines,
    budget_of,
    budget_runs,
    check_reference,
    check_references,
    log_multipliers,
    read_reference,
)
from gpt5_ablate.analysis.plots_ladder import plot_loss_vs_budget
from gpt5_ablate.errors import ConfigError, InputError
from gpt5_ablate.ladder import merge_overrides
from gpt5_ablate.protocol import ProtocolArgs, load_protocol, run_protocol

PARAMS = {"s1": 1e5, "s2": 4e5}
FLOPS_PER_TOKEN = 6.0  # per parameter
SEEDS = (1, 2, 3)
NOISE = 0.003


def adamw_loss(tokens: float, params: float) -> float:
    return 7.0 - 0.5 * math.log10(tokens) - 0.3 * math.log10(params)


def planted(ratio: float) -> float:
    """The data multiplier planted at ``ratio`` tokens per parameter: 2x at 0.3, 1.5x at 3."""
    return 2.0 * (ratio / 0.3) ** math.log10(0.75)


def ladder_at(ratio: float, rng: np.random.Generator, multiplier: Any = planted) -> LadderData:
    rows = []
    for size, params in PARAMS.items():
        tokens = ratio * params
        for optimizer in ("adamw", "muon_adamw"):
            # Muon reaches the loss AdamW reaches with `multiplier` times the tokens.
            effective = tokens * (multiplier(ratio) if optimizer == "muon_adamw" else 1.0)
            for seed in SEEDS:
                rows.append({
                    "size": size, "optimizer": optimizer, "seed": seed,
                    "loss": adamw_loss(effective, params) + rng.normal(0, NOISE),
                    "n_params_non_embedding": params, "tokens_seen": tokens,
                    "train_flops": FLOPS_PER_TOKEN * params * tokens, "context_len": 128.0,
                })  # fmt: skip
    return LadderData(pd.DataFrame(rows), None, [], [])


def test_the_planted_data_multiplier_and_its_shrinking_are_recovered() -> None:
    rng = np.random.default_rng(3)
    ladders = [ladder_at(0.3, rng), ladder_at(3.0, rng)]
    comparisons = budget_comparisons(ladders, n_resamples=400)
    assert [c.size for c in comparisons] == ["s1", "s2"]
    for c in comparisons:
        assert c.tokens_per_param == [0.3, 3.0]
        for ratio, estimate in zip(c.tokens_per_param, c.multipliers, strict=True):
            assert estimate.low < planted(ratio) < estimate.high
            assert estimate.value == pytest.approx(planted(ratio), rel=0.1)
        assert c.beyond == [False, True] and c.trend is None
        change = c.change
        assert change.value == pytest.approx(0.75, rel=0.1)
        assert change.low < 0.75 < change.high < 1.0
    text = "\n".join(budget_lines({0.3: ladders[0], 3.0: ladders[1]}, comparisons, {}, "ref"))
    assert "s1: from 0.3 to 3 tokens per parameter (10× the data)" in text
    assert "it shrinks." in text
    assert "The longest budget here is 3 tokens per parameter, 0.15× the compute-optimal" in text
    # At 3 tokens/param AdamW needs 4.5 tokens/param: past its longest budget, and said so.
    assert text.count("extends adamw's line past its budgets") == 2


def test_three_budgets_give_the_trend_per_decade_of_data() -> None:
    rng = np.random.default_rng(8)
    ladders = [ladder_at(ratio, rng) for ratio in (0.3, 3.0, 20.0)]
    (s1, _) = budget_comparisons(ladders, n_resamples=400)
    assert s1.tokens_per_param == [0.3, 3.0, 20.0]
    assert s1.trend is not None and s1.trend.low < math.log10(0.75) < s1.trend.high < 0
    assert s1.multipliers[2].value == pytest.approx(planted(20.0), rel=0.1)
    text = "\n".join(
        budget_lines(dict(zip((0.3, 3.0, 20.0), ladders, strict=True)), [s1], {}, "ref")
    )
    assert "fitted over its 3 budgets, -0.1" in text


def test_the_multiplier_is_read_between_adamws_budgets_not_off_one_line() -> None:
    x = np.array([0.0, 1.0, 2.0])  # log10 tokens per parameter
    adamw = np.array([5.0, 4.0, 3.5])  # a curve: -1 per decade, then -0.5
    muon = np.array([4.5, 3.75, 3.4])
    # 4.5 lies on the first segment (0.5 decades on), 3.75 on the second (0.5 on), 3.4 past
    # the last budget, on the second segment extended (2.2, i.e. 0.2 decades on).
    assert log_multipliers(x, adamw, muon) == pytest.approx([0.5, 0.5, 0.2])
    # An AdamW loss that does not fall with the budget gives no multiplier.
    assert np.isnan(log_multipliers(x, np.array([5.0, 4.0, 4.2]), muon)).all()


def test_the_budget_figure_is_written(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    paths = plot_loss_vs_budget(budget_runs([ladder_at(0.3, rng), ladder_at(3.0, rng)]), tmp_path)
    assert [p.name for p in paths] == ["loss_vs_budget.png", "loss_vs_budget.svg"]
    assert all(p.stat().st_size > 1000 for p in paths)


def test_an_unchanged_multiplier_is_not_called_a_change() -> None:
    rng = np.random.default_rng(4)
    ladders = [ladder_at(0.3, rng, lambda r: 1.5), ladder_at(3.0, rng, lambda r: 1.5)]
    comparisons = budget_comparisons(ladders, n_resamples=400)
    text = "\n".join(budget_lines({0.3: ladders[0], 3.0: ladders[1]}, comparisons, {}, "ref"))
    assert "it does not change measurably." in text and "shrinks" not in text


def test_a_size_run_at_one_budget_is_left_out() -> None:
    rng = np.random.default_rng(5)
    low, high = ladder_at(0.3, rng), ladder_at(3.0, rng)
    high.report = high.report[high.report["size"] == "s2"]
    assert [c.size for c in budget_comparisons([low, high], n_resamples=50)] == ["s2"]


def summary(budget: str, name: str = "cpu_ladder", sizes: tuple[str, ...] = ("s1",)) -> dict:
    overrides = ["model=tiny", "tokenizer.vocab_size=2048", f"trainer.tokens_per_param={budget}"]
    return {"protocol": {"name": name, "run_overrides": overrides},
            "sizes": [{"name": s} for s in sizes]}  # fmt: skip


def test_a_reference_that_is_the_same_ladder_at_another_budget_is_accepted() -> None:
    assert budget_of(summary("0.3")["protocol"]) == 0.3
    check_reference(summary("3"), summary("0.3", sizes=("s1", "s2")), "ref")


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        (summary("3"), r"same budget \(trainer.tokens_per_param=3.0\)"),
        (summary("0.3", name="gpu_ladder"), r"ran protocol 'gpu_ladder'"),
        (summary("0.3", sizes=("s9",)), r"share no size"),
    ],
)
def test_a_reference_that_differs_in_more_than_the_budget_is_refused(
    reference: dict, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        check_reference(summary("3"), reference, "ref")
    other = summary("0.3")
    other["protocol"]["run_overrides"][1] = "tokenizer.vocab_size=8192"
    with pytest.raises(InputError, match=r"differ in more than the budget: tokenizer.vocab"):
        check_reference(summary("3"), other, "ref")


def test_a_missing_or_damaged_reference_is_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"protocol.json does not exist.*reference_ladder="):
        read_reference(tmp_path)
    (tmp_path / "protocol.json").write_text("{not json")
    with pytest.raises(InputError, match=r"is damaged"):
        read_reference(tmp_path)


def _reference_dir(tmp_path: Path, budget: str) -> Path:
    """A finished cpu_ladder run's protocol.json at ``budget`` tokens per parameter."""
    folder = tmp_path / "reference"
    folder.mkdir()
    overrides = merge_overrides(
        [*load_protocol("cpu_ladder").run_overrides, f"trainer.tokens_per_param={budget}"]
    )
    recorded = {"protocol": {"name": "cpu_ladder", "run_overrides": overrides},
                "sizes": [{"name": "ladder_s1"}]}  # fmt: skip
    (folder / "protocol.json").write_text(json.dumps(recorded))
    return folder


@pytest.mark.parametrize(
    ("name", "budget", "error", "message"),
    [
        ("cpu_hour", "0.3", ConfigError, r"cpu_hour is not a ladder"),
        ("cpu_ladder", "3", InputError, r"same budget"),
    ],
)
def test_a_bad_reference_ladder_is_refused_before_anything_runs(
    tmp_path: Path, name: str, budget: str, error: type[Exception], message: str
) -> None:
    reference = _reference_dir(tmp_path, budget)
    args = ProtocolArgs(
        name=name, out=str(tmp_path / "out"), tokens_per_param=3.0, reference_ladder=str(reference)
    )
    with pytest.raises(error, match=message):
        run_protocol(args)
    assert not (tmp_path / "out").exists()


def test_several_references_each_need_a_budget_of_their_own(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    for folder, budget in ((first, "0.3"), (second, "20")):
        folder.mkdir()
        (folder / "protocol.json").write_text(json.dumps(summary(budget)))
    found = check_references(summary("3"), f"{first},{second}")
    assert [budget_of(r["protocol"]) for r in found] == [0.3, 20.0]
    (second / "protocol.json").write_text(json.dumps(summary("0.3")))
    with pytest.raises(InputError, match=r"b trains 0.3 tokens per parameter, a budget another"):
        check_references(summary("3"), f"{first},{second}")
