"""Intervals cover the true value at about their nominal rate.

Simulated logs where the truth is known exactly: contexts with known
probabilities, a known click-through rate for every (context, action), a
logging policy that is not uniform, and a target policy whose value is
``sum_x P(x) sum_a pi(a|x) ctr(x, a)``. Each estimator's 95% interval should
cover it in about 95% of 200 independently seeded logs; with 200 logs the
observed rate lies in [0.90, 0.99] with probability above 0.99 when the true
coverage is 0.95.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from bandits.evaluation.feedback import LoggedBandit
from bandits.evaluation.intervals import (
    lift_clustered,
    lift_log_ratio,
    ratio_delta,
    uctr,
    wilson,
)
from bandits.evaluation.ope import evaluate

SEEDS = range(200)
P_X = np.array([0.5, 0.3, 0.2])
CTR = np.array(
    [[0.05, 0.10, 0.20, 0.08], [0.15, 0.05, 0.10, 0.25], [0.30, 0.20, 0.05, 0.10]]
)
LOGGER = np.array(
    [[0.4, 0.3, 0.2, 0.1], [0.25, 0.25, 0.25, 0.25], [0.1, 0.2, 0.3, 0.4]]
)
UNIFORM = np.full((3, 4), 0.25)
TARGET = np.full((3, 4), 0.1 / 4)
TARGET[np.arange(3), CTR.argmax(axis=1)] += 0.9
GREEDY = np.zeros((3, 4))
GREEDY[np.arange(3), CTR.argmax(axis=1)] = 1.0


@dataclass(frozen=True)
class TablePolicy:
    """pi(a|x) read from a table indexed by the context column ``x``."""

    table: np.ndarray
    name: str = "table"
    deterministic: bool = False

    def probabilities(self, log: LoggedBandit) -> np.ndarray:
        x = log.contexts["x"].to_numpy()
        return self.table[x[log.pair_row], log.pair_action]


def true_value(table: np.ndarray) -> float:
    return float(P_X @ (table * CTR).sum(axis=1))


def simulate(seed: int, n: int, logger: np.ndarray) -> LoggedBandit:
    rng = np.random.default_rng(seed)
    x = rng.choice(3, n, p=P_X)
    actions = (rng.random(n)[:, None] > np.cumsum(logger[x], axis=1)).sum(axis=1)
    rewards = (rng.random(n) < CTR[x, actions]).astype(float)
    return LoggedBandit.from_arrays(
        actions, rewards, logger[x, actions], 4, contexts=pd.DataFrame({"x": x})
    )


def coverage(frames: list[pd.DataFrame], truth: float) -> dict[str, float]:
    table = pd.concat(frames)
    table["covered"] = (table["low"] <= truth) & (truth <= table["high"])
    return table.groupby("estimator")["covered"].mean().to_dict()


def test_ips_snips_dr_cover_the_true_value() -> None:
    truth = true_value(TARGET)  # 0.22425
    frames = [
        evaluate(
            simulate(seed, 2000, LOGGER),
            [TablePolicy(TARGET)],
            ["ips", "snips", "dr", "dm"],
            seed=seed,
        )
        for seed in SEEDS
    ]
    rates = coverage(frames, truth)
    for name in ("ips", "snips", "dr"):
        assert 0.90 <= rates[name] <= 0.99, (name, rates)
    # The per-action reward model ignores the context: the direct method is
    # biased and its interval, blind to the model's error, almost never covers.
    assert rates["dm"] < 0.5, rates


def test_replay_covers_under_a_uniform_logger() -> None:
    truth = true_value(GREEDY)  # 0.235
    greedy = TablePolicy(GREEDY, deterministic=True)
    frames = [
        evaluate(simulate(seed, 4000, UNIFORM), [greedy], ["replay", "ips"], seed=seed)
        for seed in SEEDS
    ]
    rates = coverage(frames, truth)
    assert 0.90 <= rates["replay"] <= 0.99, rates
    assert 0.90 <= rates["ips"] <= 0.99, rates


def test_bootstrap_intervals_cover_the_true_value() -> None:
    truth = true_value(TARGET)
    frames = [
        evaluate(
            simulate(seed, 1500, LOGGER),
            [TablePolicy(TARGET)],
            ["ips", "dr"],
            bootstrap=250,
            seed=seed,
        ).assign(low=lambda t: t["boot_low"], high=lambda t: t["boot_high"])
        for seed in range(100)
    ]
    rates = coverage(frames, truth)
    for name in ("ips", "dr"):
        assert 0.88 <= rates[name] <= 0.99, (name, rates)


def test_ctr_by_user_delta_covers_where_wilson_does_not() -> None:
    # Users differ: each has its own rate from Beta(1, 9) (mean 0.1) and sees
    # 1 + Poisson(9) posters, independent of the rate, so the population CTR
    # is 0.1. Impressions of one user correlate: Wilson, which treats them as
    # independent, is too narrow; the delta method over users is not.
    delta_hits, wilson_hits, uctr_hits = [], [], []
    # UCTR with 10 posters each: 1 - E[(1 - p)^10] = 1 - B(1, 19) / B(1, 9) = 10/19.
    true_uctr = 10 / 19
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        shown = 1 + rng.poisson(9, 600)
        rates = rng.beta(1, 9, 600)
        clicks = rng.binomial(shown, rates)
        delta_hits.append(ratio_delta(clicks, shown).covers(0.1))
        wilson_hits.append(wilson(int(clicks.sum()), int(shown.sum())).covers(0.1))
        clicked = rng.binomial(10, rates) > 0
        uctr_hits.append(uctr(np.arange(600), clicked).covers(true_uctr))
    assert 0.90 <= np.mean(delta_hits) <= 0.99
    assert np.mean(wilson_hits) < 0.85
    assert 0.90 <= np.mean(uctr_hits) <= 0.99


def test_lift_by_user_covers_where_the_independent_lift_does_not() -> None:
    # Two variants' users, rates from Beta(1, 9) (mean 0.1) and Beta(1.5, 8.5)
    # (mean 0.15): the true lift is 0.5. Each user sees 1 + Poisson(19) posters.
    clustered_hits, independent_hits = [], []
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        sides = []
        for a, b in ((1.0, 9.0), (1.5, 8.5)):
            shown = 1 + rng.poisson(19, 500)
            sides.append((rng.binomial(shown, rng.beta(a, b, 500)), shown))
        (ka, na), (kb, nb) = sides
        clustered_hits.append(lift_clustered(ka, na, kb, nb).covers(0.5))
        independent = lift_log_ratio(ka.sum(), na.sum(), kb.sum(), nb.sum())
        independent_hits.append(independent.covers(0.5))
    assert 0.90 <= np.mean(clustered_hits) <= 0.99
    assert np.mean(independent_hits) < 0.85
