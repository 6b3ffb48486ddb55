"""UCB1: optimism in the face of uncertainty over click counts."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from bandits.policies.base import ArgmaxPolicy, check_counts
from bandits.state import ArmStats

__all__ = ["UCB1"]


class UCB1(ArgmaxPolicy):
    """Score ``ctr + sqrt(c * ln(N) / n)``; unexplored candidates score +inf.

    ``n`` is a candidate's impressions, ``ctr`` its clicks over impressions and
    ``N`` the impressions of all candidates of the request together (the
    candidates compete among themselves). With ``c = 2`` this is the classic
    UCB1 index. Candidates without impressions score ``+inf`` and are tried
    first, several of them split evenly. Deterministic given the counts, so a
    busy gateway shows the same poster until counts change: it relies on the
    learner's updates to move on.

    Parameters
    ----------
    c
        Exploration constant.
    use_window
        Use the sliding-window counts instead of all-time counts.

    Examples
    --------
    >>> from bandits.state import ArmStats
    >>> stats = [ArmStats(100, 5, 100, 5), ArmStats(0, 0, 0, 0)]
    >>> UCB1().scores(stats)[1]
    np.float64(inf)
    >>> UCB1().choose(stats, np.random.default_rng(0)).index
    1
    """

    name = "ucb1"

    def __init__(self, c: float = 2.0, use_window: bool = True) -> None:
        if not c >= 0:
            raise ValueError(f"UCB1 c must be >= 0, got {c}")
        self.c = float(c)
        self.use_window = use_window

    @classmethod
    def _test_params(cls) -> Iterator[dict[str, Any]]:
        yield {}
        yield {"c": 0.5, "use_window": False}

    def scores(self, stats: Sequence[ArmStats], X: Any = None) -> np.ndarray:
        n, c = check_counts(stats, self.use_window)
        total = max(n.sum(), 1.0)
        seen = n > 0
        out = np.full(n.size, np.inf)
        out[seen] = c[seen] / n[seen] + np.sqrt(self.c * np.log(total) / n[seen])
        return out
