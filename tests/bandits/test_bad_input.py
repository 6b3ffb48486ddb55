"""Bad input to the bandit maths fails with a ValueError that says what is wrong."""

from __future__ import annotations

import numpy as np
import pytest

from bandits.features import cross_features, cross_features_many
from bandits.fm import FMScorer, OnlineFM, fm_features
from bandits.linucb import LinUCB
from bandits.policies import POLICIES, make_policy
from bandits.propensity import monte_carlo_propensity
from bandits.state import ArmStats
from bandits.window import SlidingWindow

RNG = np.random.default_rng(0)
STATS = [ArmStats(10, 1, 10, 1), ArmStats(20, 2, 20, 2)]


def features_for(name: str, k: int):
    if name == "linucb":
        return np.zeros((k, 64))
    if name == "fm":
        return np.full(k, 0.1)
    return None


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_empty_candidate_list(name: str) -> None:
    policy = make_policy(name)
    with pytest.raises(ValueError, match="empty"):
        policy.choose([], RNG, X=features_for(name, 0))


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_candidate_masked(name: str) -> None:
    policy = make_policy(name)
    with pytest.raises(ValueError, match="masked"):
        policy.choose(STATS, RNG, X=features_for(name, 2), mask=np.zeros(2, bool))


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_mismatched_bonus_and_mask_shapes(name: str) -> None:
    policy = make_policy(name)
    with pytest.raises(ValueError, match="bonus must have shape"):
        policy.choose(STATS, RNG, X=features_for(name, 2), bonus=np.zeros(3))
    with pytest.raises(ValueError, match="mask must be a boolean"):
        policy.choose(STATS, RNG, X=features_for(name, 2), mask=np.ones(2))
    with pytest.raises(ValueError, match="NaN"):
        policy.choose(STATS, RNG, X=features_for(name, 2), bonus=np.array([0, np.nan]))


@pytest.mark.parametrize("name", ["thompson", "ucb1", "epsilon_greedy"])
def test_negative_counts(name: str) -> None:
    with pytest.raises(ValueError, match="negative counts"):
        make_policy(name).choose([ArmStats(5, 1, -1, 0)], RNG)


def test_contextual_policies_need_features_matching_candidates() -> None:
    with pytest.raises(ValueError, match="needs candidate features"):
        make_policy("linucb").choose(STATS, RNG)
    with pytest.raises(ValueError, match="feature rows"):
        make_policy("linucb").choose(STATS, RNG, X=np.zeros((3, 64)))
    with pytest.raises(ValueError, match="shape"):
        make_policy("linucb").choose(STATS, RNG, X=np.zeros((2, 10)))
    with pytest.raises(ValueError, match="NaN"):
        make_policy("linucb").choose(STATS, RNG, X=np.full((2, 64), np.nan))
    with pytest.raises(ValueError, match="NaN"):
        make_policy("fm").choose(STATS, RNG, X=np.array([0.1, np.nan]))


def test_unknown_policy_and_bad_parameters() -> None:
    with pytest.raises(ValueError, match="unknown policy 'greedy'"):
        make_policy("greedy")
    with pytest.raises(ValueError, match="epsilon"):
        make_policy("epsilon_greedy", {"epsilon": 1.5})
    with pytest.raises(ValueError, match="prior"):
        make_policy("thompson", {"prior_alpha": 0.0})


def test_nan_and_non_numeric_features() -> None:
    with pytest.raises(ValueError, match="'age' is not finite"):
        cross_features({"age": float("nan")}, {"dark": 1.0})
    with pytest.raises(ValueError, match="must be a number"):
        cross_features_many({"age": 0.1}, [{"dark": "yes"}])
    with pytest.raises(ValueError, match="dimension"):
        cross_features({}, {}, dim=0)
    with pytest.raises(ValueError, match="not finite"):
        fm_features({"age": float("inf")}, {})
    with pytest.raises(ValueError, match="not finite"):
        OnlineFM().learn_one({"u:age": float("nan")}, True)
    with pytest.raises(ValueError, match="not an FM export"):
        FMScorer.from_export({"weights": {}})


GOOD_SHARD = {
    "intercept": 0.0,
    "weights": {"poster=a": 1.0},
    "latents": {"poster=a": [0.1, 0.2]},
    "n_factors": 2,
    "examples": 3,
}


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"weights": {"poster=a": float("nan")}}, "NaN or infinite"),
        ({"intercept": float("inf")}, "NaN or infinite"),
        ({"latents": {"poster=a": [float("nan"), 0.0]}}, "NaN or infinite"),
        ({"latents": {"poster=a": 0.1}}, "shape"),
        ({"latents": {"poster=a": [[0.1, 0.2]]}}, "shape"),
        ({"latents": ["poster=a"]}, "objects by name"),
        ({"weights": [1, 2]}, "objects by name"),
        ({"weights": None}, "objects by name"),
        ({"weights": {"poster=a": "x"}}, "could not convert"),
        ({"n_factors": 10**12}, "n_factors must be in"),
        ({"n_factors": 0}, "n_factors must be in"),
        ({"n_factors": 2.7}, "n_factors must be an integer"),
        ({"version": None}, "not an FM export"),
        ({"examples": None}, "example counts"),
        ({"examples": -1}, "example counts"),
    ],
)
def test_a_malformed_fm_export_is_a_value_error(change, match) -> None:
    # The gateway keeps its last good model on ValueError; anything else, or a
    # model that scores NaN, would reach the select path.
    from bandits.fm import scorer_from_export

    with pytest.raises(ValueError, match=match):
        scorer_from_export({"shards": [{**GOOD_SHARD, **change}], "version": 3})
    with pytest.raises(ValueError):
        scorer_from_export("x")  # type: ignore[arg-type]
    scorer = scorer_from_export({"shards": [GOOD_SHARD], "version": 3})
    assert np.isfinite(scorer.predict_proba([{"poster=a": 1.0}])).all()


def test_linucb_shapes_and_values() -> None:
    model = LinUCB(dim=3)
    with pytest.raises(ValueError, match="shape"):
        model.update(np.zeros(4), 1.0)
    with pytest.raises(ValueError, match="reward must be finite"):
        model.update(np.zeros(3), float("nan"))
    with pytest.raises(ValueError, match="2 feature rows but 3 rewards"):
        model.update_many(np.zeros((2, 3)), np.zeros(3))
    with pytest.raises(ValueError, match="lacks fields"):
        LinUCB.from_mapping({"dim": b"3"})
    mapping = model.to_mapping()
    mapping["b"] = mapping["b"][:-8]
    with pytest.raises(ValueError, match="'b' has 16 bytes"):
        LinUCB.from_mapping(mapping)


def test_window_bad_input() -> None:
    with pytest.raises(ValueError, match="kind"):
        SlidingWindow("clicks", 10.0, 2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="length"):
        SlidingWindow("time", -1.0, 2)
    with pytest.raises(ValueError, match="buckets"):
        SlidingWindow("time", 10.0, 0)
    window = SlidingWindow("time", 10.0, 2)
    with pytest.raises(ValueError, match="counts must be >= 0"):
        window.add("a", 0.0, -1, 0)
    with pytest.raises(ValueError, match="finite"):
        window.add("a", float("nan"), 1, 0)
    with pytest.raises(ValueError, match="triples"):
        window.restore("a", [1, 2])
    with pytest.raises(ValueError, match="negative"):
        window.restore("a", [1, -2, 0])


def test_propensity_bad_input() -> None:
    with pytest.raises(ValueError, match=r"\(10, k\) matrix"):
        monte_carlo_propensity(lambda rng, n: rng.random(n), 0, RNG, n=10)
    with pytest.raises(ValueError, match="outside"):
        monte_carlo_propensity(lambda rng, n: rng.random((n, 2)), 5, RNG, n=10)
