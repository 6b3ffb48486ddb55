"""Sliding-window impression and click counts for many arms, O(1) per event.

A bandit that only trusts recent data follows posters whose appeal changes
(novelty wears off, a season starts). Counts are kept in a handful of buckets
per arm; sliding the window drops whole buckets and subtracts them from a
running total, so no event is ever replayed.

Two kinds of window:

``"time"``
    The window is the last ``length`` seconds, in buckets of
    ``length / buckets`` seconds aligned on multiples of that width. A bucket
    leaves the window once its whole span is older than ``length``, so the window
    covers between ``length - width`` and ``length`` seconds: up to one bucket of
    slack.
``"impressions"``
    The window is the arm's last ``length`` impressions, in buckets of
    ``ceil(length / buckets)`` impressions. The newest bucket fills up; when a
    new one starts, buckets beyond ``buckets`` are dropped. The window therefore
    holds between ``length - bucket_size`` and ``length`` impressions: up to one
    bucket of slack. It slides on the arm's own impressions, never on the clock,
    so :meth:`SlidingWindow.expire` has nothing to do for this kind.

Clicks are credited to the bucket of their impression's time (pass the
impression time as ``t``). A click whose impression has already left the window
adds nothing to the window; the learner still counts it in the all-time totals.
Clicks can therefore briefly exceed impressions inside a window (a click whose
impression was counted in a bucket that just left): readers clamp.

Examples
--------
>>> w = SlidingWindow("time", length=60.0, buckets=6)
>>> w.add("poster-a", t=0.0, impressions=1, clicks=0)
True
>>> w.add("poster-a", t=5.0, impressions=0, clicks=1)
True
>>> w.totals("poster-a", now=30.0)
(1, 1)
>>> w.expire(now=75.0)
['poster-a']
>>> w.totals("poster-a", now=75.0)
(0, 0)
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Hashable, Iterable, Sequence
from typing import Any, Literal

__all__ = ["SlidingWindow"]

# A bucket is a mutable list [key, impressions, clicks]; key is the epoch
# (time kind) or the time of the bucket's first impression (impressions kind).
_KEY, _N, _C = 0, 1, 2


class SlidingWindow:
    """Bucketed sliding-window counts for many arms.

    Parameters
    ----------
    kind
        ``"time"`` (window of ``length`` seconds) or ``"impressions"`` (window of
        each arm's last ``length`` impressions).
    length
        Window length in seconds or impressions.
    buckets
        Number of buckets the window is kept in (the approximation step).

    Attributes
    ----------
    touched_buckets
        Running count of buckets read or written; it lets tests check that each
        event costs a bounded amount of work.
    """

    def __init__(
        self, kind: Literal["time", "impressions"], length: float, buckets: int
    ) -> None:
        if kind not in ("time", "impressions"):
            raise ValueError(
                f"window kind must be 'time' or 'impressions', got {kind!r}"
            )
        if not (
            isinstance(length, int | float) and math.isfinite(length) and length > 0
        ):
            raise ValueError(f"window length must be a positive number, got {length!r}")
        if not isinstance(buckets, int) or buckets < 1:
            raise ValueError(f"window buckets must be a positive int, got {buckets!r}")
        self.kind = kind
        self.length = float(length)
        self.buckets = buckets
        self.width = self.length / buckets
        self.bucket_size = max(1, math.ceil(self.length / buckets))
        self.touched_buckets = 0
        self._clock = -math.inf
        self._clock_cutoff = -math.inf
        self._arms: dict[Hashable, deque[list]] = {}
        self._totals: dict[Hashable, list[int]] = {}
        # Time kind only: epoch -> arms holding a bucket of that epoch, plus a
        # heap of the epochs present, so expiry visits expired buckets only.
        self._epoch_to_arms: dict[int, list[Hashable]] = {}
        self._epochs: list[int] = []

    def __len__(self) -> int:
        return len(self._arms)

    def __contains__(self, arm: Hashable) -> bool:
        return arm in self._arms

    # -- time kind helpers -------------------------------------------------------

    def _epoch(self, t: float) -> int:
        return math.floor(t / self.width)

    def _cutoff(self, now: float) -> int:
        """Buckets with an epoch at or below this have left the window."""
        return self._epoch(now) - self.buckets

    def _index(self, epoch: int, arm: Hashable) -> None:
        arms = self._epoch_to_arms.get(epoch)
        if arms is None:
            self._epoch_to_arms[epoch] = [arm]
            heapq.heappush(self._epochs, epoch)
        else:
            arms.append(arm)

    # -- events ------------------------------------------------------------------

    def add(
        self, arm: Hashable, t: float, impressions: int = 1, clicks: int = 0
    ) -> bool:
        """Count impressions and clicks of ``arm`` that happened at time ``t``.

        For a click, ``t`` is the time of the impression it answers.

        Returns
        -------
        bool
            Whether the counts landed inside the window (``False`` when the
            impression time has already left it).

        Raises
        ------
        ValueError
            For negative counts or a non-finite time.
        """
        if impressions < 0 or clicks < 0:
            raise ValueError(
                f"window counts must be >= 0, got impressions={impressions} "
                f"clicks={clicks} for arm {arm!r}"
            )
        if not math.isfinite(t):
            raise ValueError(f"event time must be finite, got {t!r} for arm {arm!r}")
        if impressions == 0 and clicks == 0:
            return arm in self._arms
        if self.kind == "time":
            return self._add_time(arm, t, impressions, clicks)
        return self._add_impressions(arm, t, impressions, clicks)

    def _add_time(self, arm: Hashable, t: float, impressions: int, clicks: int) -> bool:
        if impressions:
            if t > self._clock:
                self._clock = t
                self._clock_cutoff = self._cutoff(t)
        epoch = math.floor(t / self.width)
        if epoch <= self._clock_cutoff:
            return False
        dq = self._arms.get(arm)
        if dq is None:
            dq = self._arms[arm] = deque()
            self._totals[arm] = [0, 0]
        elif dq[-1][_KEY] == epoch:  # the usual case: the arm's newest bucket
            self.touched_buckets += 1
            bucket = dq[-1]
            bucket[_N] += impressions
            bucket[_C] += clicks
            totals = self._totals[arm]
            totals[0] += impressions
            totals[1] += clicks
            if dq[0][_KEY] <= self._clock_cutoff:
                self._drop_expired(arm, dq, totals)
            return True
        bucket = None
        # Events arrive nearly in time order: the bucket is almost always the
        # newest one, and at most `buckets` are ever searched.
        for position in range(len(dq) - 1, -1, -1):
            self.touched_buckets += 1
            key = dq[position][_KEY]
            if key == epoch:
                bucket = dq[position]
                break
            if key < epoch:
                bucket = [epoch, 0, 0]
                dq.insert(position + 1, bucket)
                self._index(epoch, arm)
                break
        if bucket is None:
            bucket = [epoch, 0, 0]
            dq.appendleft(bucket)
            self._index(epoch, arm)
        bucket[_N] += impressions
        bucket[_C] += clicks
        totals = self._totals[arm]
        totals[0] += impressions
        totals[1] += clicks
        # Drop this arm's own expired buckets now, so its memory stays bounded
        # even if expire() runs rarely; each bucket is dropped once.
        if dq[0][_KEY] <= self._clock_cutoff:
            self._drop_expired(arm, dq, totals)
        return True

    def _drop_expired(self, arm: Hashable, dq: deque[list], totals: list[int]) -> None:
        while dq and dq[0][_KEY] <= self._clock_cutoff:
            old = dq.popleft()
            self.touched_buckets += 1
            totals[0] -= old[_N]
            totals[1] -= old[_C]
        if not dq:
            self._drop(arm)

    def _add_impressions(
        self, arm: Hashable, t: float, impressions: int, clicks: int
    ) -> bool:
        dq = self._arms.get(arm)
        if dq is None:
            dq = self._arms[arm] = deque()
            self._totals[arm] = [0, 0]
        totals = self._totals[arm]
        while impressions:
            if not dq or dq[-1][_N] >= self.bucket_size:
                dq.append([t, 0, 0])
                while len(dq) > self.buckets:
                    old = dq.popleft()
                    self.touched_buckets += 1
                    totals[0] -= old[_N]
                    totals[1] -= old[_C]
            bucket = dq[-1]
            self.touched_buckets += 1
            take = min(impressions, self.bucket_size - bucket[_N])
            bucket[_N] += take
            totals[0] += take
            impressions -= take
        landed = True
        if clicks:
            target: list | None = None
            for position in range(len(dq) - 1, -1, -1):
                self.touched_buckets += 1
                if dq[position][_KEY] <= t:
                    target = dq[position]
                    break
            if target is None and not dq:
                # A click whose impression this window never saw (lost or late).
                target = [t, 0, 0]
                dq.append(target)
            if target is None:
                landed = False  # its impression is older than the window
            else:
                target[_C] += clicks
                totals[1] += clicks
        if not dq:
            self._drop(arm)
        return landed

    def add_many(
        self,
        arms: Sequence[Hashable],
        times: Iterable[float],
        impressions: Iterable[int],
        clicks: Iterable[int],
    ) -> int:
        """Call :meth:`add` for each event; returns how many landed in the window.

        Examples
        --------
        >>> w = SlidingWindow("impressions", length=10, buckets=2)
        >>> w.add_many(["a", "a", "b"], [0.0, 1.0, 2.0], [1, 1, 1], [0, 1, 0])
        3
        >>> w.totals("a", now=2.0)
        (2, 1)
        """
        landed = 0
        for arm, t, n, c in zip(arms, times, impressions, clicks, strict=True):
            landed += self.add(arm, float(t), int(n), int(c))
        return landed

    # -- reading and sliding -----------------------------------------------------

    def totals(self, arm: Hashable, now: float) -> tuple[int, int]:
        """Window impressions and clicks of ``arm`` as of ``now``.

        Buckets that have left the window by ``now`` are left out without being
        removed; :meth:`expire` removes them and reports the arm.
        """
        dq = self._arms.get(arm)
        if dq is None:
            return (0, 0)
        n, c = self._totals[arm]
        if self.kind == "time":
            cutoff = self._cutoff(max(now, self._clock))
            for bucket in dq:
                if bucket[_KEY] > cutoff:
                    break
                self.touched_buckets += 1
                n -= bucket[_N]
                c -= bucket[_C]
        return (n, c)

    def expire(self, now: float) -> list[Hashable]:
        """Drop buckets that left the window by ``now``; list the arms changed.

        The cost is proportional to the number of expired buckets. The window's
        clock only moves forward: an earlier ``now`` than already seen expires
        nothing new.

        Examples
        --------
        >>> w = SlidingWindow("time", length=10.0, buckets=2)
        >>> _ = w.add("a", 0.0, 1, 0), w.add("b", 9.0, 1, 0)
        >>> w.expire(10.0), w.expire(15.0)
        (['a'], ['b'])
        """
        if self.kind != "time":
            return []
        if now > self._clock:
            self._clock = now
            self._clock_cutoff = self._cutoff(now)
        cutoff = self._clock_cutoff
        changed: dict[Hashable, None] = {}
        while self._epochs and self._epochs[0] <= cutoff:
            epoch = heapq.heappop(self._epochs)
            for arm in self._epoch_to_arms.pop(epoch, ()):
                dq = self._arms.get(arm)
                if dq is None:
                    continue
                totals = self._totals[arm]
                while dq and dq[0][_KEY] <= cutoff:
                    old = dq.popleft()
                    self.touched_buckets += 1
                    totals[0] -= old[_N]
                    totals[1] -= old[_C]
                    changed[arm] = None
                if not dq:
                    self._drop(arm)
        return list(changed)

    def _drop(self, arm: Hashable) -> None:
        self._arms.pop(arm, None)
        self._totals.pop(arm, None)

    def discard(self, arm: Hashable) -> None:
        """Forget an arm (a retired poster)."""
        self._drop(arm)

    # -- persistence -------------------------------------------------------------

    def state(self, arm: Hashable) -> list[float]:
        """Compact state of an arm's buckets: ``[key, n, c, key, n, c, ...]``.

        Keys are integer epochs for the time kind and first-impression times
        for the impressions kind. An unknown arm gives ``[]``.

        Examples
        --------
        >>> w = SlidingWindow("time", length=60.0, buckets=6)
        >>> _ = w.add("a", 25.0, 3, 1)
        >>> w.state("a")
        [2, 3, 1]
        """
        dq = self._arms.get(arm)
        if dq is None:
            return []
        return [value for bucket in dq for value in bucket]

    def restore(self, arm: Hashable, state: Sequence[float]) -> None:
        """Replace an arm's buckets with a :meth:`state` result.

        Raises
        ------
        ValueError
            For a state whose length is not a multiple of three, negative
            counts, or keys out of order.
        """
        values = list(state)
        if len(values) % 3:
            raise ValueError(
                f"window state of {arm!r} must hold triples, got {values!r}"
            )
        buckets: list[list[Any]] = [values[i : i + 3] for i in range(0, len(values), 3)]
        for previous, bucket in zip(buckets, buckets[1:], strict=False):
            if bucket[_KEY] <= previous[_KEY] and self.kind == "time":
                raise ValueError(f"window state of {arm!r} has epochs out of order")
        if any(b[_N] < 0 or b[_C] < 0 for b in buckets):
            raise ValueError(f"window state of {arm!r} has negative counts")
        self._drop(arm)
        if not buckets:
            return
        if self.kind == "time":
            buckets = [[int(b[_KEY]), int(b[_N]), int(b[_C])] for b in buckets]
            for bucket in buckets:
                self._index(int(bucket[_KEY]), arm)
        else:
            buckets = [[b[_KEY], int(b[_N]), int(b[_C])] for b in buckets]
            buckets = buckets[-self.buckets :]
        self._arms[arm] = deque(buckets)
        n = sum(int(b[_N]) for b in buckets)
        c = sum(int(b[_C]) for b in buckets)
        self._totals[arm] = [n, c]
