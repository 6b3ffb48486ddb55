"""A/B statistics: z-test, Bayesian probability, mSPRT, SRM, guardrails, report."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, stats

from bandits.evaluation.ab import (
    compare,
    guardrail_checks,
    msprt_pvalues,
    pairs,
    prob_b_better,
    srm_check,
    two_proportion_z,
)
from bandits.evaluation.reports import ab_report


def test_two_proportion_z_by_hand() -> None:
    # pooled = 230/4000 = 0.0575; se = sqrt(0.0575 * 0.9425 * 2/2000) = 0.0073616
    # z = 0.015 / 0.0073616 = 2.03760; p = 2 * (1 - Phi(2.0376)) = 0.04159
    z, p = two_proportion_z(100, 2000, 130, 2000)
    assert z == pytest.approx(2.03760, abs=1e-4)
    assert p == pytest.approx(0.04159, abs=1e-4)


def test_prob_b_better_matches_numerical_integration() -> None:
    a, b = stats.beta(1 + 12, 1 + 188), stats.beta(1 + 20, 1 + 180)
    exact, _ = integrate.quad(lambda x: a.pdf(x) * b.sf(x), 0, 1)
    found = prob_b_better(12, 200, 20, 200, seed=4)
    assert found == pytest.approx(exact, abs=0.005)
    assert prob_b_better(12, 200, 20, 200, seed=4) == found  # seeded


def _simulate_looks(
    p_a: float, p_b: float, per_look: int, looks: int, runs: int, seed: int
) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    ka = np.cumsum(rng.binomial(per_look, p_a, (looks, runs)), axis=0)
    kb = np.cumsum(rng.binomial(per_look, p_b, (looks, runs)), axis=0)
    n = np.cumsum(np.full((looks, runs), per_look), axis=0)
    return ka, n, kb, n


def test_msprt_keeps_false_positives_under_alpha_when_peeking() -> None:
    ka, na, kb, nb = _simulate_looks(0.05, 0.05, 200, 30, 2000, seed=11)
    always_valid = msprt_pvalues(ka, na, kb, nb)
    assert (np.diff(always_valid, axis=0) <= 0).all()  # running minimum
    msprt_rate = float((always_valid[-1] < 0.05).mean())
    pooled = (ka + kb) / (na + nb)
    z = (kb / nb - ka / na) / np.sqrt(pooled * (1 - pooled) * (2 / na))
    naive_rate = float(((2 * stats.norm.sf(np.abs(z))) < 0.05).any(axis=0).mean())
    assert msprt_rate <= 0.06
    assert naive_rate > 0.15  # stopping at the first small z-test p is wrong


def test_msprt_detects_a_real_difference() -> None:
    ka, na, kb, nb = _simulate_looks(0.05, 0.07, 1000, 30, 300, seed=12)
    assert float((msprt_pvalues(ka, na, kb, nb)[-1] < 0.05).mean()) > 0.9


def test_srm_detects_55_45_split() -> None:
    assert srm_check({"A": 5500, "B": 4500}, {"A": 0.5, "B": 0.5}).mismatch
    # chi2 = 2 * 20^2 / 5000 = 0.16, p = 0.689
    fine = srm_check({"A": 5020, "B": 4980})
    assert not fine.mismatch
    assert fine.chi2 == pytest.approx(0.16)
    assert fine.p_value == pytest.approx(0.6892, abs=1e-4)
    # A 10/90 configured split seen as 10/90 is fine, seen as 50/50 is not.
    assert not srm_check({"c": 1000, "t": 9000}, {"c": 0.1, "t": 0.9}).mismatch
    assert srm_check({"c": 5000, "t": 5000}, {"c": 0.1, "t": 0.9}).mismatch
    with pytest.raises(ValueError, match="no configured share"):
        srm_check({"c": 1, "t": 2}, {"c": 0.5})


def test_guardrails_and_pairs() -> None:
    checks = guardrail_checks(
        {"A": {"fallback_rate": 0.01, "latency_p99_ms": 80.0}},
        {"fallback_rate": 0.05, "latency_p99_ms": 50.0},
    )
    assert [(g.name, g.ok) for g in checks] == [
        ("fallback_rate", True),
        ("latency_p99_ms", False),
    ]
    assert pairs(["b", "a", "c"]) == [("a", "b"), ("a", "c"), ("b", "c")]
    assert pairs(["b", "a"], control="b") == [("b", "a")]
    with pytest.raises(ValueError, match="control"):
        pairs(["a"], control="z")


def test_compare_flat_fields() -> None:
    row = compare("A", "B", 100, 2000, 130, 2000).as_dict()
    assert row["difference"] == pytest.approx(0.015)
    assert row["difference_low"] < 0.015 < row["difference_high"]
    assert row["lift"] == pytest.approx(0.3)
    assert 0.9 < row["prob_b_better"] < 1.0


def _experiment(seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    rows = []
    for variant, users, rate in (("A", 1100, 0.05), ("B", 900, 0.08)):
        for u in range(users):
            for _ in range(2):
                rows.append((variant, f"{variant}{u}", int(rng.random() < rate)))
    frame = pd.DataFrame(rows, columns=["variant", "user_id", "clicked"])
    frame["event_time"] = rng.permutation(len(frame))
    decisions = pd.DataFrame(
        {"variant": ["A"] * 100 + ["B"] * 100, "fallback": [False] * 190 + [True] * 10}
    )
    return frame, decisions


def test_ab_report_on_a_known_experiment() -> None:
    impressions, decisions = _experiment(3)
    report = ab_report(
        impressions,
        decisions,
        control="A",
        expected_share={"A": 0.5, "B": 0.5},
        latency_p99_ms={"A": 10.0, "B": 70.0},
    )
    row = report.comparisons.iloc[0]
    assert (row["a"], row["b"], row["trials_a"], row["trials_b"]) == (
        "A",
        "B",
        2200,
        1800,
    )
    assert row["clicks_a"] == impressions.query("variant == 'A'")["clicked"].sum()
    assert row["p_value"] < 0.05 and row["prob_b_better"] > 0.95
    assert row["always_valid_p"] >= row["p_value"]
    assert report.srm is not None and report.srm.mismatch  # 1100 / 900 users
    breached = {(g.variant, g.name) for g in report.guardrails if not g.ok}
    assert breached == {("B", "fallback_rate"), ("B", "latency_p99_ms")}
    assert any("SRM" in w for w in report.warnings)
    assert any("inflates false positives" in n for n in report.notes)
    # Traffic outside the configured split (a replay) stays out of the A/B.
    replayed = impressions.head(50).assign(variant="replay")
    mixed = ab_report(
        pd.concat([impressions, replayed]), expected_share={"A": 0.55, "B": 0.45}
    )
    assert mixed.comparisons[["a", "b"]].values.tolist() == [["A", "B"]]
    assert mixed.srm is not None and not mixed.srm.mismatch
    assert any("['replay']" in n for n in mixed.notes)
    users = ab_report(impressions, metric="uctr").comparisons.iloc[0]
    assert (users["trials_a"], users["trials_b"]) == (1100, 900)
    assert math.isfinite(users["always_valid_p"])
