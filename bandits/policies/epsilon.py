"""Epsilon-greedy over posterior-mean click rates."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from bandits.policies.base import Choice, Policy, argmax_choice, check_counts
from bandits.state import ArmStats

__all__ = ["EpsilonGreedy"]


class EpsilonGreedy(Policy):
    """With probability epsilon a uniform candidate, else the best posterior mean.

    The greedy score is the posterior mean click rate
    ``(prior_alpha + clicks) / (prior_alpha + prior_beta + impressions)``, so a
    poster with no data starts at the prior mean (0.5 with the default uniform
    prior, above any realistic click rate) and is shown until data pulls it
    down. The propensity has a closed form: ``epsilon / m`` for every eligible
    candidate, plus ``(1 - epsilon) / t`` for each of the ``t`` tied best ones.

    Examples
    --------
    >>> from bandits.state import ArmStats
    >>> stats = [ArmStats(100, 1, 100, 1), ArmStats(100, 9, 100, 9)]
    >>> p = EpsilonGreedy(epsilon=0.2).propensities(stats, np.random.default_rng(0))
    >>> p.round(2).tolist()
    [0.1, 0.9]
    """

    name = "epsilon_greedy"

    def __init__(
        self,
        epsilon: float = 0.1,
        use_window: bool = True,
        prior_alpha: float = 1.0,
        prior_beta: float = 1.0,
    ) -> None:
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be within [0, 1], got {epsilon}")
        if not (prior_alpha > 0 and prior_beta > 0):
            raise ValueError("Beta prior must be positive")
        self.epsilon = float(epsilon)
        self.use_window = use_window
        self.prior_alpha = float(prior_alpha)
        self.prior_beta = float(prior_beta)

    @classmethod
    def _test_params(cls) -> Iterator[dict[str, Any]]:
        yield {}
        yield {"epsilon": 0.5, "use_window": False}

    def scores(self, stats: Sequence[ArmStats], X: Any = None) -> np.ndarray:
        """Posterior mean click rate of each candidate."""
        n, c = check_counts(stats, self.use_window)
        return (self.prior_alpha + c) / (self.prior_alpha + self.prior_beta + n)

    def _greedy(self, stats, bonus, mask):
        _, bonus_arr, mask_arr = self.adjustments(stats, None, bonus, mask)
        raw = self.scores(stats)
        return raw, np.where(mask_arr, raw + bonus_arr, -np.inf), mask_arr

    def choose(self, stats, rng, X=None, bonus=None, mask=None) -> Choice:
        raw, adjusted, mask_arr = self._greedy(stats, bonus, mask)
        eligible = np.flatnonzero(mask_arr)
        ties = np.flatnonzero(adjusted == adjusted.max())
        if rng.random() < self.epsilon:
            index = int(rng.choice(eligible))
        else:
            index, _ = argmax_choice(adjusted, rng)
        p = (
            self.epsilon / eligible.size
            + (1 - self.epsilon) * (index in ties) / ties.size
        )
        return Choice(index, float(p), raw)

    def propensities(self, stats, rng, X=None, bonus=None, mask=None) -> np.ndarray:
        _, adjusted, mask_arr = self._greedy(stats, bonus, mask)
        p = np.where(mask_arr, self.epsilon / mask_arr.sum(), 0.0)
        ties = np.flatnonzero(adjusted == adjusted.max())
        p[ties] += (1 - self.epsilon) / ties.size
        return p
