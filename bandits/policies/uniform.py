"""Uniform random choice: the control arm of every experiment."""

from __future__ import annotations

import numpy as np

from bandits.policies.base import Choice, Policy

__all__ = ["UniformRandom"]


class UniformRandom(Policy):
    """Each eligible candidate with probability ``1 / m``.

    The control ignores ``bonus`` (business preferences would bias it) but
    respects ``mask`` (a masked poster must never be shown). Its logged
    propensities make the simplest off-policy baseline.

    Examples
    --------
    >>> from bandits.state import ArmStats
    >>> choice = UniformRandom().choose([ArmStats()] * 4, np.random.default_rng(0))
    >>> choice.propensity
    0.25
    """

    name = "random"

    def choose(self, stats, rng, X=None, bonus=None, mask=None) -> Choice:
        k, _, mask_arr = self.adjustments(stats, X, bonus, mask)
        eligible = np.flatnonzero(mask_arr)
        index = int(rng.choice(eligible))
        return Choice(index, 1.0 / eligible.size, np.zeros(k))

    def propensities(self, stats, rng, X=None, bonus=None, mask=None) -> np.ndarray:
        _, _, mask_arr = self.adjustments(stats, X, bonus, mask)
        return np.where(mask_arr, 1.0 / mask_arr.sum(), 0.0)
