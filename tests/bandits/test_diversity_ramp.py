"""Row diversity (MMR) and the ramp-up mixture's propensity."""

from __future__ import annotations

import numpy as np
import pytest

from bandits.diversity import mmr_order, similarity_matrix
from bandits.policies import make_policy
from bandits.ramp import ramp_up_bonus
from bandits.state import ArmStats


def test_similar_posters_are_separated_by_embeddings() -> None:
    rng = np.random.default_rng(0)
    # Posters 0-2 are near copies of one composition, 3-5 are unrelated.
    copy = rng.normal(size=16)
    embeddings = np.vstack(
        [copy + 0.01 * rng.normal(size=(3, 16)), rng.normal(size=(3, 16))]
    )
    scores = np.array([0.9, 0.89, 0.88, 0.5, 0.4, 0.3])
    order = mmr_order(scores, embeddings, None, lam=0.5)
    # By score the three copies would fill the first places; MMR keeps the
    # best of them first and follows it with different compositions.
    assert order[0] == 0
    assert len({0, 1, 2} & set(order[:3])) == 1
    assert sorted(order) == list(range(6))


def test_lambda_one_keeps_score_order_and_k_limits() -> None:
    tags = [{"x"}] * 4
    scores = np.array([0.1, 0.4, 0.3, 0.2])
    assert mmr_order(scores, None, tags, lam=1.0) == [1, 2, 3, 0]
    assert mmr_order(scores, None, tags, lam=1.0, k=2) == [1, 2]


def test_similarity_combines_by_maximum() -> None:
    sim = similarity_matrix(np.array([[1.0, 0.0], [0.0, 1.0]]), [{"a"}, {"a"}])
    assert sim[0, 1] == 1.0 and np.allclose(np.diag(sim), 1.0)
    with pytest.raises(ValueError, match="2 embeddings but 3 tag sets"):
        similarity_matrix(np.eye(2), [{"a"}, {"b"}, {"c"}])
    with pytest.raises(ValueError, match="NaN"):
        mmr_order(np.array([np.nan, 1.0]), None, None)


def test_ramp_up_mixture_propensity_matches_simulation() -> None:
    stats = [ArmStats(5000, 250, 5000, 250), ArmStats(5000, 200, 5000, 200)]
    stats += [ArmStats(20, 1, 20, 1), ArmStats()]
    policy = make_policy("epsilon_greedy", {"epsilon": 0.1})
    rng = np.random.default_rng(0)
    plan = ramp_up_bonus(stats, min_impressions=1000, share=0.2)
    assert plan.ramping.tolist() == [False, False, True, True]
    policy_p = policy.propensities(stats, rng)
    expected = np.array([plan.propensity(i, policy_p[i]) for i in range(4)])
    assert expected.sum() == pytest.approx(1.0)

    counts = np.zeros(4)
    for _ in range(4000):
        if plan.explores(rng):
            counts[plan.pick(rng)] += 1
        else:
            counts[policy.choose(stats, rng).index] += 1
    assert np.max(np.abs(counts / 4000 - expected)) < 0.03


def test_ramp_up_respects_mask_and_turns_off_without_new_posters() -> None:
    stats = [ArmStats(5000, 250), ArmStats(3, 0)]
    plan = ramp_up_bonus(stats, 1000, 0.3, mask=np.array([True, False]))
    assert plan.share == 0.0 and not plan.ramping.any()
    assert plan.propensity(0, 0.7) == 0.7
    with pytest.raises(ValueError, match="share"):
        ramp_up_bonus(stats, 1000, 1.5)
