"""A/B decisions between variants: tests, traffic-split check and guardrails.

Each pair of variants gets the difference and relative lift of their rates with
intervals, a two-proportion z-test, the Bayesian probability that the second is
better, and an always-valid p-value (mSPRT) that stays honest however often the
experiment is looked at. The traffic split is checked for sample-ratio mismatch
(SRM) against the configured shares, and guardrails (latency, fallbacks) are
shown beside the result.

Stated assumptions: the unit of the tests is the unit of the metric: an
impression for CTR (impressions of one user are treated as independent, which
makes CTR intervals too narrow when users see many posters), a user for UCTR
(users are independent when variants are assigned per user).

Examples
--------
>>> z, p = two_proportion_z(100, 2000, 130, 2000)
>>> round(z, 3), round(p, 4)
(2.038, 0.0416)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from itertools import combinations
from typing import Any

import numpy as np
from scipy.special import chdtrc

from bandits.evaluation.intervals import (
    Interval,
    difference_newcombe,
    lift_log_ratio,
    wilson,
)

__all__ = [
    "DEFAULT_MIXING_SD",
    "Comparison",
    "Guardrail",
    "SrmResult",
    "compare",
    "guardrail_checks",
    "msprt_pvalues",
    "pairs",
    "prob_b_better",
    "srm_check",
    "two_proportion_z",
]

# Standard deviation of the normal mixing prior of mSPRT over the difference
# of rates: effects of about one percentage point are what poster tests see.
DEFAULT_MIXING_SD = 0.01


def two_proportion_z(
    clicks_a: int, trials_a: int, clicks_b: int, trials_b: int
) -> tuple[float, float]:
    """Pooled two-proportion z statistic for ``p_b - p_a`` and its two-sided p.

    Examples
    --------
    >>> two_proportion_z(0, 10, 0, 10)
    (0.0, 1.0)
    """
    if trials_a == 0 or trials_b == 0:
        return 0.0, 1.0
    pooled = (clicks_a + clicks_b) / (trials_a + trials_b)
    variance = pooled * (1 - pooled) * (1 / trials_a + 1 / trials_b)
    if variance <= 0:
        return 0.0, 1.0
    z = (clicks_b / trials_b - clicks_a / trials_a) / math.sqrt(variance)
    return float(z), math.erfc(abs(z) / math.sqrt(2.0))


def prob_b_better(
    clicks_a: int,
    trials_a: int,
    clicks_b: int,
    trials_b: int,
    draws: int = 200_000,
    seed: int = 0,
    prior: tuple[float, float] = (1.0, 1.0),
) -> float:
    """P(p_b > p_a) under independent Beta posteriors, by Monte Carlo.

    The posterior of each rate is ``Beta(prior[0] + clicks, prior[1] + misses)``;
    with 200,000 draws the Monte Carlo error is below 0.0012.

    Examples
    --------
    >>> round(prob_b_better(10, 100, 10, 100, seed=3), 1)
    0.5
    """
    rng = np.random.default_rng(seed)
    a = rng.beta(prior[0] + clicks_a, prior[1] + trials_a - clicks_a, draws)
    b = rng.beta(prior[0] + clicks_b, prior[1] + trials_b - clicks_b, draws)
    return float(np.mean(b > a))


def msprt_pvalues(
    clicks_a: Sequence[int] | np.ndarray,
    trials_a: Sequence[int] | np.ndarray,
    clicks_b: Sequence[int] | np.ndarray,
    trials_b: Sequence[int] | np.ndarray,
    mixing_sd: float = DEFAULT_MIXING_SD,
) -> np.ndarray:
    """Always-valid p-values of the mixture SPRT for ``p_b - p_a`` at each look.

    Inputs are cumulative counts at successive looks. At a look the observed
    difference ``d`` is taken as normal with the pooled variance ``V`` (as in the
    z-test); mixing the alternative ``N(0, mixing_sd^2)`` gives the likelihood
    ratio ``sqrt(V / (V + t^2)) * exp(t^2 d^2 / (2 V (V + t^2)))`` with
    ``t = mixing_sd``, and the p-value is the running minimum of its inverse,
    capped at 1. Stopping the first time it falls below alpha keeps the false
    positive rate at most alpha whenever the looks are taken.

    Examples
    --------
    >>> p = msprt_pvalues([50, 100], [1000, 2000], [70, 150], [1000, 2000])
    >>> bool(p[1] <= p[0])
    True
    """
    ka, na, kb, nb = (
        np.asarray(v, dtype=float) for v in (clicks_a, trials_a, clicks_b, trials_b)
    )
    tau2 = mixing_sd**2
    with np.errstate(divide="ignore", invalid="ignore"):
        pooled = (ka + kb) / (na + nb)
        variance = pooled * (1 - pooled) * (1 / na + 1 / nb)
        diff = kb / nb - ka / na
        log_lr = 0.5 * np.log(variance / (variance + tau2)) + tau2 * diff**2 / (
            2 * variance * (variance + tau2)
        )
    log_lr = np.where(np.isfinite(log_lr) & (variance > 0), log_lr, 0.0)
    p = np.minimum(1.0, np.exp(-log_lr))
    return np.minimum.accumulate(p)


@dataclass(frozen=True)
class Comparison:
    """Variant ``b`` against variant ``a`` on one rate."""

    a: str
    b: str
    metric: str
    clicks_a: int
    trials_a: int
    clicks_b: int
    trials_b: int
    rate_a: Interval
    rate_b: Interval
    difference: Interval
    lift: Interval
    z: float
    p_value: float
    prob_b_better: float
    always_valid_p: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """Flat fields for tables and JSON (intervals as ``name_low``...)."""
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if isinstance(value, dict):
                out[key] = value["estimate"]
                out[key + "_low"] = value["low"]
                out[key + "_high"] = value["high"]
            else:
                out[key] = value
        return out


def compare(
    a: str,
    b: str,
    clicks_a: int,
    trials_a: int,
    clicks_b: int,
    trials_b: int,
    metric: str = "ctr",
    confidence: float = 0.95,
    seed: int = 0,
    always_valid_p: float | None = None,
) -> Comparison:
    """All statistics of one pair of variants from their counts.

    Examples
    --------
    >>> c = compare("A", "B", 100, 2000, 130, 2000)
    >>> round(c.difference.estimate, 3), round(c.p_value, 4)
    (0.015, 0.0416)
    """
    z, p = two_proportion_z(clicks_a, trials_a, clicks_b, trials_b)
    return Comparison(
        a=a,
        b=b,
        metric=metric,
        clicks_a=int(clicks_a),
        trials_a=int(trials_a),
        clicks_b=int(clicks_b),
        trials_b=int(trials_b),
        rate_a=wilson(clicks_a, trials_a, confidence),
        rate_b=wilson(clicks_b, trials_b, confidence),
        difference=difference_newcombe(
            clicks_a, trials_a, clicks_b, trials_b, confidence
        ),
        lift=lift_log_ratio(clicks_a, trials_a, clicks_b, trials_b, confidence),
        z=z,
        p_value=p,
        prob_b_better=prob_b_better(clicks_a, trials_a, clicks_b, trials_b, seed=seed),
        always_valid_p=always_valid_p,
    )


def pairs(variants: Sequence[str], control: str | None = None) -> list[tuple[str, str]]:
    """Pairs to compare: the control against each other variant, else all pairs."""
    if control is not None:
        if control not in variants:
            raise ValueError(f"control {control!r} is not among {list(variants)}")
        return [(control, v) for v in variants if v != control]
    return list(combinations(sorted(variants), 2))


@dataclass(frozen=True)
class SrmResult:
    """Sample-ratio-mismatch check of the observed traffic split."""

    observed: dict[str, int]
    expected_share: dict[str, float]
    chi2: float
    p_value: float
    threshold: float
    mismatch: bool

    def message(self) -> str:
        """One line for a report."""
        shares = ", ".join(
            f"{k} {v / max(1, sum(self.observed.values())):.3f}"
            f" (expected {self.expected_share[k]:.3f})"
            for k, v in self.observed.items()
        )
        verdict = "MISMATCH: do not trust the comparison" if self.mismatch else "ok"
        return f"SRM chi2={self.chi2:.2f} p={self.p_value:.2g} [{shares}] {verdict}"


def srm_check(
    observed: Mapping[str, int],
    expected_share: Mapping[str, float] | None = None,
    threshold: float = 0.001,
) -> SrmResult:
    """Chi-square goodness-of-fit test of the traffic split.

    ``expected_share`` is the configured split (normalised here); equal shares
    when omitted. A p-value below ``threshold`` (0.001 by convention, because
    the check runs on every report) flags a mismatch: assignment or logging is
    broken and the comparison is not trustworthy.

    Examples
    --------
    >>> srm_check({"A": 5500, "B": 4500}, {"A": 0.5, "B": 0.5}).mismatch
    True
    """
    names = list(observed)
    if len(names) < 2:
        raise ValueError("an SRM check needs at least two variants")
    if expected_share is None:
        expected_share = {name: 1.0 for name in names}
    missing = [name for name in names if name not in expected_share]
    if missing:
        raise ValueError(f"no configured share for variants {missing}")
    total_share = sum(expected_share[name] for name in names)
    shares = {name: expected_share[name] / total_share for name in names}
    counts = np.array([observed[name] for name in names], dtype=float)
    expected = np.array([shares[name] for name in names]) * counts.sum()
    chi2 = float(np.sum((counts - expected) ** 2 / expected))
    p = float(chdtrc(len(names) - 1, chi2))
    return SrmResult(
        observed={k: int(v) for k, v in observed.items()},
        expected_share=shares,
        chi2=float(chi2),
        p_value=float(p),
        threshold=threshold,
        mismatch=bool(p < threshold),
    )


@dataclass(frozen=True)
class Guardrail:
    """One guardrail metric of one variant and whether it stays within bounds."""

    variant: str
    name: str
    value: float
    limit: float
    ok: bool
    detail: str = field(default="")


def guardrail_checks(
    variant_to_metrics: Mapping[str, Mapping[str, float]],
    limits: Mapping[str, float],
) -> list[Guardrail]:
    """Check each variant's guardrail metrics against upper limits.

    ``variant_to_metrics`` maps a variant to metric values such as
    ``{"latency_p99_ms": 18.0, "fallback_rate": 0.002}``; metrics without a
    limit are listed with an infinite limit. A missing value (NaN) is not ok.

    Examples
    --------
    >>> [g.ok for g in guardrail_checks({"A": {"fallback_rate": 0.2}},
    ...                                 {"fallback_rate": 0.05})]
    [False]
    """
    out = []
    for variant, metrics in variant_to_metrics.items():
        for name, value in metrics.items():
            limit = float(limits.get(name, math.inf))
            ok = not math.isnan(value) and value <= limit
            out.append(Guardrail(variant, name, float(value), limit, ok))
    return out
