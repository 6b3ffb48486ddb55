"""Beta-Bernoulli Thompson sampling over windowed or all-time counts."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from bandits.policies._beta import beta_draws
from bandits.policies.base import Choice, Policy, check_counts
from bandits.propensity import monte_carlo_propensities, monte_carlo_propensity
from bandits.state import ArmStats

__all__ = ["ThompsonAllTime", "ThompsonSampling"]


class ThompsonSampling(Policy):
    """Choose the candidate with the highest draw from its Beta posterior.

    Each candidate's click rate has the posterior
    ``Beta(prior_alpha + clicks, prior_beta + impressions - clicks)``, over the
    sliding window's counts (``use_window=True``, follows changing appeal) or
    the all-time counts. A poster with no data is drawn from the prior, so it
    competes at once and is explored.

    Draws of arms with at least 30 clicks and 30 misses use a moment-matched
    normal approximation of the Beta posterior, and every draw comes from the
    fast sampler in ``bandits.policies._beta``; choices and propensities use
    the same sampler, so logged propensities are exact up to Monte Carlo error.

    The propensity has no closed form and is estimated by
    :func:`bandits.propensity.monte_carlo_propensity` with ``n_propensity``
    draws (add-one smoothed).

    Parameters
    ----------
    prior_alpha, prior_beta
        Beta prior pseudo-counts of clicks and misses.
    use_window
        Use the sliding-window counts instead of the all-time counts.
    n_propensity
        Monte Carlo draws for the propensity.

    Examples
    --------
    >>> from bandits.state import ArmStats
    >>> policy = ThompsonSampling()
    >>> stats = [ArmStats(1000, 10, 1000, 10), ArmStats(1000, 90, 1000, 90)]
    >>> choice = policy.choose(stats, np.random.default_rng(0))
    >>> choice.index, choice.propensity > 0.99
    (1, True)
    """

    name = "thompson"

    def __init__(
        self,
        prior_alpha: float = 1.0,
        prior_beta: float = 1.0,
        use_window: bool = True,
        n_propensity: int = 1000,
    ) -> None:
        if not (prior_alpha > 0 and prior_beta > 0):
            raise ValueError(
                f"Beta prior must be positive, got ({prior_alpha}, {prior_beta})"
            )
        if n_propensity < 1:
            raise ValueError(f"n_propensity must be at least 1, got {n_propensity}")
        self.prior_alpha = float(prior_alpha)
        self.prior_beta = float(prior_beta)
        self.use_window = use_window
        self.n_propensity = n_propensity

    @classmethod
    def _test_params(cls) -> Iterator[dict[str, Any]]:
        yield {}
        yield {"use_window": False, "prior_alpha": 2.0, "prior_beta": 20.0}

    def posterior(self, stats: Sequence[ArmStats]) -> tuple[np.ndarray, np.ndarray]:
        """Beta posterior parameters ``(a, b)`` of each candidate."""
        n, c = check_counts(stats, self.use_window)
        return self.prior_alpha + c, self.prior_beta + n - c

    def sample_scores(
        self, stats: Sequence[ArmStats], rng: np.random.Generator, n: int
    ) -> np.ndarray:
        """``(n, k)`` posterior draws of the candidates' click rates.

        Examples
        --------
        >>> from bandits.state import ArmStats
        >>> draws = ThompsonSampling().sample_scores(
        ...     [ArmStats(), ArmStats(50, 5, 50, 5)], np.random.default_rng(1), 4)
        >>> draws.shape
        (4, 2)
        """
        a, b = self.posterior(stats)
        return beta_draws(a, b, rng, n)

    def _sampler(self, stats, bonus, mask):
        a, b = self.posterior(stats)

        def draw(rng: np.random.Generator, n: int) -> np.ndarray:
            scores = beta_draws(a, b, rng, n) + bonus
            scores[:, ~mask] = -np.inf
            return scores

        return draw

    def choose(self, stats, rng, X=None, bonus=None, mask=None) -> Choice:
        _, bonus_arr, mask_arr = self.adjustments(stats, None, bonus, mask)
        a, b = self.posterior(stats)
        scores = beta_draws(a, b, rng, 1)[0].astype(np.float64)
        index = int(np.where(mask_arr, scores + bonus_arr, -np.inf).argmax())
        draw = self._sampler(stats, bonus_arr, mask_arr)
        p = monte_carlo_propensity(draw, index, rng, self.n_propensity)
        return Choice(index, p, scores)

    def propensities(self, stats, rng, X=None, bonus=None, mask=None) -> np.ndarray:
        _, bonus_arr, mask_arr = self.adjustments(stats, None, bonus, mask)
        draw = self._sampler(stats, bonus_arr, mask_arr)
        return monte_carlo_propensities(draw, rng, self.n_propensity)


class ThompsonAllTime(ThompsonSampling):
    """Thompson sampling over all-time counts (no sliding window)."""

    name = "thompson_alltime"

    def __init__(
        self,
        prior_alpha: float = 1.0,
        prior_beta: float = 1.0,
        n_propensity: int = 1000,
    ) -> None:
        super().__init__(prior_alpha, prior_beta, False, n_propensity)

    @classmethod
    def _test_params(cls) -> Iterator[dict[str, Any]]:
        yield {}
