"""What every poster-choosing policy offers the gateway.

A policy looks at the ``k`` candidate posters of one placement, returns a
:class:`Choice` (the index chosen, the probability it had of being chosen, and
the scores it compared) and can say, for any candidate, how likely that
candidate was to be chosen. That probability (the propensity) is logged with
the decision so that other policies can be evaluated offline.

Two adjustments come from the gateway's business rules:

``bonus``
    An additive adjustment, in the units of the policy's scores (click
    probability for every policy here except UCB1 and LinUCB, whose scores are
    a click probability plus an exploration width), added to each candidate's
    score before the argmax (for sampling policies: to every draw). The uniform
    control ignores it.
``mask``
    A boolean array, ``True`` for a candidate that MAY be chosen and ``False``
    for one that must not (``scores[mask]`` are the eligible ones). A masked
    candidate has propensity 0.

Ties between the highest scores are split evenly at random, and the
propensity of a tied winner is ``1 / number_of_ties``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from bandits.state import ArmStats

__all__ = ["ArgmaxPolicy", "Choice", "Policy", "argmax_choice", "check_counts"]


@dataclass(frozen=True)
class Choice:
    """The candidate chosen, its propensity, and the policy's scores.

    ``scores`` are the policy's own scores of the ``k`` candidates before
    ``bonus`` and ``mask`` (for Thompson sampling, the posterior draw the choice
    came from; for the uniform control, zeros).
    """

    index: int
    propensity: float
    scores: np.ndarray


def check_counts(
    stats: Sequence[ArmStats], use_window: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Impressions and clicks arrays of the candidates, validated.

    Clicks above impressions (a click whose impression left the window) are
    clamped to the impressions.

    Raises
    ------
    ValueError
        For an empty candidate list or negative counts.
    """
    if len(stats) == 0:
        raise ValueError("the candidate list is empty")
    if use_window:
        n = np.array([s.window_impressions for s in stats], dtype=np.float64)
        c = np.array([s.window_clicks for s in stats], dtype=np.float64)
    else:
        n = np.array([s.impressions for s in stats], dtype=np.float64)
        c = np.array([s.clicks for s in stats], dtype=np.float64)
    if np.any(n < 0) or np.any(c < 0):
        bad = int(np.flatnonzero((n < 0) | (c < 0))[0])
        raise ValueError(f"candidate {bad} has negative counts: {stats[bad]}")
    return n, np.minimum(c, n)


def _check_adjustments(
    k: int, bonus: np.ndarray | None, mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    if bonus is None:
        bonus_arr = np.zeros(k)
    else:
        bonus_arr = np.asarray(bonus, dtype=np.float64)
        if bonus_arr.shape != (k,):
            raise ValueError(f"bonus must have shape ({k},), got {bonus_arr.shape}")
        if not np.all(np.isfinite(bonus_arr)):
            raise ValueError("bonus contains NaN or infinity")
    if mask is None:
        mask_arr = np.ones(k, dtype=bool)
    else:
        mask_arr = np.asarray(mask)
        if mask_arr.shape != (k,) or mask_arr.dtype != bool:
            raise ValueError(
                f"mask must be a boolean array of shape ({k},), "
                f"got {mask_arr.dtype} {mask_arr.shape}"
            )
        if not mask_arr.any():
            raise ValueError("every candidate is masked: nothing can be chosen")
    return bonus_arr, mask_arr


def argmax_choice(
    scores: np.ndarray, rng: np.random.Generator
) -> tuple[int, np.ndarray]:
    """Index of a highest score (ties split at random) and the tie set."""
    best = scores.max()
    ties = np.flatnonzero(scores == best)
    index = int(ties[0]) if ties.size == 1 else int(rng.choice(ties))
    return index, ties


class Policy(ABC):
    """Abstract poster-choosing policy.

    Subclasses implement :meth:`choose` and :meth:`propensities`. They declare
    ``name`` (the name :func:`bandits.policies.make_policy` knows them by),
    ``needs_features`` (whether ``X`` is required) and ``_test_params`` (the
    constructor arguments the shared behavioural tests run them with).
    """

    name: ClassVar[str]
    needs_features: ClassVar[bool] = False

    @classmethod
    def _test_params(cls) -> Iterator[dict[str, Any]]:
        yield {}

    def _k(self, stats: Sequence[ArmStats] | None, X: Any) -> int:
        if stats is not None and len(stats) > 0:
            if X is not None and len(X) != len(stats):
                raise ValueError(
                    f"{len(stats)} candidates' statistics but {len(X)} feature rows"
                )
            return len(stats)
        if X is not None and len(X) > 0:
            return len(X)
        raise ValueError("the candidate list is empty")

    def adjustments(
        self,
        stats: Sequence[ArmStats] | None,
        X: Any = None,
        bonus: np.ndarray | None = None,
        mask: np.ndarray | None = None,
    ) -> tuple[int, np.ndarray, np.ndarray]:
        """Validated ``(k, bonus, mask)`` for a candidate list."""
        if self.needs_features and X is None:
            raise ValueError(f"policy {self.name!r} needs candidate features X")
        k = self._k(stats, X)
        bonus_arr, mask_arr = _check_adjustments(k, bonus, mask)
        return k, bonus_arr, mask_arr

    @abstractmethod
    def choose(
        self,
        stats: Sequence[ArmStats],
        rng: np.random.Generator,
        X: Any = None,
        bonus: np.ndarray | None = None,
        mask: np.ndarray | None = None,
    ) -> Choice:
        """Choose one candidate; see the module docstring for bonus and mask."""

    @abstractmethod
    def propensities(
        self,
        stats: Sequence[ArmStats],
        rng: np.random.Generator,
        X: Any = None,
        bonus: np.ndarray | None = None,
        mask: np.ndarray | None = None,
    ) -> np.ndarray:
        """Probability of choosing each candidate, shape ``(k,)``."""

    def propensity(
        self,
        stats: Sequence[ArmStats],
        index: int,
        rng: np.random.Generator,
        X: Any = None,
        bonus: np.ndarray | None = None,
        mask: np.ndarray | None = None,
    ) -> float:
        """Probability that this policy chooses candidate ``index``."""
        p = self.propensities(stats, rng, X=X, bonus=bonus, mask=mask)
        if not 0 <= index < p.size:
            raise ValueError(f"candidate index {index} is outside 0..{p.size - 1}")
        return float(p[index])


class ArgmaxPolicy(Policy):
    """A deterministic policy: the highest adjusted score wins, ties split."""

    @abstractmethod
    def scores(self, stats: Sequence[ArmStats], X: Any = None) -> np.ndarray:
        """The policy's score of each candidate before adjustments."""

    def _adjusted(self, stats, X, bonus, mask) -> tuple[np.ndarray, np.ndarray]:
        _, bonus_arr, mask_arr = self.adjustments(stats, X, bonus, mask)
        raw = np.asarray(self.scores(stats, X), dtype=np.float64)
        if np.any(np.isnan(raw)):
            raise ValueError(f"policy {self.name!r} produced NaN scores")
        adjusted = np.where(mask_arr, raw + bonus_arr, -np.inf)
        return raw, adjusted

    def choose(self, stats, rng, X=None, bonus=None, mask=None) -> Choice:
        raw, adjusted = self._adjusted(stats, X, bonus, mask)
        index, ties = argmax_choice(adjusted, rng)
        return Choice(index, 1.0 / ties.size, raw)

    def propensities(self, stats, rng, X=None, bonus=None, mask=None) -> np.ndarray:
        _, adjusted = self._adjusted(stats, X, bonus, mask)
        ties = np.flatnonzero(adjusted == adjusted.max())
        p = np.zeros(adjusted.size)
        p[ties] = 1.0 / ties.size
        return p
