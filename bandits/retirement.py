"""When to demote or retire a poster: a sequential rule over click counts.

The rule, evaluated on all-time counts every time it runs:

1. An arm with fewer than ``min_impressions`` impressions stays ``"active"``.
2. Among the other arms, the best is the one with the highest posterior mean
   click rate under a ``Beta(prior_alpha, prior_beta)`` prior. It stays active.
3. For every other arm ``i``, ``P(worse) = P(p_i < p_best)`` under the two
   independent Beta posteriors, by Monte Carlo with ``n_draws`` seeded draws.
4. Each arm gets an anytime-valid confidence interval ``[L, U]`` for its click
   rate: all ``q`` with ``n * kl(ctr_hat, q) <= log(2 n (n + 1) / delta)``
   (the Chernoff bound for Bernoulli means, with a union bound over every
   sample size ``n``, so it holds at all looks at once).
5. ``"retired"`` when ``P(worse) >= retire_at`` AND ``U_i + margin <= L_best``;
   else ``"demoted"`` when ``P(worse) >= demote_at``; else ``"active"``.

Why two conditions. The rule runs again and again as data arrives, and a
posterior probability checked at every look will sooner or later cross 0.99 by
chance for an arm that is not worse: fixed-sample thresholds do not survive
sequential looks. The anytime interval does: with probability at least
``1 - K * delta`` (``K`` arms), every arm's interval contains its true click
rate at every look, and then a retired arm's true click rate is below the best
arm's by more than ``margin``. Retirement is irreversible, so it carries that
guarantee. Demotion only lowers a poster's priority and is re-evaluated at the
next look, so it uses the posterior probability alone and can flicker for arms
that are close; that is accepted.

The union bound over every sample size makes the interval wide: at a 5 % click
rate it spans about 3 points after 10,000 impressions and 1 point after
100,000, so only clearly worse posters are retired early.

The rule assumes click rates that do not drift; a poster whose appeal changed
is judged on its whole history.

Examples
--------
>>> from bandits.state import ArmStats
>>> rule = RetirementRule(min_impressions=1000)
>>> rule.decide({"good": ArmStats(20_000, 2_000), "poor": ArmStats(20_000, 600),
...              "new": ArmStats(50, 1)})
{'good': 'active', 'poor': 'retired', 'new': 'active'}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np

from bandits.state import ArmStats

__all__ = ["RetirementRule", "anytime_interval"]

Status = Literal["active", "demoted", "retired"]


def _kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    q = np.clip(q, 1e-15, 1 - 1e-15)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(p > 0, p * np.log(p / q), 0.0)
        b = np.where(p < 1, (1 - p) * np.log((1 - p) / (1 - q)), 0.0)
    return a + b


def anytime_interval(
    impressions: np.ndarray, clicks: np.ndarray, delta: float = 0.01
) -> tuple[np.ndarray, np.ndarray]:
    """Anytime-valid lower and upper bounds of each arm's click rate.

    Examples
    --------
    >>> lo, hi = anytime_interval(np.array([10_000]), np.array([500]))
    >>> bool(lo[0] < 0.05 < hi[0]), round(float(hi[0] - lo[0]), 3)
    (True, 0.03)
    """
    n = np.asarray(impressions, dtype=np.float64)
    c = np.asarray(clicks, dtype=np.float64)
    safe_n = np.maximum(n, 1.0)
    p = np.clip(c / safe_n, 0.0, 1.0)
    budget = np.log(2 * safe_n * (safe_n + 1) / delta) / safe_n
    lo, hi = np.zeros_like(p), p.copy()  # lower bound lies in [0, p]
    lo_u, hi_u = p.copy(), np.ones_like(p)  # upper bound lies in [p, 1]
    for _ in range(60):
        mid = (lo + hi) / 2
        inside = _kl(p, mid) <= budget
        hi = np.where(inside, mid, hi)
        lo = np.where(inside, lo, mid)
        mid_u = (lo_u + hi_u) / 2
        inside_u = _kl(p, mid_u) <= budget
        lo_u = np.where(inside_u, mid_u, lo_u)
        hi_u = np.where(inside_u, hi_u, mid_u)
    lower = np.where(n > 0, hi, 0.0)
    upper = np.where(n > 0, lo_u, 1.0)
    return lower, upper


class RetirementRule:
    """Sequential demotion and retirement of posters (see the module docstring).

    Parameters
    ----------
    min_impressions
        Impressions an arm needs before it can be demoted or retired.
    demote_at, retire_at
        Thresholds on ``P(worse than the best)``.
    margin
        Click-rate gap required between the arm's upper bound and the best
        arm's lower bound before retiring.
    delta
        Error probability of each arm's anytime interval.
    prior_alpha, prior_beta
        Beta prior of the posteriors.
    n_draws
        Monte Carlo draws for ``P(worse)``.
    seed
        Seed of those draws; the same counts always give the same decisions.
    """

    def __init__(
        self,
        min_impressions: int = 1000,
        demote_at: float = 0.95,
        retire_at: float = 0.99,
        seed: int = 0,
        margin: float = 0.001,
        delta: float = 0.01,
        prior_alpha: float = 1.0,
        prior_beta: float = 1.0,
        n_draws: int = 4000,
    ) -> None:
        if not 0.5 <= demote_at <= retire_at < 1.0:
            raise ValueError(
                f"need 0.5 <= demote_at <= retire_at < 1, got {demote_at}, {retire_at}"
            )
        if not 0 < delta < 1:
            raise ValueError(f"delta must be within (0, 1), got {delta}")
        if min_impressions < 1 or margin < 0 or n_draws < 1:
            raise ValueError("min_impressions and n_draws must be >= 1, margin >= 0")
        self.min_impressions = min_impressions
        self.demote_at = demote_at
        self.retire_at = retire_at
        self.seed = seed
        self.margin = margin
        self.delta = delta
        self.prior_alpha = prior_alpha
        self.prior_beta = prior_beta
        self.n_draws = n_draws

    def _compare(
        self, stats: Mapping[str, ArmStats]
    ) -> tuple[list[str], int, np.ndarray, np.ndarray, np.ndarray]:
        """Eligible arms, index of the best, P(worse), impressions, clicks."""
        arms = [a for a, s in stats.items() if s.impressions >= self.min_impressions]
        n = np.array([stats[a].impressions for a in arms], dtype=np.float64)
        c = np.minimum(np.array([stats[a].clicks for a in arms], dtype=np.float64), n)
        if len(arms) < 2:
            return arms, 0, np.zeros(len(arms)), n, c
        alpha, beta = self.prior_alpha + c, self.prior_beta + n - c
        best = int(np.argmax(alpha / (alpha + beta)))
        rng = np.random.default_rng(self.seed)
        draws = rng.beta(alpha, beta, size=(self.n_draws, len(arms)))
        worse = (draws < draws[:, [best]]).mean(axis=0)
        worse[best] = 0.0
        return arms, best, worse, n, c

    def p_worse(self, stats: Mapping[str, ArmStats]) -> dict[str, float]:
        """``P(p_arm < p_best)`` of every arm with enough impressions."""
        arms, _, worse, _, _ = self._compare(stats)
        return dict(zip(arms, worse.tolist(), strict=True))

    def decide(self, stats: Mapping[str, ArmStats]) -> dict[str, Status]:
        """Status of every arm: ``"active"``, ``"demoted"`` or ``"retired"``.

        Raises
        ------
        ValueError
            For negative counts.
        """
        for arm, s in stats.items():
            if s.impressions < 0 or s.clicks < 0:
                raise ValueError(f"arm {arm!r} has negative counts: {s}")
        status: dict[str, Status] = {arm: "active" for arm in stats}
        arms, best, worse, n, c = self._compare(stats)
        if len(arms) < 2:
            return status
        lower, upper = anytime_interval(n, c, self.delta)
        for i, arm in enumerate(arms):
            if worse[i] >= self.retire_at and upper[i] + self.margin <= lower[best]:
                status[arm] = "retired"
            elif worse[i] >= self.demote_at:
                status[arm] = "demoted"
        return status
