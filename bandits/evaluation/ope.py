"""Off-policy evaluation: how a target policy would have done on logged traffic.

Every keyart decision is logged with its propensity, the probability the
logging policy had of showing that poster. Reweighting logged rewards by
``w = pi(a|x) / propensity`` estimates the click-through rate a target policy
``pi`` would have had, before it takes any traffic.

Estimators (``V`` is the estimate, ``r`` the reward, ``q`` a reward model):

* ``replay``: keep the decisions where the target picks the logged action
  (deterministic targets pick their argmax, stochastic ones draw with a seed)
  and average their rewards. Unbiased when the logger was uniform over the
  candidates; with another logger it leans towards what the logger favoured.
* ``ips``: ``mean(w r)``. Unbiased with correct propensities and no clipping.
* ``snips``: ``sum(w r) / sum(w)``. Slightly biased, much lower variance.
* ``dm``: ``mean(sum_a pi(a|x) q(x, a))``, only as good as the reward model.
* ``dr``: ``dm`` plus ``mean(w (r - q(x, a_logged)))``: unbiased if either the
  propensities or the reward model are right. ``q`` is cross-fitted.

Weights are clipped at ``clip`` (bias traded for variance) and the effective
sample size ``(sum w)^2 / sum w^2`` says how many logged decisions the
estimate is worth. Intervals are normal approximations on the per-decision
contributions (delta method for ``snips``; Wilson for ``replay``) and, when
asked, percentile bootstraps over decisions. The bootstrap keeps the
cross-fitted reward model fixed, so it omits the model's own variance. When no
decision with positive weight was clicked, the normal interval would collapse
to a point; IPS, SNIPS and DR then reach up to the Wilson upper end of 0
clicks in ESS decisions (method ``wilson-zero``). With fewer than about 10
clicks expected among the ESS decisions, intervals are too narrow
(:func:`few_clicks_warning`). The mean importance weight should be
1; :func:`support_warning` says when it is not.

Examples
--------
>>> import numpy as np
>>> from bandits.evaluation.feedback import LoggedBandit
>>> from bandits.evaluation.targets import UniformPolicy
>>> log = LoggedBandit.from_arrays(np.array([0, 1, 0, 1]),
...     np.array([1.0, 0.0, 0.0, 1.0]), np.array([0.8, 0.2, 0.8, 0.2]), 2)
>>> round(ips(log, UniformPolicy().probabilities(log)).interval.estimate, 5)
0.78125
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd

from bandits.evaluation.feedback import LoggedBandit
from bandits.evaluation.intervals import Interval, ratio_bootstrap, wilson, z_value
from bandits.evaluation.reward_models import cross_fit
from bandits.evaluation.targets import TargetPolicy, check_probabilities

__all__ = [
    "DEFAULT_ESTIMATORS",
    "ESTIMATORS",
    "OpeEstimate",
    "direct_method",
    "doubly_robust",
    "effective_sample_size",
    "evaluate",
    "few_clicks_warning",
    "ips",
    "observed_value",
    "replay",
    "snips",
    "support_warning",
]

ESTIMATORS = ("replay", "ips", "snips", "dm", "dr")
# The direct method's interval ignores the reward model's own error, so it is
# too narrow to judge a policy by; it is computed only when asked for.
DEFAULT_ESTIMATORS = ("replay", "ips", "snips", "dr")


@dataclass(frozen=True)
class OpeEstimate:
    """One estimator's estimate of one policy's value, with diagnostics."""

    policy: str
    estimator: str
    interval: Interval
    bootstrap: Interval | None
    n: int
    ess: float
    clip: float
    clipped_share: float
    mean_weight: float
    weight_se: float = math.nan

    def support_warning(self) -> str | None:
        """See :func:`support_warning`."""
        return support_warning(
            self.policy, self.mean_weight, self.weight_se, self.clipped_share
        )

    def as_dict(self) -> dict[str, object]:
        """Flat fields for tables and JSON."""
        out: dict[str, object] = {
            "policy": self.policy,
            "estimator": self.estimator,
            "estimate": self.interval.estimate,
            "low": self.interval.low,
            "high": self.interval.high,
            "method": self.interval.method,
            "boot_low": self.bootstrap.low if self.bootstrap else math.nan,
            "boot_high": self.bootstrap.high if self.bootstrap else math.nan,
        }
        rest = asdict(self)
        for key in ("n", "ess", "clip", "clipped_share", "mean_weight", "weight_se"):
            out[key] = rest[key]
        return out


def support_warning(
    policy: str, mean_weight: float, weight_se: float, clipped_share: float = 0.0
) -> str | None:
    """A sentence when the mean weight is more than 3 standard errors off 1.

    Unclipped importance weights average 1 when the logger gave every action
    the target may take a chance and the propensities are right. A mean well
    below 1 says the target takes actions the logger never could (a
    deterministic logger, such as greedy LinUCB logging propensity 1), so IPS
    and DR miss part of its value; well above 1 says propensities are too small.

    Examples
    --------
    >>> support_warning("uniform", 0.59, 0.05) is not None
    True
    >>> support_warning("uniform", 0.98, 0.05) is None
    True
    """
    if math.isnan(mean_weight) or math.isnan(weight_se) or clipped_share > 0:
        return None  # clipped weights average below 1 by design
    if abs(mean_weight - 1.0) <= max(3 * weight_se, 1e-9):
        return None
    return (
        f"{policy}: mean importance weight {mean_weight:.3f} (standard error"
        f" {weight_se:.3f}) is not 1: the logger gave some of this policy's"
        " actions no chance, or its propensities are off"
    )


def effective_sample_size(weights: np.ndarray) -> float:
    """Kish's effective sample size ``(sum w)^2 / sum w^2``.

    Examples
    --------
    >>> effective_sample_size(np.array([1.0, 1.0, 2.0]))
    2.6666666666666665
    """
    total_sq = float(np.sum(weights**2))
    return float(np.sum(weights)) ** 2 / total_sq if total_sq > 0 else 0.0


def _weights(
    log: LoggedBandit, probs: np.ndarray, clip: float
) -> tuple[np.ndarray, float]:
    raw = probs[log.logged_pair] / log.propensities
    clipped = raw > clip
    return np.minimum(raw, clip), float(clipped.mean()) if log.n else 0.0


def _standard_error(values: np.ndarray) -> float:
    if values.size < 2:
        return math.nan
    return float(np.std(values, ddof=1)) / math.sqrt(values.size)


def _normal(values: np.ndarray, estimate: float, confidence: float) -> Interval:
    n = values.size
    if n < 2:
        return Interval(estimate, -math.inf, math.inf, "normal", confidence)
    half = z_value(confidence) * float(np.std(values, ddof=1)) / math.sqrt(n)
    return Interval(estimate, estimate - half, estimate + half, "normal", confidence)


def _zero_click(log: LoggedBandit, w: np.ndarray, interval: Interval) -> Interval:
    """Widen to a Wilson upper end when no weighted decision was clicked.

    With no clicked decision of positive weight the normal interval collapses
    (IPS, SNIPS) or shows only the reward model's spread (DR); the target is
    then bounded like ``0`` clicks out of the effective sample size.
    """
    binary = bool(np.isin(log.rewards, (0.0, 1.0)).all())
    if not binary or np.any((w > 0) & (log.rewards > 0)):
        return interval
    ess = max(1, round(effective_sample_size(w)))
    high = max(interval.high, wilson(0, ess, interval.confidence).high)
    low = min(interval.low, 0.0)
    return Interval(interval.estimate, low, high, "wilson-zero", interval.confidence)


def few_clicks_warning(policy: str, ess: float, ctr: float) -> str | None:
    """A sentence when fewer than 10 clicks are expected in the effective sample.

    Normal intervals need several clicked decisions among those that carry
    the weight; with rare clicks and a concentrated target they come out too
    narrow.

    Examples
    --------
    >>> few_clicks_warning("greedy", 70.0, 0.004) is not None
    True
    """
    if math.isnan(ess) or math.isnan(ctr) or ess * ctr >= 10:
        return None
    return (
        f"{policy}: about {ess * ctr:.1f} clicks expected among {ess:.0f} effective"
        " decisions; its intervals are not reliable"
    )


def _mean_estimate(
    name: str,
    policy: str,
    contributions: np.ndarray,
    weights: np.ndarray,
    clip: float,
    clipped_share: float,
    confidence: float,
    bootstrap: int,
    seed: int,
) -> OpeEstimate:
    estimate = float(contributions.mean()) if contributions.size else math.nan
    boot = None
    if bootstrap:
        boot = ratio_bootstrap(
            contributions, np.ones_like(contributions), confidence, bootstrap, seed
        )
    return OpeEstimate(
        policy,
        name,
        _normal(contributions, estimate, confidence),
        boot,
        int(contributions.size),
        effective_sample_size(weights),
        clip,
        clipped_share,
        float(weights.mean()) if weights.size else math.nan,
        _standard_error(weights),
    )


def ips(
    log: LoggedBandit,
    probs: np.ndarray,
    clip: float = math.inf,
    confidence: float = 0.95,
    bootstrap: int = 0,
    seed: int = 0,
    policy: str = "target",
) -> OpeEstimate:
    """Inverse propensity scoring: ``mean(min(w, clip) * r)``."""
    w, share = _weights(log, probs, clip)
    found = _mean_estimate(
        "ips", policy, w * log.rewards, w, clip, share, confidence, bootstrap, seed
    )
    return replace(found, interval=_zero_click(log, w, found.interval))


def snips(
    log: LoggedBandit,
    probs: np.ndarray,
    clip: float = math.inf,
    confidence: float = 0.95,
    bootstrap: int = 0,
    seed: int = 0,
    policy: str = "target",
) -> OpeEstimate:
    """Self-normalised IPS ``sum(w r) / sum(w)``; delta-method interval.

    The interval uses the contributions ``w (r - V) / mean(w)``.

    Examples
    --------
    >>> from bandits.evaluation.targets import UniformPolicy
    >>> log = LoggedBandit.from_arrays(np.array([0, 1, 0, 1]),
    ...     np.array([1.0, 0.0, 0.0, 1.0]), np.array([0.8, 0.2, 0.8, 0.2]), 2)
    >>> round(snips(log, UniformPolicy().probabilities(log)).interval.estimate, 4)
    0.5
    """
    w, share = _weights(log, probs, clip)
    total = float(w.sum())
    estimate = float((w * log.rewards).sum() / total) if total > 0 else math.nan
    influence = w * (log.rewards - estimate) / w.mean() if total > 0 else w
    normal = _normal(influence, estimate, confidence)
    boot = (
        ratio_bootstrap(w * log.rewards, w, confidence, bootstrap, seed)
        if bootstrap
        else None
    )
    return OpeEstimate(
        policy,
        "snips",
        _zero_click(log, w, Interval(estimate, normal.low, normal.high, "delta")),
        boot,
        log.n,
        effective_sample_size(w),
        clip,
        share,
        float(w.mean()) if log.n else math.nan,
        _standard_error(w),
    )


def direct_method(
    log: LoggedBandit,
    probs: np.ndarray,
    q_pairs: np.ndarray,
    confidence: float = 0.95,
    bootstrap: int = 0,
    seed: int = 0,
    policy: str = "target",
) -> OpeEstimate:
    """Direct method: the reward model's value of the target policy.

    The interval treats the reward model as known: it reflects only the spread
    of contexts, not the model's estimation error, and is much too narrow
    (method ``normal-given-model``). Use ``dr`` to judge a policy.
    """
    dm = log.row_sum(probs * q_pairs)
    ones = np.ones(log.n)
    found = _mean_estimate(
        "dm", policy, dm, ones, math.inf, 0.0, confidence, bootstrap, seed
    )
    return replace(found, interval=replace(found.interval, method="normal-given-model"))


def doubly_robust(
    log: LoggedBandit,
    probs: np.ndarray,
    q_pairs: np.ndarray,
    clip: float = math.inf,
    confidence: float = 0.95,
    bootstrap: int = 0,
    seed: int = 0,
    policy: str = "target",
) -> OpeEstimate:
    """Doubly robust: ``mean(sum_a pi q + w (r - q_logged))``."""
    w, share = _weights(log, probs, clip)
    dm = log.row_sum(probs * q_pairs)
    contributions = dm + w * (log.rewards - q_pairs[log.logged_pair])
    found = _mean_estimate(
        "dr", policy, contributions, w, clip, share, confidence, bootstrap, seed
    )
    return replace(found, interval=_zero_click(log, w, found.interval))


def replay(
    log: LoggedBandit,
    probs: np.ndarray,
    deterministic: bool,
    confidence: float = 0.95,
    seed: int = 0,
    policy: str = "target",
) -> OpeEstimate:
    """Replay: mean reward over the decisions where the target agrees with the log.

    A deterministic target agrees where it puts probability 1 on the logged
    action; a stochastic one draws its action from ``probs`` (seeded). The
    interval is Wilson when rewards are 0/1, normal otherwise; ``n`` and the
    effective sample size are the number of matches.

    Examples
    --------
    >>> from bandits.evaluation.targets import GreedyPolicy
    >>> log = LoggedBandit.from_arrays(np.array([0, 1, 1, 1]),
    ...     np.array([0.0, 1.0, 0.0, 1.0]), np.full(4, 0.5), 2)
    >>> r = replay(log, GreedyPolicy.fit(log).probabilities(log), True)
    >>> r.n, round(r.interval.estimate, 4)
    (3, 0.6667)
    """
    if deterministic:
        matched = probs[log.logged_pair] > 0.5
    else:
        rng = np.random.default_rng(seed)
        draw = rng.random(log.n) * log.row_sum(probs)
        cumulative = np.cumsum(probs)
        first = np.searchsorted(log.pair_row, np.arange(log.n))
        before_row = cumulative[first] - probs[first]
        within_low = cumulative[log.logged_pair] - probs[log.logged_pair] - before_row
        within_high = within_low + probs[log.logged_pair]
        matched = (draw >= within_low) & (draw < within_high)
    rewards = log.rewards[matched]
    k = int(matched.sum())
    binary = bool(np.isin(rewards, (0.0, 1.0)).all())
    if binary:
        interval = wilson(int(rewards.sum()), k, confidence)
    else:
        mean = float(rewards.mean()) if k else math.nan
        interval = _normal(rewards, mean, confidence)
    return OpeEstimate(
        policy, "replay", interval, None, k, float(k), math.inf, 0.0, math.nan
    )


def observed_value(log: LoggedBandit, confidence: float = 0.95) -> Interval:
    """The logging policy's own click-through rate with a Wilson interval."""
    return wilson(int((log.rewards > 0).sum()), log.n, confidence)


def evaluate(
    log: LoggedBandit,
    policies: Sequence[TargetPolicy],
    estimators: Sequence[str] = DEFAULT_ESTIMATORS,
    clip: float = math.inf,
    reward_model: str = "action_mean",
    folds: int = 2,
    bootstrap: int = 0,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Every estimator for every policy, one row each (see :class:`OpeEstimate`).

    Examples
    --------
    >>> from bandits.evaluation.targets import UniformPolicy
    >>> log = LoggedBandit.from_arrays(np.array([0, 1, 0, 1]),
    ...     np.array([1.0, 0.0, 0.0, 1.0]), np.array([0.8, 0.2, 0.8, 0.2]), 2)
    >>> evaluate(log, [UniformPolicy()], ["ips", "snips"])["estimate"].round(4).tolist()
    [0.7812, 0.5]
    """
    unknown = set(estimators) - set(ESTIMATORS)
    if unknown:
        raise ValueError(f"unknown estimators {sorted(unknown)}; use {ESTIMATORS}")
    q_pairs = None
    if {"dm", "dr"} & set(estimators):
        q_pairs = cross_fit(log, reward_model, folds, seed)
    rows = []
    for policy in policies:
        probs = np.asarray(policy.probabilities(log), dtype=float)
        check_probabilities(log, probs, policy.name)
        pol = policy.name
        for name in estimators:
            if name == "replay":
                found = replay(log, probs, policy.deterministic, confidence, seed, pol)
            elif name == "ips":
                found = ips(log, probs, clip, confidence, bootstrap, seed, pol)
            elif name == "snips":
                found = snips(log, probs, clip, confidence, bootstrap, seed, pol)
            elif name == "dm" and q_pairs is not None:
                found = direct_method(
                    log, probs, q_pairs, confidence, bootstrap, seed, pol
                )
            elif q_pairs is not None:
                found = doubly_robust(
                    log, probs, q_pairs, clip, confidence, bootstrap, seed, pol
                )
            rows.append(found.as_dict())
    return pd.DataFrame(rows)
