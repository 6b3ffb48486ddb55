"""The retirement rule retires clearly worse posters and spares equal ones."""

from __future__ import annotations

import numpy as np
import pytest

from bandits.retirement import RetirementRule, anytime_interval
from bandits.state import ArmStats


def test_clearly_worse_arm_with_enough_data_is_retired() -> None:
    rng = np.random.default_rng(0)
    n = 20_000
    stats = {
        "best": ArmStats(n, int(rng.binomial(n, 0.08))),
        "close": ArmStats(n, int(rng.binomial(n, 0.079))),
        "worse": ArmStats(n, int(rng.binomial(n, 0.04))),
        "young": ArmStats(500, 2),
    }
    decision = RetirementRule().decide(stats)
    assert decision == {
        "best": "active",
        "close": "active",
        "worse": "retired",
        "young": "active",
    }


def test_somewhat_worse_arm_is_demoted_before_it_can_be_retired() -> None:
    stats = {"best": ArmStats(3000, 180), "worse": ArmStats(3000, 135)}
    rule = RetirementRule()
    assert rule.p_worse(stats)["worse"] > 0.99
    assert rule.decide(stats)["worse"] == "demoted"  # the anytime bound is not met


@pytest.mark.slow
def test_equal_arms_are_not_retired_over_many_seeds_and_looks() -> None:
    # 3 equal arms, looked at every 1,000 impressions up to 20,000. The rule
    # guarantees a false retirement probability of at most K * delta = 0.03
    # over all looks together.
    n_seeds, k, delta = 100, 3, 0.01
    rule = RetirementRule(min_impressions=1000, delta=delta)
    falsely_retired = 0
    for seed in range(n_seeds):
        rng = np.random.default_rng(seed)
        clicks = rng.binomial(1000, 0.05, size=(20, k)).cumsum(axis=0)
        for look in range(20):
            n = 1000 * (look + 1)
            stats = {f"a{i}": ArmStats(n, int(clicks[look, i])) for i in range(k)}
            if "retired" in rule.decide(stats).values():
                falsely_retired += 1
                break
    assert falsely_retired / n_seeds <= k * delta


def test_anytime_interval_covers_the_truth_at_every_look() -> None:
    rng = np.random.default_rng(1)
    misses = 0
    for _ in range(100):
        clicks = rng.binomial(1, 0.05, size=5000).cumsum()
        n = np.arange(1, 5001)
        lo, hi = anytime_interval(n, clicks, delta=0.05)
        misses += bool(np.any((lo > 0.05) | (hi < 0.05)))
    assert misses / 100 <= 0.05


def test_decisions_are_reproducible_and_bad_thresholds_rejected() -> None:
    stats = {"a": ArmStats(5000, 300), "b": ArmStats(5000, 250)}
    assert RetirementRule(seed=3).p_worse(stats) == RetirementRule(seed=3).p_worse(
        stats
    )
    with pytest.raises(ValueError, match="demote_at"):
        RetirementRule(demote_at=0.99, retire_at=0.95)
    with pytest.raises(ValueError, match="negative"):
        RetirementRule().decide({"a": ArmStats(-1, 0)})
