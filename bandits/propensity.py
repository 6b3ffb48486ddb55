"""Monte Carlo propensity of a sampling policy's choice.

A policy that chooses by the argmax of random scores (Thompson sampling) has no
closed-form probability of choosing a given candidate. It is estimated here by
drawing an ``(n, k)`` matrix of scores once, taking the argmax of every row and
counting how often each candidate wins.

The estimate uses add-one (Laplace) smoothing over the eligible candidates,
``(wins + 1) / (n + m)`` with ``m`` the number of candidates that can be chosen,
so no logged propensity is ever zero (off-policy estimators divide by it) and the
propensities of the eligible candidates still sum to exactly 1. The bias this
adds is at most ``m / (n + m)``, below the Monte Carlo error for ``n = 1000``.
A candidate is ineligible (masked) when its scores are ``-inf``; its propensity
is 0.

Examples
--------
>>> import numpy as np
>>> def draws(rng, n):
...     return rng.normal([0.0, 1.0], 0.1, size=(n, 2))
>>> rng = np.random.default_rng(0)
>>> monte_carlo_propensity(draws, 1, rng, n=1000) > 0.99
True
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["monte_carlo_propensities", "monte_carlo_propensity"]

SampleScores = Callable[[np.random.Generator, int], np.ndarray]


def monte_carlo_propensities(
    sample_scores: SampleScores, rng: np.random.Generator, n: int = 1000
) -> np.ndarray:
    """Smoothed probability that each candidate has the highest score.

    Parameters
    ----------
    sample_scores
        ``sample_scores(rng, n)`` returns an ``(n, k)`` matrix of score draws;
        ``-inf`` marks a candidate that cannot be chosen.
    rng
        Generator the draws come from.
    n
        Number of Monte Carlo draws.

    Returns
    -------
    numpy.ndarray
        Shape ``(k,)``, summing to 1 over the eligible candidates.
    """
    if n < 1:
        raise ValueError(f"Monte Carlo propensity needs n >= 1 draws, got {n}")
    draws = np.asarray(sample_scores(rng, n))
    if draws.ndim != 2 or draws.shape[0] != n or draws.shape[1] == 0:
        raise ValueError(
            f"sample_scores must return an ({n}, k) matrix, got {draws.shape}"
        )
    eligible = draws[0] > -np.inf
    m = int(eligible.sum())
    if m == 0:
        raise ValueError("every candidate is masked: nothing can be chosen")
    wins = np.bincount(draws.argmax(axis=1), minlength=draws.shape[1])
    return np.where(eligible, (wins + 1.0) / (n + m), 0.0)


def monte_carlo_propensity(
    sample_scores: SampleScores,
    chosen: int,
    rng: np.random.Generator,
    n: int = 1000,
) -> float:
    """Smoothed probability that candidate ``chosen`` has the highest score.

    See :func:`monte_carlo_propensities` for the parameters and the smoothing.

    Examples
    --------
    >>> import numpy as np
    >>> uniform = lambda rng, n: rng.random((n, 4))
    >>> p = monte_carlo_propensity(uniform, 2, np.random.default_rng(1), n=4000)
    >>> bool(abs(p - 0.25) < 0.03)
    True
    """
    propensities = monte_carlo_propensities(sample_scores, rng, n)
    if not 0 <= chosen < propensities.size:
        raise ValueError(f"chosen index {chosen} is outside 0..{propensities.size - 1}")
    return float(propensities[chosen])
