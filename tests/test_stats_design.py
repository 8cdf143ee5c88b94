"""The verdict's statistics on hand-built run tables: the linear model, interactions, Holm,
equivalence, power, the document bootstrap, the judgement rule, LR grids and compute multipliers.

Every table is synthetic with known structure, so each expectation is a planted fact.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from gpt5_ablate.analysis import power
from gpt5_ablate.analysis.compute import compute_multiplier
from gpt5_ablate.analysis.design import fit_design, sum_coding
from gpt5_ablate.analysis.docboot import bootstrap_pairs, matched_pairs
from gpt5_ablate.analysis.evidence import load_evidence
from gpt5_ablate.analysis.judgement import judgement
from gpt5_ablate.analysis.lr_grid import best_rates, lr_table, propose_next
from gpt5_ablate.analysis.verdict import analyse_factors, holm, tost_p

FACTORS = ["attention", "optimizer", "norm"]


def factorial(
    effect: dict[tuple[str, str, str], float],
    seeds: int = 3,
    noise: dict[str, float] | None = None,
    rng_seed: int = 0,
) -> pd.DataFrame:
    """attention {gqa, mla} × optimizer {adamw, muon_adamw} × norm {none, qk_rmsnorm} × seeds.

    ``effect[(attention, optimizer, norm)]`` is the cell's true loss; noise is N(0, sd) with sd
    per optimizer, plus a shared seed offset (data order) of 0.01 × seed.
    """
    noise = noise or {"adamw": 0.01, "muon_adamw": 0.01}
    rng = np.random.default_rng(rng_seed)
    rows = []
    for (attention, optimizer, norm), mean in effect.items():
        for seed in range(seeds):
            rows.append(
                {
                    "run_id": f"{attention}-{optimizer}-{norm}-{seed}",
                    "arm": f"{attention} / {optimizer} / {norm}",
                    "attention": attention,
                    "optimizer": optimizer,
                    "norm": norm,
                    "seed": seed,
                    "loss": mean + 0.01 * seed + rng.normal(0, noise[optimizer]),
                }
            )
    return pd.DataFrame(rows)


def cells(fn) -> dict[tuple[str, str, str], float]:
    return {
        (a, o, n): fn(a, o, n)
        for a in ("gqa", "mla")
        for o in ("adamw", "muon_adamw")
        for n in ("none", "qk_rmsnorm")
    }


def verdicts_for(runs: pd.DataFrame, margin: float = 0.02):
    fit = fit_design(runs, "loss", FACTORS)
    return fit, {r.factor: r for r in analyse_factors(fit, runs, "loss", FACTORS, margin).factors}


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


def test_sum_coding() -> None:
    codes = sum_coding(["a", "b", "c"])
    assert codes["a"].tolist() == [1.0, 0.0]
    assert codes["b"].tolist() == [0.0, 1.0]
    assert codes["c"].tolist() == [-1.0, -1.0]


def test_contrasts_equal_cell_mean_differences() -> None:
    runs = factorial(cells(lambda a, o, n: 4.0 + 0.1 * (a == "mla") + 0.3 * (o == "adamw")))
    fit = fit_design(runs, "loss", FACTORS)
    assert fit.ok and fit.method.startswith("WLS")
    assert set(fit.interactions) == {
        ("attention", "optimizer"),
        ("attention", "norm"),
        ("optimizer", "norm"),
    }
    assert len(fit.seed_levels) == 3
    # Balanced design: the marginal contrast is the plain difference of level means, and the
    # conditional contrast the difference of cell means.
    means = runs.groupby("attention")["loss"].mean()
    assert fit.contrast("attention", "mla", "gqa").estimate == pytest.approx(
        means["mla"] - means["gqa"]
    )
    cell = runs[runs.optimizer == "adamw"].groupby("attention")["loss"].mean()
    assert fit.contrast("attention", "mla", "gqa", {"optimizer": "adamw"}).estimate == (
        pytest.approx(cell["mla"] - cell["gqa"])
    )


def test_too_few_runs_give_no_fit() -> None:
    runs = factorial(cells(lambda a, o, n: 4.0), seeds=1).query("norm == 'none'")
    fit = fit_design(runs, "loss", ["attention", "optimizer"])  # 4 runs, 3 main parameters
    assert not fit.ok and "residual degrees of freedom" in fit.reason
    (result,) = analyse_factors(fit, runs, "loss", ["attention"]).factors
    assert result.category == "untestable"


def test_weights_follow_each_optimizers_noise() -> None:
    runs = factorial(cells(lambda a, o, n: 4.0), noise={"adamw": 0.2, "muon_adamw": 0.01})
    fit = fit_design(runs, "loss", FACTORS)
    assert fit.group_variance["adamw"] > 20 * fit.group_variance["muon_adamw"]
    # Under Muon the noise is small, so the conditional attention effect is far more precise.
    muon = fit.contrast("attention", "mla", "gqa", {"optimizer": "muon_adamw"})
    adamw = fit.contrast("attention", "mla", "gqa", {"optimizer": "adamw"})
    assert muon.se < adamw.se / 5


# --------------------------------------------------------------------------------------------
# Interactions, equivalence, Holm
# --------------------------------------------------------------------------------------------


def test_planted_interaction_replaces_the_pooled_verdict() -> None:
    # mla − gqa = +0.05 under muon_adamw but −0.15 under adamw: pooled −0.05 "leans mla".
    def loss(a: str, o: str, n: str) -> float:
        shift = (0.05 if o == "muon_adamw" else -0.15) if a == "mla" else 0.0
        return 4.0 + 0.3 * (o == "adamw") + shift

    _, results = verdicts_for(factorial(cells(loss)))
    attention = results["attention"]
    assert attention.conditional_on == ["optimizer"]
    check = next(c for c in attention.interactions if c.other == "optimizer")
    assert check.material and check.f_pvalue < 0.001
    assert attention.category == "depends"
    text = attention.outcome_text(0.02)
    assert "no pooled verdict" in text and not text.startswith("favoured")
    by_condition = {dict(cell.condition)["optimizer"]: cell for cell in attention.used}
    assert by_condition["muon_adamw"].best == "gqa"
    assert by_condition["muon_adamw"].outcome == "favoured"
    assert by_condition["adamw"].best == "mla"
    assert by_condition["adamw"].outcome == "favoured"
    (adamw,) = by_condition["adamw"].comparisons
    assert adamw.estimate == pytest.approx(-0.15, abs=0.02)
    # norm has no planted interaction: pooled as usual.
    assert results["norm"].conditional_on == []


def test_equivalent_factor_is_reported_equivalent() -> None:
    _, results = verdicts_for(factorial(cells(lambda a, o, n: 4.0 + 0.002 * (n == "none"))))
    norm = results["norm"]
    assert norm.category == "equivalent"
    assert norm.outcome_text(0.02) == "equivalent within ±0.02"
    (comparison,) = norm.pooled.comparisons
    assert comparison.tost_p_holm < 0.05 < comparison.p_holm


def test_real_difference_is_favoured_and_small_noise_is_inconclusive() -> None:
    runs = factorial(
        cells(lambda a, o, n: 4.0 + 0.3 * (o == "adamw") + 0.02 * (a == "mla")),
        noise={"adamw": 0.03, "muon_adamw": 0.03},
    )
    _, results = verdicts_for(runs, margin=0.005)
    assert results["optimizer"].category == "favoured"
    assert results["optimizer"].favoured == "muon_adamw"
    assert results["attention"].category == "inconclusive"


def test_three_level_factor_compares_every_level_with_the_best() -> None:
    rng = np.random.default_rng(3)
    rows = []
    for seed in range(4):
        for level, mean in (("mla", 3.0), ("gqa", 3.005), ("mha", 3.5)):
            rows.append({"attention": level, "seed": seed, "loss": mean + rng.normal(0, 0.01)})
    runs = pd.DataFrame(rows)
    fit = fit_design(runs, "loss", ["attention"])
    (result,) = analyse_factors(fit, runs, "loss", ["attention"], margin=0.001).factors
    best = result.pooled.best
    assert best in {"mla", "gqa"}  # 0.005 apart: noise decides which is lower
    assert {c.reference for c in result.pooled.comparisons} == {"mla", "gqa", "mha"} - {best}
    assert result.category == "inconclusive"  # mla vs gqa unresolved
    assert f"{best} beats mha" in result.outcome_text(0.001)


def test_holm_matches_a_hand_computation() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    # Sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04; then running max.
    assert holm(p).tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.2, math.nan, 0.01]).tolist()[0] == pytest.approx(0.2)
    assert math.isnan(holm([0.2, math.nan, 0.01])[1])


def test_report_family_is_holm_adjusted() -> None:
    runs = factorial(cells(lambda a, o, n: 4.0 + 0.3 * (o == "adamw") + 0.01 * (a == "mla")))
    fit = fit_design(runs, "loss", FACTORS)
    verdicts = analyse_factors(fit, runs, "loss", FACTORS)
    comparisons = verdicts.comparisons
    raw = [c.effect.p_value for c in comparisons] + [c.tost_p for c in comparisons]
    m = len(raw)
    assert verdicts.n_tests == m == 2 * len(comparisons)
    order = np.argsort(raw)
    expected = np.maximum.accumulate(np.minimum(1, np.asarray(raw)[order] * (m - np.arange(m))))
    adjusted = np.empty(m)
    adjusted[order] = expected
    got = [c.p_holm for c in comparisons] + [c.tost_p_holm for c in comparisons]
    assert got == pytest.approx(adjusted.tolist())
    level = 1 - 0.05 / m
    c = comparisons[0]
    half = scipy_stats.t.ppf(0.5 + level / 2, c.effect.df) * c.effect.se
    assert c.ci == pytest.approx((c.estimate - half, c.estimate + half))


def test_tost_p_by_hand() -> None:
    # estimate 0.005, se 0.005, df 10, margin 0.02: t = 5 and −3; p = max(sf(5), cdf(−3)).
    expected = max(scipy_stats.t.sf(5.0, 10), scipy_stats.t.cdf(-3.0, 10))
    assert tost_p(0.005, 0.005, 10, 0.02) == pytest.approx(expected)
    assert tost_p(0.05, 0.005, 10, 0.02) > 0.99


# --------------------------------------------------------------------------------------------
# Power
# --------------------------------------------------------------------------------------------


def test_power_matches_the_noncentral_t() -> None:
    se, df, alpha, effect = 0.01, 12, 0.05, 0.03
    crit = scipy_stats.t.ppf(1 - alpha / 2, df)
    nc = effect / se
    expected = scipy_stats.nct.sf(crit, df, nc) + scipy_stats.nct.cdf(-crit, df, nc)
    assert power.power(effect, se, df, alpha) == pytest.approx(expected, rel=1e-6)
    detectable = power.minimum_detectable_effect(se, df, alpha)
    assert power.power(detectable, se, df, alpha) == pytest.approx(0.8, abs=1e-4)


def test_seeds_needed_shrinks_the_standard_error() -> None:
    seeds = power.seeds_needed(0.02, 0.02, 4, 0.05, seeds_now=2, n_arms=4, seed_block=True)
    assert seeds is not None and seeds > 2
    extra = seeds - 2
    se_then = 0.02 * math.sqrt(2 / seeds)
    assert power.power(0.02, se_then, 4 + extra * 4 - extra, 0.05) >= 0.8
    se_before = 0.02 * math.sqrt(2 / (seeds - 1))
    assert power.power(0.02, se_before, 4 + (extra - 1) * 3, 0.05) < 0.8


def test_each_factor_gets_a_power_line() -> None:
    _, results = verdicts_for(factorial(cells(lambda a, o, n: 4.0)))
    for result in results.values():
        assert result.power is not None
        assert "80% power to detect" in result.power.text()
        assert "seeds per arm" in result.power.text()


# --------------------------------------------------------------------------------------------
# Document bootstrap
# --------------------------------------------------------------------------------------------


def test_document_bootstrap_is_paired_by_document() -> None:
    rng = np.random.default_rng(0)
    tokens = rng.integers(10, 100, 200)
    hardness = rng.normal(4.0, 1.0, 200)  # shared by both runs: cancels in the difference
    a = pd.DataFrame({"document": range(200), "tokens": tokens, "loss_sum": tokens * hardness})
    b = a.assign(loss_sum=tokens * (hardness + 0.1 + rng.normal(0, 0.01, 200)))
    interval = bootstrap_pairs([("a", "b")], {"a": a, "b": b}, n_resamples=500)
    assert interval is not None
    assert interval.estimate == pytest.approx(-0.1, abs=0.005)
    assert interval.low < interval.estimate < interval.high
    assert interval.high - interval.low < 0.01  # far narrower than the 1-nat document spread
    assert bootstrap_pairs([("a", "missing")], {"a": a}) is None


def test_matched_pairs_respect_condition_and_seed() -> None:
    runs = factorial(cells(lambda a, o, n: 4.0), seeds=2)
    pairs = matched_pairs(runs, "attention", "gqa", "mla", (("optimizer", "adamw"),), FACTORS)
    assert len(pairs) == 4  # 2 norms × 2 seeds
    for a, b in pairs:
        assert a.startswith("gqa-adamw") and b.startswith("mla-adamw")
        assert a.split("-")[-1] == b.split("-")[-1]


# --------------------------------------------------------------------------------------------
# Public evidence and the judgement rule
# --------------------------------------------------------------------------------------------


def test_judgement_rule_on_the_shipped_table() -> None:
    """More in tests/test_judgement.py (planted tables); here the shipped table's behaviour."""
    evidence = load_evidence()
    one_size = judgement("attention", evidence, [(1e12, 128, "mla", "favoured")], tested=["gqa"])
    assert one_size.text.startswith("most consistent with gqa (posterior 0.79)")
    assert "mla favoured at 1 size(s)" in one_size.text and "needs 3 sizes" in one_size.text
    robust = [(1e12 * 10**i, 128, "mla", "favoured") for i in range(3)]
    bounded = judgement("attention", evidence, robust, tested=["gqa", "mla"])
    # Replicated over 100× compute, mla gains its 2 votes, and no more: gqa's 10 still decide.
    assert "measured evidence adds 2 votes" in bounded.text
    assert bounded.level == "gqa" and bounded.posterior["mla"] == pytest.approx(4 / 16)
    for factor in ("attention", "norm", "pos", "ffn", "optimizer", "window", "sinks"):
        assert "GPT-5 uses" not in judgement(factor, evidence).text


# --------------------------------------------------------------------------------------------
# LR grids and compute multipliers
# --------------------------------------------------------------------------------------------


def test_lr_grid_best_rate_and_next_point() -> None:
    rows = []
    for arm, best in (("interior", 1.0), ("edge", 2.0)):
        for rate in (0.5, 1.0, 2.0):
            rows.append({"arm": arm, "lr_scale": rate, "loss": 3 + abs(math.log2(rate / best))})
    choices = {c.arm: c for c in best_rates(lr_table(pd.DataFrame(rows)))}
    assert choices["interior"].interior and choices["interior"].best == 1.0
    assert choices["edge"].edge == "high" and choices["edge"].next_rate == 4.0
    assert propose_next([0.5, 1, 2], 0.5) == ("low", 0.25)
    assert propose_next([32.0, 64.0], 64.0) == ("high", None)  # at the limit


def test_compute_multiplier_recovers_a_planted_factor() -> None:
    rng = np.random.default_rng(1)
    rows = []
    for flops in (1e12, 1e13, 1e14):
        for _seed in range(3):
            base = 5 - 0.3 * math.log10(flops / 1e12)
            # "worse" at C has the loss "better" reaches at C / 3: it needs 3× the compute.
            worse = 5 - 0.3 * math.log10(flops / 3e12)
            rows.append(
                {"arm": "better", "train_flops": flops, "loss": base + rng.normal(0, 0.003)}
            )
            rows.append(
                {"arm": "worse", "train_flops": flops, "loss": worse + rng.normal(0, 0.003)}
            )
    result = compute_multiplier(pd.DataFrame(rows), "arm", "better", "worse", n_resamples=400)
    assert result is not None
    assert result.multiplier == pytest.approx(3.0, rel=0.05)
    assert result.low < 3.0 < result.high
    assert "needs 3" in result.text()
    single = pd.DataFrame(rows).query("train_flops == 1e12")
    assert compute_multiplier(single, "arm", "better", "worse") is None


def _planted_cell(estimate: float, ci: tuple[float, float], tost_ci: tuple[float, float]) -> str:
    from gpt5_ablate.analysis.design import Estimate
    from gpt5_ablate.analysis.verdict import CellVerdict, Comparison, _outcome

    comparison = Comparison(
        "attention", "mla", "gqa", (), Estimate(estimate, 0.0036, 8, 0.004), 0.2, p_holm=0.04
    )
    comparison.ci, comparison.tost_ci = ci, tost_ci
    return _outcome(CellVerdict((), "mla", {}, [comparison]), margin=0.02)


def test_a_cell_claims_no_more_than_the_interval_shown_beside_it() -> None:
    # Holm p = 0.04 < 0.05, but the simultaneous interval reaches past zero: not favoured.
    assert _planted_cell(-0.013, (-0.027, 0.001), (-0.025, -0.001)) == "inconclusive"
    assert _planted_cell(-0.013, (-0.027, -0.001), (-0.025, -0.003)) == "favoured"
    # Equivalent only when the TOST interval lies inside ±margin.
    assert _planted_cell(-0.003, (-0.022, 0.017), (-0.019, 0.014)) == "equivalent"
    assert _planted_cell(-0.003, (-0.024, 0.019), (-0.021, 0.016)) == "inconclusive"
