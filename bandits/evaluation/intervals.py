"""Confidence intervals for click-through rates and their comparisons.

Rates of clicks over impressions (CTR) and of clicking users over exposed users
(UCTR) are proportions, for which the Wilson score interval keeps its coverage
even with few clicks. When impressions of one user are correlated, CTR is
better treated as a ratio of per-user sums: :func:`ratio_delta` and
:func:`ratio_bootstrap` give intervals whose unit is the user.

Examples
--------
>>> round(wilson(3, 10).low, 4), round(wilson(3, 10).high, 4)
(0.1078, 0.6032)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

__all__ = [
    "Interval",
    "agresti_coull",
    "difference_newcombe",
    "lift_clustered",
    "lift_log_ratio",
    "ratio_bootstrap",
    "ratio_delta",
    "uctr",
    "wilson",
    "z_value",
]

# Cells of one bootstrap index matrix: bounds memory at about 32 MB.
_CHUNK_CELLS = 4_000_000


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval.

    ``method`` names how the interval was made, so a report can say it.
    """

    estimate: float
    low: float
    high: float
    method: str
    confidence: float = 0.95

    def covers(self, value: float) -> bool:
        """Whether ``value`` lies inside the interval (ends included)."""
        return self.low <= value <= self.high

    @property
    def width(self) -> float:
        """High end minus low end."""
        return self.high - self.low

    def as_dict(self) -> dict[str, Any]:
        """Plain fields, for JSON and DataFrames."""
        return asdict(self)


def z_value(confidence: float) -> float:
    """Two-sided standard normal quantile, 1.959964 for 0.95."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def _check_counts(successes: float, trials: float) -> None:
    if trials < 0 or successes < 0 or successes > trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes} of {trials}")


def wilson(successes: float, trials: float, confidence: float = 0.95) -> Interval:
    """Wilson score interval for a proportion.

    With no trials the estimate is NaN and the interval is [0, 1].

    Examples
    --------
    >>> w = wilson(3, 10)
    >>> round(w.estimate, 2), round(w.low, 4), round(w.high, 4)
    (0.3, 0.1078, 0.6032)
    """
    _check_counts(successes, trials)
    if trials == 0:
        return Interval(math.nan, 0.0, 1.0, "wilson", confidence)
    z = z_value(confidence)
    p = successes / trials
    z2n = z * z / trials
    centre = (p + z2n / 2.0) / (1.0 + z2n)
    half = z / (1.0 + z2n) * math.sqrt(p * (1.0 - p) / trials + z2n / (4.0 * trials))
    # The ends are exactly 0 and 1 at p = 0 and p = 1; keep rounding out of them.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return Interval(p, low, high, "wilson", confidence)


def agresti_coull(
    successes: float, trials: float, confidence: float = 0.95
) -> Interval:
    """Agresti-Coull interval: the Wald interval around the adjusted proportion.

    Examples
    --------
    >>> a = agresti_coull(3, 10)
    >>> round(a.low, 4), round(a.high, 4)
    (0.1033, 0.6077)
    """
    _check_counts(successes, trials)
    if trials == 0:
        return Interval(math.nan, 0.0, 1.0, "agresti-coull", confidence)
    z = z_value(confidence)
    n_adj = trials + z * z
    p_adj = (successes + z * z / 2.0) / n_adj
    half = z * math.sqrt(p_adj * (1.0 - p_adj) / n_adj)
    return Interval(
        successes / trials,
        max(0.0, p_adj - half),
        min(1.0, p_adj + half),
        "agresti-coull",
        confidence,
    )


def ratio_delta(
    numerators: np.ndarray, denominators: np.ndarray, confidence: float = 0.95
) -> Interval:
    """Delta-method interval for ``sum(numerators) / sum(denominators)``.

    Each position is one independent unit (a user): ``numerators[i]`` are its
    clicks and ``denominators[i]`` its impressions. The variance is
    ``(s_y^2 - 2 R s_xy + R^2 s_x^2) / (n xbar^2)`` with sample (co)variances.
    It needs at least two units and is symmetric, so with few clicks the low
    end can reach 0; it is clipped to [0, inf).

    Examples
    --------
    >>> r = ratio_delta(np.array([1, 0, 2, 0]), np.array([2, 1, 3, 2]))
    >>> round(r.estimate, 3), round(r.low, 4), round(r.high, 4)
    (0.375, 0.0249, 0.7251)
    """
    y = np.asarray(numerators, dtype=float)
    x = np.asarray(denominators, dtype=float)
    if y.shape != x.shape or y.ndim != 1:
        raise ValueError("numerators and denominators must be 1-d and equally long")
    n = y.size
    if n == 0 or x.sum() <= 0:
        return Interval(math.nan, 0.0, math.inf, "delta", confidence)
    ratio = float(y.sum() / x.sum())
    if n < 2:
        return Interval(ratio, 0.0, math.inf, "delta", confidence)
    cov = np.cov(np.vstack([y, x]), ddof=1)
    variance = (cov[0, 0] - 2 * ratio * cov[0, 1] + ratio**2 * cov[1, 1]) / (
        n * x.mean() ** 2
    )
    half = z_value(confidence) * math.sqrt(max(float(variance), 0.0))
    return Interval(ratio, max(0.0, ratio - half), ratio + half, "delta", confidence)


def _log_ratio_variance(y: np.ndarray, x: np.ndarray) -> tuple[float, float]:
    """``log(sum y / sum x)`` and its delta-method variance, units independent."""
    ratio = float(y.sum() / x.sum())
    cov = np.cov(np.vstack([y, x]), ddof=1)
    variance = (cov[0, 0] - 2 * ratio * cov[0, 1] + ratio**2 * cov[1, 1]) / (
        y.size * x.mean() ** 2
    )
    return math.log(ratio), max(float(variance), 0.0) / ratio**2


def lift_clustered(
    numerators_a: np.ndarray,
    denominators_a: np.ndarray,
    numerators_b: np.ndarray,
    denominators_b: np.ndarray,
    confidence: float = 0.95,
) -> Interval:
    """Relative lift of ratio b over ratio a, with the user as the unit.

    Each side is a ratio of per-unit sums, as in :func:`ratio_delta` (a user's
    clicks over its impressions, or the sum of its expected click
    probabilities over its impressions). The two sides hold different units,
    as users assigned to different experiment variants do, so the variance of
    the log ratio is the sum of each side's delta-method variance. Unlike
    :func:`lift_log_ratio`, the interval widens when a user's impressions are
    alike. A side with fewer than two units or a zero ratio gives an
    unbounded interval.

    Examples
    --------
    >>> a = np.array([1, 0, 2, 0, 1]), np.array([20, 30, 25, 30, 20])
    >>> b = np.array([3, 2, 2, 4, 3]), np.array([25, 30, 20, 30, 25])
    >>> lift = lift_clustered(*a, *b)
    >>> round(lift.estimate, 3), round(lift.low, 3), round(lift.high, 3)
    (2.365, 0.168, 8.697)
    """
    sides = []
    for y, x in ((numerators_a, denominators_a), (numerators_b, denominators_b)):
        y, x = np.asarray(y, dtype=float), np.asarray(x, dtype=float)
        if y.shape != x.shape or y.ndim != 1:
            raise ValueError("numerators and denominators must be 1-d and equal")
        if y.size < 2 or x.sum() <= 0 or y.sum() <= 0:
            return Interval(math.nan, -1.0, math.inf, "log-ratio, users", confidence)
        sides.append(_log_ratio_variance(y, x))
    (log_a, var_a), (log_b, var_b) = sides
    half = z_value(confidence) * math.sqrt(var_a + var_b)
    return Interval(
        math.exp(log_b - log_a) - 1.0,
        math.exp(log_b - log_a - half) - 1.0,
        math.exp(log_b - log_a + half) - 1.0,
        "log-ratio, users",
        confidence,
    )


def ratio_bootstrap(
    numerators: np.ndarray,
    denominators: np.ndarray,
    confidence: float = 0.95,
    resamples: int = 1000,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap interval for ``sum(numerators) / sum(denominators)``.

    Units (users) are resampled with replacement, ``resamples`` times, a chunk
    of resamples at a time as one index matrix. Resamples whose denominator
    is zero are dropped.

    Examples
    --------
    >>> b = ratio_bootstrap(np.array([1, 0, 2, 0]), np.array([2, 1, 3, 2]), seed=1)
    >>> b.method, b.low <= 0.375 <= b.high
    ('bootstrap', True)
    """
    y = np.asarray(numerators, dtype=float)
    x = np.asarray(denominators, dtype=float)
    if y.shape != x.shape or y.ndim != 1:
        raise ValueError("numerators and denominators must be 1-d and equally long")
    n = y.size
    if n == 0 or x.sum() <= 0:
        return Interval(math.nan, 0.0, math.inf, "bootstrap", confidence)
    rng = np.random.default_rng(seed)
    chunk = max(1, min(resamples, _CHUNK_CELLS // max(n, 1)))
    ratios: list[np.ndarray] = []
    done = 0
    while done < resamples:
        size = min(chunk, resamples - done)
        rows = rng.integers(0, n, size=(size, n))
        num, den = y[rows].sum(axis=1), x[rows].sum(axis=1)
        keep = den > 0
        ratios.append(num[keep] / den[keep])
        done += size
    values = np.concatenate(ratios)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return Interval(
        float(y.sum() / x.sum()), float(low), float(high), "bootstrap", confidence
    )


def uctr(
    user_ids: np.ndarray,
    clicks: np.ndarray,
    method: str = "wilson",
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """UCTR: the share of exposed users who clicked at least once.

    ``user_ids[i]`` and ``clicks[i]`` describe one impression. Each user is one
    unit; ``method`` is ``"wilson"`` (the share is a proportion over users),
    ``"delta"`` or ``"bootstrap"`` (the same share as a ratio of per-user sums,
    which agrees with Wald and with a percentile bootstrap).

    Examples
    --------
    >>> u = uctr(np.array(["a", "a", "b", "c"]), np.array([0, 1, 0, 0]))
    >>> round(u.estimate, 4)
    0.3333
    """
    users = np.asarray(user_ids)
    clicked = np.asarray(clicks, dtype=float) > 0
    if users.shape != clicked.shape:
        raise ValueError("user_ids and clicks must be equally long")
    if users.size == 0:
        return Interval(math.nan, 0.0, 1.0, method, confidence)
    _, inverse = np.unique(users, return_inverse=True)
    per_user = np.bincount(inverse, weights=clicked.astype(float)) > 0
    ones = np.ones(per_user.size)
    if method == "wilson":
        return wilson(int(per_user.sum()), per_user.size, confidence)
    if method == "delta":
        found = ratio_delta(per_user.astype(float), ones, confidence)
        return Interval(found.estimate, found.low, min(1.0, found.high), "delta")
    if method == "bootstrap":
        return ratio_bootstrap(per_user.astype(float), ones, confidence, seed=seed)
    raise ValueError(f"method must be wilson, delta or bootstrap, got {method!r}")


def difference_newcombe(
    clicks_a: int,
    trials_a: int,
    clicks_b: int,
    trials_b: int,
    confidence: float = 0.95,
) -> Interval:
    """Newcombe's hybrid score interval for ``p_b - p_a``.

    Built from the two Wilson intervals ``(l, u)``: the low end is
    ``d - sqrt((p_b - l_b)^2 + (u_a - p_a)^2)`` and the high end
    ``d + sqrt((u_b - p_b)^2 + (p_a - l_a)^2)``.

    Examples
    --------
    >>> d = difference_newcombe(3, 10, 6, 10)
    >>> round(d.estimate, 2), round(d.low, 4), round(d.high, 4)
    (0.3, -0.1177, 0.6011)
    """
    a = wilson(clicks_a, trials_a, confidence)
    b = wilson(clicks_b, trials_b, confidence)
    diff = b.estimate - a.estimate
    low = diff - math.hypot(b.estimate - b.low, a.high - a.estimate)
    high = diff + math.hypot(b.high - b.estimate, a.estimate - a.low)
    return Interval(diff, low, high, "newcombe", confidence)


def lift_log_ratio(
    clicks_a: int,
    trials_a: int,
    clicks_b: int,
    trials_b: int,
    confidence: float = 0.95,
) -> Interval:
    """Relative lift ``p_b / p_a - 1`` with a delta-method interval on the log ratio.

    ``var(log p_b/p_a) = 1/k_b - 1/n_b + 1/k_a - 1/n_a``. When either side has
    no clicks, 0.5 is added to both click counts and to both trial counts
    (Haldane's correction) and the method says ``log-ratio+0.5``.

    Examples
    --------
    >>> lift = lift_log_ratio(30, 1000, 45, 1000)
    >>> round(lift.estimate, 2), round(lift.low, 4), round(lift.high, 4)
    (0.5, -0.047, 1.3609)
    """
    for k, n in ((clicks_a, trials_a), (clicks_b, trials_b)):
        _check_counts(k, n)
    if trials_a == 0 or trials_b == 0:
        return Interval(math.nan, -1.0, math.inf, "log-ratio", confidence)
    method = "log-ratio"
    ka, na, kb, nb = float(clicks_a), float(trials_a), float(clicks_b), float(trials_b)
    estimate = (kb / nb) / (ka / na) - 1.0 if ka > 0 else math.inf
    if ka == 0 or kb == 0:
        ka, kb, na, nb = ka + 0.5, kb + 0.5, na + 0.5, nb + 0.5
        method = "log-ratio+0.5"
    log_ratio = math.log((kb / nb) / (ka / na))
    se = math.sqrt(1 / kb - 1 / nb + 1 / ka - 1 / na)
    z = z_value(confidence)
    return Interval(
        estimate,
        math.exp(log_ratio - z * se) - 1.0,
        math.exp(log_ratio + z * se) - 1.0,
        method,
        confidence,
    )
