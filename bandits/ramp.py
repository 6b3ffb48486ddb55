"""Guaranteed exploration for posters that are still ramping up.

A new poster competes through its policy's prior, but a cautious policy (or a
strong incumbent) may still show it rarely. The ramp-up rule reserves a share
of requests for posters with fewer than ``min_impressions`` impressions: with
probability ``share`` the request explores uniformly among those posters, and
otherwise the policy chooses as usual (among all eligible candidates, the new
ones included).

The logged propensity is that of the whole mixture:

``p(i) = share * (1/m if i is ramping else 0) + (1 - share) * p_policy(i)``

with ``m`` the number of ramping candidates. When no candidate is ramping the
share is 0 and the policy's propensity is logged unchanged.

Examples
--------
>>> import numpy as np
>>> from bandits.state import ArmStats
>>> plan = ramp_up_bonus([ArmStats(5000, 50), ArmStats(10, 0)], 1000, 0.1)
>>> plan.ramping.tolist(), plan.share
([False, True], 0.1)
>>> round(plan.propensity(1, policy_propensity=0.2), 3)
0.28
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bandits.state import ArmStats

__all__ = ["RampUp", "ramp_up_bonus"]


@dataclass(frozen=True)
class RampUp:
    """The ramp-up decision inputs of one request.

    Attributes
    ----------
    ramping
        Boolean ``(k,)``: candidates still ramping (and not masked).
    share
        Probability that this request explores among them (0 if none).
    """

    ramping: np.ndarray
    share: float

    def explores(self, rng: np.random.Generator) -> bool:
        """Draw whether this request is a ramp-up exploration."""
        return self.share > 0 and bool(rng.random() < self.share)

    def pick(self, rng: np.random.Generator) -> int:
        """A ramping candidate, uniformly."""
        candidates = np.flatnonzero(self.ramping)
        if candidates.size == 0:
            raise ValueError("no candidate is ramping up")
        return int(rng.choice(candidates))

    def propensity(self, index: int, policy_propensity: float) -> float:
        """Propensity of ``index`` under the mixture of ramp-up and policy.

        ``policy_propensity`` is the policy's own probability of choosing
        ``index`` (``Policy.propensity``), needed even when the ramp-up picked
        it, because the policy could have picked it too.
        """
        m = int(self.ramping.sum())
        ramp = 1.0 / m if m and self.ramping[index] else 0.0
        return self.share * ramp + (1.0 - self.share) * float(policy_propensity)


def ramp_up_bonus(
    stats: Sequence[ArmStats],
    min_impressions: int,
    share: float,
    mask: np.ndarray | None = None,
) -> RampUp:
    """Which candidates are ramping up, and the share of requests they get.

    Parameters
    ----------
    stats
        The candidates' statistics (all-time impressions decide).
    min_impressions
        A poster ramps until it has this many impressions.
    share
        Probability that a request explores among ramping posters.
    mask
        Eligible candidates (``True`` = may be chosen); masked ones never ramp.

    Examples
    --------
    >>> from bandits.state import ArmStats
    >>> ramp_up_bonus([ArmStats(5000, 50)], 1000, 0.1).share
    0.0
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"ramp-up share must be within [0, 1], got {share}")
    if min_impressions < 0:
        raise ValueError(f"min_impressions must be >= 0, got {min_impressions}")
    n = np.array([s.impressions for s in stats], dtype=np.int64)
    if np.any(n < 0):
        raise ValueError("candidate statistics have negative impressions")
    ramping = n < min_impressions
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != ramping.shape or mask.dtype != bool:
            raise ValueError(f"mask must be a boolean array of shape {ramping.shape}")
        ramping &= mask
    return RampUp(ramping, float(share) if ramping.any() else 0.0)
