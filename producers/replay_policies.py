"""The demo's four policies, replayed offline on the Open Bandit log.

Each policy picks one of the log's items for a round's user context and learns
only from the rounds where its pick equals the logged item (the replay
method). Because the logger picked uniformly at random, those rounds are an
unbiased sample of what the policy would have met, so matched clicks over
matched rounds estimates the policy's click-through rate on real clicks.

The policies use keyart's shared bandit maths (:mod:`bandits`): the sliding
window of Thompson sampling, LinUCB over crossed user x item features, and the
online factorization machine. The gateway applies business rules on top of
these; the replay does not, since the log has no rows or placements to apply
them to.

Examples
--------
>>> from producers.replay import LoggedRound, ObdLog
>>> log = ObdLog([LoggedRound(i, i * 1000, i % 2, 1, i % 2, 0.5, {}, "u")
...               for i in range(200)], n_items=2)
>>> result = replay(log, FixedPolicy(1))
>>> result.matched, result.clicks
(100, 100)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from producers.replay import ObdLog

__all__ = [
    "FixedPolicy",
    "FMPolicy",
    "LinUCBPolicy",
    "ReplayPolicy",
    "ReplayResult",
    "ThompsonPolicy",
    "UniformPolicy",
    "demo_policies",
    "replay",
]


class ReplayPolicy(Protocol):
    """What the replay needs of a policy."""

    name: str

    def select(self, context: Mapping[str, float], t_s: float) -> int: ...

    def update(
        self, context: Mapping[str, float], item: int, click: int, t_s: float
    ) -> None: ...


@dataclass
class ReplayResult:
    """Matched rounds and clicks of one policy, with the running curve."""

    policy: str
    rounds: int
    matched: int = 0
    clicks: int = 0
    curve: list[tuple[int, int, int]] = field(default_factory=list)
    """(round index, matched so far, clicks so far) at every matched round."""

    @property
    def ctr(self) -> float:
        return self.clicks / self.matched if self.matched else 0.0


def replay(log: ObdLog, policy: ReplayPolicy) -> ReplayResult:
    """Run the replay method of ``policy`` over the logged rounds in time order."""
    result = ReplayResult(policy.name, len(log.rounds))
    for item in log.rounds:
        t_s = item.time_ms / 1000.0
        if policy.select(item.context, t_s) != item.item_id:
            continue
        result.matched += 1
        result.clicks += item.click
        result.curve.append((item.index, result.matched, result.clicks))
        policy.update(item.context, item.item_id, item.click, t_s)
    return result


class UniformPolicy:
    """Uniformly random choice: the control, and the logger itself."""

    def __init__(self, n_items: int, seed: int, name: str = "random") -> None:
        self.name = name
        self.n_items = n_items
        self.generator = np.random.default_rng(seed)

    def select(self, context: Mapping[str, float], t_s: float) -> int:
        return int(self.generator.integers(self.n_items))

    def update(
        self, context: Mapping[str, float], item: int, click: int, t_s: float
    ) -> None:
        return None


class FixedPolicy:
    """Always the same item (checks the replay: its CTR is the item's logged CTR)."""

    def __init__(self, item: int) -> None:
        self.name = f"fixed-{item}"
        self.item = item

    def select(self, context: Mapping[str, float], t_s: float) -> int:
        return self.item

    def update(
        self, context: Mapping[str, float], item: int, click: int, t_s: float
    ) -> None:
        return None


class ThompsonPolicy:
    """Beta-Bernoulli Thompson sampling over sliding-window counts."""

    def __init__(
        self,
        n_items: int,
        seed: int,
        window_s: float = 86_400.0,
        buckets: int = 24,
        prior: tuple[float, float] = (1.0, 1.0),
        name: str = "thompson",
    ) -> None:
        from bandits.window import SlidingWindow

        self.name = name
        self.n_items = n_items
        self.prior = prior
        self.window = SlidingWindow("time", length=window_s, buckets=buckets)
        self.generator = np.random.default_rng(seed)

    def select(self, context: Mapping[str, float], t_s: float) -> int:
        counts = np.array([self.window.totals(i, t_s) for i in range(self.n_items)])
        n, c = counts[:, 0], np.minimum(counts[:, 1], counts[:, 0])
        draws = self.generator.beta(self.prior[0] + c, self.prior[1] + n - c)
        return int(np.argmax(draws))

    def update(
        self, context: Mapping[str, float], item: int, click: int, t_s: float
    ) -> None:
        self.window.add(item, t=t_s, impressions=1, clicks=click)


class LinUCBPolicy:
    """LinUCB over crossed user context x item features (shared model)."""

    def __init__(
        self,
        item_features: Mapping[int, Mapping[str, float]],
        alpha: float = 1.0,
        name: str = "linucb",
    ) -> None:
        from bandits.features import FEATURE_DIM
        from bandits.linucb import LinUCB

        self.name = name
        self.items = sorted(item_features)
        self.item_features = [dict(item_features[i]) for i in self.items]
        self.model = LinUCB(dim=FEATURE_DIM, alpha=alpha)
        self._context_to_x: dict[tuple, np.ndarray] = {}

    def _x(self, context: Mapping[str, float]) -> np.ndarray:
        from bandits.features import cross_features_many

        # The log's contexts repeat (four categorical features), so the crossed
        # matrices are built once per distinct context.
        key = tuple(sorted(context.items()))
        x = self._context_to_x.get(key)
        if x is None:
            x = cross_features_many(context, self.item_features)
            self._context_to_x[key] = x
        return x

    def select(self, context: Mapping[str, float], t_s: float) -> int:
        ucb = self.model.ucb(self._x(context))
        return self.items[int(np.argmax(ucb))]

    def update(
        self, context: Mapping[str, float], item: int, click: int, t_s: float
    ) -> None:
        x = self._x(context)[self.items.index(item)]
        self.model.update(x, float(click))


class FMPolicy:
    """Online factorization machine, epsilon-greedy on its click probability."""

    def __init__(
        self,
        item_features: Mapping[int, Mapping[str, float]],
        seed: int,
        epsilon: float = 0.1,
        name: str = "fm",
    ) -> None:
        from bandits.fm import OnlineFM

        self.name = name
        self.items = sorted(item_features)
        self.item_features = {i: dict(item_features[i]) for i in self.items}
        self.model = OnlineFM(n_factors=4, seed=seed, learning_rate=0.05)
        self.epsilon = epsilon
        self.generator = np.random.default_rng(seed)
        # The model only changes on matched rounds, so scores are cached per
        # (context, model version) and scored with the numpy scorer.
        self._scores: dict[tuple, np.ndarray] = {}
        self._scorer_version = -1
        self._scorer: object = None

    def _x(self, context: Mapping[str, float], item: int) -> dict[str, float]:
        from bandits.fm import fm_features

        return fm_features(context, self.item_features[item], poster_id=str(item))

    def _score(self, context: Mapping[str, float]) -> np.ndarray:
        from bandits.fm import FMScorer

        if self._scorer_version != self.model.version:
            self._scorer = FMScorer.from_export(self.model.export())
            self._scorer_version = self.model.version
            self._scores.clear()
        key = tuple(sorted(context.items()))
        scores = self._scores.get(key)
        if scores is None:
            xs = [self._x(context, i) for i in self.items]
            scores = self._scorer.predict_proba(xs)  # type: ignore[attr-defined]
            self._scores[key] = scores
        return scores

    def select(self, context: Mapping[str, float], t_s: float) -> int:
        if self.generator.random() < self.epsilon:
            return self.items[int(self.generator.integers(len(self.items)))]
        scores = self._score(context)
        best = np.flatnonzero(np.isclose(scores, scores.max()))
        return self.items[int(self.generator.choice(best))]

    def update(
        self, context: Mapping[str, float], item: int, click: int, t_s: float
    ) -> None:
        self.model.learn_one(self._x(context, item), bool(click))


def demo_policies(
    log: ObdLog, item_features: Mapping[int, Mapping[str, float]], seed: int
) -> list[ReplayPolicy]:
    """The demo's experiment split, as replay policies."""
    return [
        UniformPolicy(log.n_items, seed),
        ThompsonPolicy(log.n_items, seed + 1),
        LinUCBPolicy(item_features),
        FMPolicy(item_features, seed + 3),
    ]
