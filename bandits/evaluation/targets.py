"""Target policies whose value off-policy evaluation estimates.

A target policy gives, for every logged decision, a probability for each of
its candidate actions, aligned with the log's candidate pairs
(:class:`~bandits.evaluation.feedback.LoggedBandit`). Any function mapping
``(context row, candidate actions) -> probabilities`` becomes one with
:class:`FunctionPolicy`.

Examples
--------
>>> import numpy as np
>>> from bandits.evaluation.feedback import LoggedBandit
>>> log = LoggedBandit.from_arrays(np.array([0, 1, 1]), np.array([0, 1, 1.0]),
...                                np.full(3, 0.5), 2)
>>> greedy = GreedyPolicy.fit(log)
>>> greedy.probabilities(log).reshape(3, 2)[0].tolist()
[0.0, 1.0]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from bandits.evaluation.feedback import LoggedBandit

__all__ = [
    "EpsilonGreedyPolicy",
    "FunctionPolicy",
    "GreedyPolicy",
    "LoggingPolicy",
    "TargetPolicy",
    "UniformPolicy",
    "check_probabilities",
]


class TargetPolicy(Protocol):
    """What an off-policy estimator needs from a policy."""

    @property
    def name(self) -> str:
        """Name shown in reports."""
        ...

    @property
    def deterministic(self) -> bool:
        """Whether every row puts probability 1 on one candidate."""
        ...

    def probabilities(self, log: LoggedBandit) -> np.ndarray:
        """Probability of each candidate pair of ``log``; rows sum to 1."""
        ...


def check_probabilities(log: LoggedBandit, probs: np.ndarray, name: str) -> None:
    """Raise ValueError unless ``probs`` is a distribution over each row."""
    probs = np.asarray(probs, dtype=float)
    if probs.shape != log.pair_row.shape:
        raise ValueError(
            f"policy {name!r} gave {probs.shape} probabilities for"
            f" {log.pair_row.size} candidate pairs"
        )
    if (probs < -1e-12).any() or not np.isfinite(probs).all():
        raise ValueError(f"policy {name!r} gave negative or non-finite probabilities")
    sums = log.row_sum(probs)
    if log.n and not np.allclose(sums, 1.0, atol=1e-6):
        worst = int(np.argmax(np.abs(sums - 1.0)))
        raise ValueError(
            f"policy {name!r}: probabilities of row {worst} sum to {sums[worst]:.6f}"
        )


@dataclass(frozen=True)
class UniformPolicy:
    """Every candidate equally likely."""

    name: str = "uniform"
    deterministic: bool = False

    def probabilities(self, log: LoggedBandit) -> np.ndarray:
        """``1 / candidates`` for each pair."""
        return 1.0 / log.candidate_counts()[log.pair_row]


@dataclass(frozen=True)
class LoggingPolicy:
    """The policy that wrote the log, as far as the log tells it.

    The logged action gets its logged propensity; the rest of the mass is
    spread evenly over the other candidates. Inverse-propensity weights are
    then exactly 1. For a uniform logger (the Open Bandit random sample) this
    is the policy itself; for others the spread over unlogged actions is a
    guess that only the direct-method part of doubly robust uses.
    """

    name: str = "logging"
    deterministic: bool = False

    def probabilities(self, log: LoggedBandit) -> np.ndarray:
        """Logged propensity on the logged pair, the remainder spread evenly."""
        others = np.maximum(log.candidate_counts() - 1, 1)
        rest = (1.0 - log.propensities) / others
        probs = rest[log.pair_row].copy()
        probs[log.logged_pair] = log.propensities
        single = log.candidate_counts() == 1
        probs[log.logged_pair[single]] = 1.0
        return probs


@dataclass(frozen=True)
class GreedyPolicy:
    """Always the candidate with the highest estimated click-through rate.

    Scores are posterior means ``(clicks + a) / (impressions + a + b)`` per
    action, fitted on a log (for example the first half of the data); ties go
    to the lowest action code, which is the first name in sorted order for logs
    built from DataFrames.
    """

    action_to_score: Mapping[str, float]
    default_score: float
    name: str = "greedy"
    deterministic: bool = True

    @classmethod
    def fit(
        cls, log: LoggedBandit, prior: tuple[float, float] = (1.0, 1.0)
    ) -> GreedyPolicy:
        """Fit per-action click-through rates on ``log``."""
        shown = np.bincount(log.actions, minlength=log.n_actions)
        clicks = np.bincount(log.actions, weights=log.rewards, minlength=log.n_actions)
        scores = (clicks + prior[0]) / (shown + prior[0] + prior[1])
        return cls(
            action_to_score=dict(zip(log.action_names, scores.tolist(), strict=True)),
            default_score=prior[0] / (prior[0] + prior[1]),
        )

    def probabilities(self, log: LoggedBandit) -> np.ndarray:
        """1 on each row's best-scored candidate, 0 elsewhere."""
        per_action = np.array(
            [self.action_to_score.get(a, self.default_score) for a in log.action_names]
        )
        score = per_action[log.pair_action]
        if not log.n:
            return np.zeros(0)
        # Pairs are grouped by row: reduce each row's slice without sorting.
        starts = np.searchsorted(log.pair_row, np.arange(log.n))
        best = np.maximum.reduceat(score, starts)[log.pair_row]
        tied = score == best
        first_code = np.minimum.reduceat(
            np.where(tied, log.pair_action, np.iinfo(np.int64).max), starts
        )[log.pair_row]
        return (tied & (log.pair_action == first_code)).astype(float)


@dataclass(frozen=True)
class EpsilonGreedyPolicy:
    """A greedy policy that explores a uniform candidate with rate ``epsilon``."""

    greedy: GreedyPolicy
    epsilon: float = 0.1
    name: str = "epsilon-greedy"
    deterministic: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon must lie in [0, 1], got {self.epsilon}")

    def probabilities(self, log: LoggedBandit) -> np.ndarray:
        """``(1 - epsilon) * greedy + epsilon * uniform``."""
        uniform = UniformPolicy().probabilities(log)
        return (1 - self.epsilon) * self.greedy.probabilities(log) + (
            self.epsilon * uniform
        )


@dataclass(frozen=True)
class FunctionPolicy:
    """A policy given as ``fn(context, candidates) -> probabilities``.

    ``context`` is the row's context features as a dict and ``candidates`` the
    names of its candidate actions; ``fn`` returns one probability for each.
    It is called once per logged decision, so it suits logs up to about a
    million rows.

    Examples
    --------
    >>> import numpy as np
    >>> from bandits.evaluation.feedback import LoggedBandit
    >>> log = LoggedBandit.from_arrays(np.array([0]), np.array([1.0]),
    ...                                np.array([0.5]), 2)
    >>> FunctionPolicy(lambda ctx, cands: [1.0, 0.0]).probabilities(log).tolist()
    [1.0, 0.0]
    """

    fn: Callable[[Mapping[str, Any], Sequence[str]], Sequence[float]]
    name: str = "function"
    deterministic: bool = False

    def probabilities(self, log: LoggedBandit) -> np.ndarray:
        """Call ``fn`` on each row and concatenate the answers."""
        records = log.contexts.to_dict("records") if log.contexts.shape[1] else None
        bounds = np.concatenate([[0], np.cumsum(log.candidate_counts())])
        out = np.empty(log.pair_row.size)
        for i in range(log.n):
            start, stop = bounds[i], bounds[i + 1]
            names = list(log.action_names[log.pair_action[start:stop]])
            context = records[i] if records is not None else {}
            probs = np.asarray(self.fn(context, names), dtype=float)
            if probs.shape != (stop - start,):
                raise ValueError(
                    f"policy {self.name!r} returned {probs.shape} probabilities"
                    f" for {stop - start} candidates at row {i}"
                )
            out[start:stop] = probs
        return out
