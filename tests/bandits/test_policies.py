"""One set of behavioural checks, run over every policy and its test parameters.

Each policy declares the constructor arguments it is tested with
(``Policy._test_params``); the checks below run over all of them. Contextual
policies get a model trained on the same simulated counts the counting
policies see.
"""

from __future__ import annotations

import numpy as np
import pytest

from bandits.features import cross_features_many
from bandits.fm import FMScorer, OnlineFM, fm_features
from bandits.linucb import LinUCB
from bandits.policies import (
    POLICIES,
    FMPolicy,
    LinUCBPolicy,
    Policy,
    UniformRandom,
    make_policy,
)
from bandits.state import ArmStats

CASES = [
    pytest.param(name, params, id=f"{name}-{i}")
    for name, cls in POLICIES.items()
    for i, params in enumerate(cls._test_params())
]


class World:
    """Candidates with known click rates and the counts a learner would hold."""

    def __init__(self, ctrs, impressions, seed: int = 0) -> None:
        self.ctrs = np.asarray(ctrs, dtype=float)
        self.impressions = np.asarray(impressions, dtype=int)
        rng = np.random.default_rng(seed)
        self.clicks = rng.binomial(self.impressions, self.ctrs)
        self.stats = [
            ArmStats(int(n), int(c), int(n), int(c))
            for n, c in zip(self.impressions, self.clicks, strict=True)
        ]
        self.posters = [{f"id{i}": 1.0} for i in range(len(self.ctrs))]
        self.user = {"age": 0.5}
        self.X_linear = cross_features_many(self.user, self.posters, dim=32)
        self.X_fm = [
            fm_features(self.user, {}, poster_id=f"p{i}") for i in range(len(ctrs))
        ]

    def rewards(self, i: int) -> np.ndarray:
        n, c = self.impressions[i], self.clicks[i]
        return np.r_[np.ones(c), np.zeros(n - c)]

    def prepare(self, policy: Policy) -> None:
        """Train a contextual policy's model on the world's counts."""
        if isinstance(policy, LinUCBPolicy):
            model = LinUCB(dim=32, alpha=policy.model.alpha)
            for i in range(len(self.ctrs)):
                r = self.rewards(i)
                model.update_many(np.tile(self.X_linear[i], (r.size, 1)), r)
            policy.model = model
        elif isinstance(policy, FMPolicy):
            fm = OnlineFM(n_factors=2, seed=0, learning_rate=0.05)
            rng = np.random.default_rng(1)
            pairs = [(i, y) for i in range(len(self.ctrs)) for y in self.rewards(i)]
            order = rng.permutation(len(pairs))
            fm.learn_many(
                [self.X_fm[pairs[j][0]] for j in order],
                [bool(pairs[j][1]) for j in order],
            )
            policy.scorer = FMScorer.from_export(fm.export())

    def X(self, policy: Policy):
        if isinstance(policy, LinUCBPolicy):
            return self.X_linear
        if isinstance(policy, FMPolicy):
            return self.X_fm
        return None


def build(name: str, params: dict, world: World) -> Policy:
    policy = make_policy(name, params)
    world.prepare(policy)
    return policy


def frequencies(policy, world, rng, draws, **kw) -> np.ndarray:
    counts = np.zeros(len(world.ctrs))
    for _ in range(draws):
        counts[policy.choose(world.stats, rng, X=world.X(policy), **kw).index] += 1
    return counts / draws


@pytest.mark.parametrize(("name", "params"), CASES)
def test_propensities_sum_to_one_and_match_choices(name: str, params: dict) -> None:
    world = World([0.04, 0.05, 0.06, 0.05], [300, 300, 300, 300])
    policy = build(name, params, world)
    rng = np.random.default_rng(0)
    mask = np.array([True, True, True, False])
    bonus = np.array([0.0, 0.01, 0.0, 0.0])
    p = policy.propensities(world.stats, rng, X=world.X(policy), bonus=bonus, mask=mask)
    assert p.shape == (4,) and p[3] == 0.0
    assert abs(p.sum() - 1.0) < 1e-9
    freq = frequencies(policy, world, rng, 1500, bonus=bonus, mask=mask)
    assert np.max(np.abs(freq - p)) < 0.06
    choice = policy.choose(world.stats, rng, X=world.X(policy), bonus=bonus, mask=mask)
    assert abs(choice.propensity - p[choice.index]) < 0.06
    assert choice.scores.shape == (4,)


@pytest.mark.parametrize(("name", "params"), CASES)
def test_better_arm_chosen_more_often_after_data(name: str, params: dict) -> None:
    world = World([0.02, 0.02, 0.12, 0.02, 0.02], [3000] * 5)
    policy = build(name, params, world)
    freq = frequencies(policy, world, np.random.default_rng(3), 300)
    if isinstance(policy, UniformRandom):
        assert np.all(np.abs(freq - 0.2) < 0.1)
    else:
        assert freq[2] > 0.5 and freq[2] == freq.max()


@pytest.mark.parametrize(("name", "params"), CASES)
def test_unexplored_arm_gets_explored(name: str, params: dict) -> None:
    world = World([0.05, 0.05, 0.05, 0.05, 0.05], [3000, 3000, 3000, 3000, 0])
    policy = build(name, params, world)
    rng = np.random.default_rng(4)
    p = policy.propensities(world.stats, rng, X=world.X(policy))
    assert p[4] >= 0.1
    assert frequencies(policy, world, rng, 200)[4] > 0


@pytest.mark.parametrize(("name", "params"), CASES)
def test_mask_is_respected(name: str, params: dict) -> None:
    world = World([0.02, 0.02, 0.12, 0.02], [2000] * 4)
    policy = build(name, params, world)
    mask = np.array([True, False, False, True])
    freq = frequencies(policy, world, np.random.default_rng(5), 200, mask=mask)
    assert freq[1] == freq[2] == 0 and freq.sum() == pytest.approx(1.0)


@pytest.mark.parametrize(("name", "params"), CASES)
def test_bonus_moves_choices_except_for_the_control(name: str, params: dict) -> None:
    world = World([0.02, 0.02, 0.12, 0.02], [2000] * 4)
    policy = build(name, params, world)
    bonus = np.array([1.0, 0.0, 0.0, 0.0])
    freq = frequencies(policy, world, np.random.default_rng(6), 200, bonus=bonus)
    if isinstance(policy, UniformRandom):
        assert freq[0] < 0.5
    else:
        assert freq[0] > 0.5


@pytest.mark.parametrize(("name", "params"), CASES)
def test_same_seed_same_choices(name: str, params: dict) -> None:
    world = World([0.05, 0.06, 0.04], [100, 50, 0])
    policy = build(name, params, world)
    runs = []
    for _ in range(2):
        rng = np.random.default_rng(42)
        runs.append(
            [
                (c.index, c.propensity)
                for c in (
                    policy.choose(world.stats, rng, X=world.X(policy))
                    for _ in range(20)
                )
            ]
        )
    assert runs[0] == runs[1]


def test_thompson_window_and_all_time_differ_when_appeal_changed() -> None:
    # Poster 0 was great long ago, poor lately; poster 1 steady.
    stats = [ArmStats(10_000, 1_000, 1_000, 10), ArmStats(10_000, 500, 1_000, 50)]
    rng = np.random.default_rng(7)
    windowed = make_policy("thompson").propensities(stats, rng)
    all_time = make_policy("thompson_alltime").propensities(stats, rng)
    assert windowed[1] > 0.95 and all_time[0] > 0.95


def test_fm_greedy_splits_ties_and_softmax_weights() -> None:
    policy = FMPolicy(temperature=0.0)
    p = policy.propensities(None, np.random.default_rng(0), X=np.array([0.1, 0.3, 0.3]))
    assert p.tolist() == [0.0, 0.5, 0.5]


def test_ucb1_unexplored_arms_split_evenly() -> None:
    stats = [ArmStats(10, 1, 10, 1), ArmStats(), ArmStats()]
    p = make_policy("ucb1").propensities(stats, np.random.default_rng(0))
    assert p.tolist() == [0.0, 0.5, 0.5]


def test_make_policy_reads_the_real_settings() -> None:
    from keyart.settings import load_settings

    settings = load_settings(epsilon=0.25, ucb_c=0.7, linucb_alpha=0.3, prior_beta=9.0)
    assert make_policy("epsilon_greedy", settings).epsilon == 0.25
    assert make_policy("ucb1", settings).c == 0.7
    assert make_policy("linucb", settings).alpha == 0.3
    assert make_policy("thompson", settings).prior_beta == 9.0
    assert make_policy("thompson_alltime", settings).use_window is False
    assert make_policy("random", settings).name == "random"
