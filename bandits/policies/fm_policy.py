"""Factorization-machine click predictions as a softmax policy."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from bandits.fm import FMScorer
from bandits.policies.base import Choice, Policy, argmax_choice
from bandits.state import ArmStats

__all__ = ["FMPolicy"]

_EPS = 1e-6
"""Probabilities are clipped to [eps, 1 - eps] before taking log-odds."""


class FMPolicy(Policy):
    """Softmax over predicted click log-odds (Boltzmann exploration).

    Each candidate is chosen with probability proportional to
    ``exp(logit(p_i + bonus_i) / temperature)``, where ``p_i`` is the click
    probability :class:`bandits.fm.FMScorer` predicts. A factorization machine
    has no posterior to sample, so the softmax is what explores. On the
    log-odds scale a temperature means the same at a 1% and at a 30% click
    rate: with the default 0.1, a poster predicted a tenth less clickable
    than the best (5.4% against 6%) is shown about e^-1.1, a third, as often,
    and one predicted half as clickable (3%) about a 1,400th as often. The
    propensity is the softmax weight, in closed form. ``temperature=0`` makes
    the policy greedy (ties split evenly).

    So little exploration suits keyart because the learner teaches the FM
    from every variant's impressions, the random control's among them; an FM
    that learnt only from its own choices would need a higher temperature.
    In the demo's simulation (``bench/sim_policies.py``), 0.1 and 0.05 both
    did better than 0.2.

    ``X`` is either a sequence of feature dicts (from
    :func:`bandits.fm.fm_features`) or an array of already predicted click
    probabilities.

    Examples
    --------
    >>> policy = FMPolicy()
    >>> rng = np.random.default_rng(0)
    >>> p = policy.propensities(None, rng, X=np.array([0.054, 0.06]))
    >>> p.round(2).tolist()
    [0.25, 0.75]
    """

    name = "fm"
    needs_features = True

    def __init__(
        self, scorer: FMScorer | None = None, temperature: float = 0.1
    ) -> None:
        if not temperature >= 0:
            raise ValueError(f"FM temperature must be >= 0, got {temperature}")
        self.scorer = scorer
        self.temperature = float(temperature)

    @classmethod
    def _test_params(cls) -> Iterator[dict[str, Any]]:
        yield {}
        yield {"temperature": 0.0}

    def scores(self, stats: Sequence[ArmStats] | None, X: Any = None) -> np.ndarray:
        """Predicted click probability of each candidate."""
        if X is None:
            raise ValueError("policy 'fm' needs candidate features X")
        if len(X) and isinstance(X[0], Mapping):
            if self.scorer is None:
                return np.full(len(X), 0.5)
            return self.scorer.predict_proba(X)
        p = np.asarray(X, dtype=np.float64)
        if p.ndim != 1:
            raise ValueError(f"FM scores must be a 1-d array, got shape {p.shape}")
        if not np.all(np.isfinite(p)):
            raise ValueError("FM scores contain NaN or infinity")
        return p

    def _weights(self, stats, X, bonus, mask) -> tuple[np.ndarray, np.ndarray]:
        _, bonus_arr, mask_arr = self.adjustments(stats, X, bonus, mask)
        raw = self.scores(stats, X)
        adjusted = np.where(mask_arr, raw + bonus_arr, -np.inf)
        if self.temperature == 0:
            ties = adjusted == adjusted.max()
            return raw, ties / ties.sum()
        # Log-odds of the adjusted probability; a masked candidate stays -inf.
        q = np.clip(adjusted, _EPS, 1.0 - _EPS)
        adjusted = np.where(mask_arr, np.log(q) - np.log1p(-q), -np.inf)
        z = (adjusted - adjusted.max()) / self.temperature
        w = np.exp(z)
        return raw, w / w.sum()

    def choose(self, stats, rng, X=None, bonus=None, mask=None) -> Choice:
        raw, p = self._weights(stats, X, bonus, mask)
        if self.temperature == 0:
            index, _ = argmax_choice(p, rng)
        else:
            index = int(rng.choice(p.size, p=p))
        return Choice(index, float(p[index]), raw)

    def propensities(self, stats, rng, X=None, bonus=None, mask=None) -> np.ndarray:
        return self._weights(stats, X, bonus, mask)[1]
