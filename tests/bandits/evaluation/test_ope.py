"""Off-policy estimators on a log small enough to compute by hand.

The log: two actions, four decisions.

    row  action  reward  propensity   uniform target pi = 0.5
    0    0       1       0.8          w = 0.625
    1    1       0       0.2          w = 2.5
    2    0       0       0.8          w = 0.625
    3    1       1       0.2          w = 2.5
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from bandits.evaluation.feedback import LoggedBandit, impressions_to_bandit
from bandits.evaluation.ope import (
    direct_method,
    doubly_robust,
    effective_sample_size,
    evaluate,
    few_clicks_warning,
    ips,
    observed_value,
    replay,
    snips,
)
from bandits.evaluation.reward_models import ActionMeanModel, LogisticModel, cross_fit
from bandits.evaluation.targets import (
    EpsilonGreedyPolicy,
    FunctionPolicy,
    GreedyPolicy,
    LoggingPolicy,
    UniformPolicy,
    check_probabilities,
)

Z = 1.959964


@pytest.fixture
def log() -> LoggedBandit:
    return LoggedBandit.from_arrays(
        np.array([0, 1, 0, 1]),
        np.array([1.0, 0.0, 0.0, 1.0]),
        np.array([0.8, 0.2, 0.8, 0.2]),
        2,
    )


def test_ips_by_hand(log: LoggedBandit) -> None:
    # w r = (0.625, 0, 0, 2.5): mean 0.78125; sample sd 1.183106; se 0.591553
    found = ips(log, UniformPolicy().probabilities(log))
    assert found.interval.estimate == pytest.approx(0.78125)
    assert found.interval.high - 0.78125 == pytest.approx(Z * 0.591553, abs=1e-5)
    # ESS = 6.25^2 / (2 * 0.390625 + 2 * 6.25) = 2.941176
    assert found.ess == pytest.approx(2.941176, abs=1e-6)
    assert found.mean_weight == pytest.approx(1.5625)


def test_ips_clipping_by_hand(log: LoggedBandit) -> None:
    # w clipped at 2: (0.625, 2, 0.625, 2); w r = (0.625, 0, 0, 2): mean 0.65625
    found = ips(log, UniformPolicy().probabilities(log), clip=2.0)
    assert found.interval.estimate == pytest.approx(0.65625)
    assert found.clipped_share == 0.5 and found.clip == 2.0


def test_snips_by_hand(log: LoggedBandit) -> None:
    # sum w r / sum w = 3.125 / 6.25 = 0.5; influence w (r - 0.5) / 1.5625
    # = (0.2, -0.8, -0.2, 0.8): sd 0.673300, se 0.336650
    found = snips(log, UniformPolicy().probabilities(log))
    assert found.interval.estimate == pytest.approx(0.5)
    assert found.interval.low == pytest.approx(0.5 - Z * 0.336650, abs=1e-5)
    assert found.interval.method == "delta"


def test_direct_method_and_doubly_robust_by_hand(log: LoggedBandit) -> None:
    # q(0) = 0.4, q(1) = 0.6; sum_a pi q = 0.5 on every row.
    # DR: 0.5 + 0.625 * 0.6 = 0.875; 0.5 - 2.5 * 0.6 = -1.0;
    #     0.5 - 0.625 * 0.4 = 0.25;  0.5 + 2.5 * 0.4 = 1.5;  mean 0.40625
    probs = UniformPolicy().probabilities(log)
    q = np.array([0.4, 0.6] * 4)
    assert direct_method(log, probs, q).interval.estimate == pytest.approx(0.5)
    dr = doubly_robust(log, probs, q)
    assert dr.interval.estimate == pytest.approx(0.40625)
    sd = float(np.std([0.875, -1.0, 0.25, 1.5], ddof=1))
    assert dr.interval.high == pytest.approx(0.40625 + Z * sd / 2)


def test_replay_deterministic_by_hand(log: LoggedBandit) -> None:
    # Always action 1: rows 1 and 3 match, rewards 0 and 1: 0.5, Wilson(1, 2).
    always_one = FunctionPolicy(lambda ctx, cands: [0.0, 1.0], deterministic=True)
    found = replay(log, always_one.probabilities(log), deterministic=True)
    assert (found.n, found.interval.estimate) == (2, 0.5)
    assert found.interval.method == "wilson"


def test_replay_stochastic_match_rate() -> None:
    rng = np.random.default_rng(0)
    n, k = 20_000, 4
    big = LoggedBandit.from_arrays(
        rng.integers(0, k, n), rng.integers(0, 2, n).astype(float), np.full(n, 0.25), k
    )
    first = replay(big, UniformPolicy().probabilities(big), False, seed=1)
    again = replay(big, UniformPolicy().probabilities(big), False, seed=1)
    assert first.n == again.n
    assert first.n == pytest.approx(n / k, rel=0.05)


def test_logging_policy_has_unit_weights(log: LoggedBandit) -> None:
    probs = LoggingPolicy().probabilities(log)
    check_probabilities(log, probs, "logging")
    found = ips(log, probs)
    assert found.mean_weight == pytest.approx(1.0)
    assert found.interval.estimate == pytest.approx(observed_value(log).estimate)


def test_greedy_breaks_ties_by_name_and_epsilon_mixes() -> None:
    log = LoggedBandit.from_arrays(
        np.array([0, 1, 2, 2]), np.array([1.0, 1.0, 0.0, 0.0]), np.full(4, 1 / 3), 3
    )
    greedy = GreedyPolicy.fit(log)  # actions 0 and 1 tie at 2/3
    assert greedy.probabilities(log).reshape(4, 3)[0].tolist() == [1.0, 0.0, 0.0]
    mixed = EpsilonGreedyPolicy(greedy, 0.3).probabilities(log).reshape(4, 3)[0]
    assert mixed.tolist() == pytest.approx([0.8, 0.1, 0.1])
    with pytest.raises(ValueError, match="epsilon"):
        EpsilonGreedyPolicy(greedy, 1.5)


def test_bad_target_and_bad_log_are_named(log: LoggedBandit) -> None:
    bad = FunctionPolicy(lambda ctx, cands: [0.7, 0.7], name="broken")
    with pytest.raises(ValueError, match="broken.*sum to 1.4"):
        evaluate(log, [bad], ["ips"])
    with pytest.raises(ValueError, match="returned"):
        FunctionPolicy(lambda ctx, cands: [1.0]).probabilities(log)
    with pytest.raises(ValueError, match="propensity outside"):
        LoggedBandit.from_arrays(np.array([0]), np.array([1.0]), np.array([0.0]), 2)
    with pytest.raises(ValueError, match="unknown estimators"):
        evaluate(log, [UniformPolicy()], ["magic"])


def test_zero_clicks_give_a_bounded_interval(log: LoggedBandit) -> None:
    always_one_row2 = FunctionPolicy(lambda ctx, cands: [1.0, 0.0], deterministic=True)
    quiet = log.subset(np.array([False, True, True, False]))  # no clicks at all
    found = ips(quiet, always_one_row2.probabilities(quiet))
    assert found.interval.method == "wilson-zero"
    # Only row 2 (action 0, propensity 0.8) has weight, 1.25: ESS 1 and no
    # click, so the upper end is Wilson's for 0 of 1: 3.8415 / 4.8415.
    assert found.interval.low == 0.0
    assert found.interval.high == pytest.approx(0.793451, abs=1e-5)
    q = np.full(quiet.pair_row.size, 0.3)
    dr = doubly_robust(quiet, always_one_row2.probabilities(quiet), q)
    assert dr.interval.method == "wilson-zero"
    assert dr.interval.high == pytest.approx(0.793451, abs=1e-5)
    assert few_clicks_warning("first", dr.ess, 0.1) is not None
    assert few_clicks_warning("first", 1000.0, 0.1) is None


def test_action_mean_model_by_hand(log: LoggedBandit) -> None:
    # overall mean 0.5; action 0: (1 + 2 * 0.5) / (2 + 2) = 0.5 with strength 2;
    # without shrinkage: action 0 has 1 of 2, action 1 has 1 of 2.
    model = ActionMeanModel(prior_strength=2).fit(log)
    assert model.predict(log)[:2].tolist() == [0.5, 0.5]
    skewed = LoggedBandit.from_arrays(
        np.array([0, 0, 0, 1]), np.array([1.0, 1.0, 1.0, 0.0]), np.full(4, 0.5), 2
    )
    # overall 0.75; action 0: (3 + 1 * 0.75) / 4 = 0.9375; action 1: 0.75 / 2
    found = ActionMeanModel(prior_strength=1).fit(skewed).predict(skewed)[:2]
    assert found.tolist() == pytest.approx([0.9375, 0.375])


def test_cross_fit_predictions_never_see_their_own_row() -> None:
    # Each action appears once per fold; a row's prediction comes from the other.
    rng = np.random.default_rng(0)
    n = 400
    actions = np.arange(n) % 4
    rewards = (rng.random(n) < 0.3).astype(float)
    log = LoggedBandit.from_arrays(actions, rewards, np.full(n, 0.25), 4)
    in_sample = cross_fit(log, folds=1)
    out_of_fold = cross_fit(log, folds=2, seed=3)
    assert not np.allclose(in_sample, out_of_fold)
    assert np.all((out_of_fold >= 0) & (out_of_fold <= 1))


def test_counted_cross_fit_equals_fitting_each_fold() -> None:
    rng = np.random.default_rng(0)
    n = 5000
    actions = rng.integers(0, 5, n)
    rewards = (rng.random(n) < 0.1 + 0.05 * actions).astype(float)
    log = LoggedBandit.from_arrays(actions, rewards, np.full(n, 0.2), 5)
    fast = cross_fit(log, "action_mean", folds=3, seed=2)
    fold = np.random.default_rng(2).permutation(np.arange(n) % 3)
    slow = np.empty(log.pair_row.size)
    for k in range(3):
        held = fold == k
        model = ActionMeanModel().fit(log.subset(~held))
        slow[held[log.pair_row]] = model.predict(log.subset(held))
    assert np.allclose(fast, slow)


def test_logistic_model_ranks_the_better_action() -> None:
    rng = np.random.default_rng(1)
    n = 3000
    actions = rng.integers(0, 2, n)
    contexts = pd.DataFrame(
        {"age": rng.normal(size=n), "segment": rng.choice(["x", "y"], n)}
    )
    rate = np.where(actions == 1, 0.3, 0.1)
    rewards = (rng.random(n) < rate).astype(float)
    log = LoggedBandit.from_arrays(actions, rewards, np.full(n, 0.5), 2, contexts)
    q = LogisticModel().fit(log).predict(log).reshape(n, 2)
    assert q[:, 1].mean() == pytest.approx(0.3, abs=0.04)
    assert q[:, 0].mean() == pytest.approx(0.1, abs=0.03)
    table = evaluate(log, [UniformPolicy()], ["dr"], reward_model="logistic")
    assert table.loc[0, "low"] <= 0.2 <= table.loc[0, "high"]


def test_impressions_to_bandit_uses_decision_candidates() -> None:
    impressions = pd.DataFrame(
        {
            "poster_id": ["p1", "p2", "p3"],
            "video_id": ["v1", "v1", "v2"],
            "clicked": [1, 0, 0],
            "propensity": [0.5, 0.25, 1.0],
            "decision_id": ["d1", "d2", "d3"],
            "placement": ["home"] * 3,
            "context": [{"age": 0.2}, {}, {"age": 0.9}],
        }
    )
    decisions = pd.DataFrame(
        {
            "event_id": ["d1", "d2"],
            "candidates": [["p1", "p9"], ["p1", "p2", "p8", "p9"]],
        }
    )
    log = impressions_to_bandit(impressions, decisions)
    assert log.candidate_counts().tolist() == [2, 4, 1]  # d3 falls back to v2's posters
    assert log.action_names[log.actions].tolist() == ["p1", "p2", "p3"]
    assert log.contexts["ctx.age"].tolist() == [0.2, 0.0, 0.9]
    probs = UniformPolicy().probabilities(log)
    assert ips(log, probs).interval.estimate == pytest.approx((0.5 / 0.5) / 3)
    assert math.isclose(effective_sample_size(np.array([2.0, 2.0])), 2.0)


def test_deterministic_logger_is_flagged() -> None:
    # The logger always showed action 0 (propensity 1) of two candidates: the
    # uniform target's weights are 0.5 everywhere, mean 0.5, standard error 0.
    n = 200
    log = LoggedBandit.from_arrays(np.zeros(n, int), np.ones(n), np.ones(n), 2)
    uniform = ips(log, UniformPolicy().probabilities(log))
    assert uniform.mean_weight == pytest.approx(0.5)
    assert "mean importance weight 0.500" in (uniform.support_warning() or "")
    assert ips(log, LoggingPolicy().probabilities(log)).support_warning() is None
    clipped = ips(log, UniformPolicy().probabilities(log), clip=0.4)
    assert clipped.support_warning() is None  # clipping lowers weights by design
