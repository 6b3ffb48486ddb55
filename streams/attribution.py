"""Credit each click to its impression, by rule, in bounded memory.

Rules (event times in milliseconds; ``W`` is ``attribution_window_s``):

* A click is **credited** to its impression when
  ``-CLOCK_SKEW_MS <= click_time - impression_time <= W``. Client clocks
  disagree a little, hence the small negative allowance.
* A click whose ``click_time - impression_time`` falls outside that range is
  **after_window** and earns nothing.
* An impression earns at most one click (the reward is Bernoulli): a second
  click id on an already credited impression is a **repeat**.
* A click naming another poster than its impression is a **mismatch**.
* A click that arrives before its impression (the two topics are read side by
  side, so this happens) **waits**. When the impression arrives the click is
  judged as above (outcome **credited_after_wait** when credited). A click
  still waiting once the partition's clock passes ``click_time + GRACE_MS``,
  or pushed out because more than ``max_waiting`` clicks wait, is
  **no_impression**.
* An impression is remembered until the clock passes
  ``impression_time + W + GRACE_MS``; then it expires. Expired impressions
  that were never clicked are the negatives the click model learns from.

The clock is the newest impression time seen on the partition, so the rules
do not depend on when the worker runs. It never passes
:attr:`Attribution.clock_limit`: the learner sets it to its wall clock plus
:data:`CLOCK_LEAD_MS` before each batch. Events may be dated
further ahead (up to ``max_clock_skew_s``, as the collector allows) and keep
their times, but one of them no longer pulls the clock minutes forward, which
gave up every click waiting a moment for its impression and expired windows
early.

Waiting clicks are given up in order of their event time (a heap), not of
their arrival, so one click dated late cannot hold back the ones behind it.

Examples
--------
>>> a = Attribution(window_ms=60_000)
>>> a.add_impression("i1", 0, ("v", "p"), "p", b"...")
[]
>>> a.add_click("c1", "i1", 5_000, "p", b"...")[0]
'credited'
>>> a.add_click("c2", "i1", 6_000, "p", b"...")[0]
'repeat'
>>> a.add_click("c3", "i9", 7_000, "p", b"...")[0]
'waiting'
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from dataclasses import dataclass

__all__ = [
    "CLOCK_LEAD_MS",
    "CLOCK_SKEW_MS",
    "GRACE_MS",
    "OUTCOMES",
    "Attribution",
    "Pending",
    "WaitingClick",
]

CLOCK_SKEW_MS = 60_000
"""How far a click's time may precede its impression's and still be credited."""

GRACE_MS = 60_000
"""Extra event time an impression or a waiting click is kept for late arrivals."""

CLOCK_LEAD_MS = 5_000
"""Most a partition's clock may run ahead of the learner's wall clock: room for
the ordinary disagreement of client, collector and learner clocks, and far
below :data:`GRACE_MS`, so a click waiting for its impression is never given
up because of an event dated ahead."""

OUTCOMES = (
    "credited",
    "credited_after_wait",
    "after_window",
    "repeat",
    "mismatch",
    "waiting",
    "no_impression",
)


@dataclass(slots=True)
class Pending:
    """An impression that may still be clicked."""

    time_ms: int
    arm: tuple[str, str]
    poster_id: str
    payload: bytes
    credited: bool = False


@dataclass(slots=True)
class WaitingClick:
    """A click that arrived before its impression."""

    click_id: str
    impression_id: str
    time_ms: int
    poster_id: str
    payload: bytes


class Attribution:
    """Pending impressions and waiting clicks of one partition.

    Parameters
    ----------
    window_ms
        The attribution window.
    max_waiting
        Most clicks kept waiting for their impression; the oldest beyond it
        are given up as ``no_impression``.

    Attributes
    ----------
    dirty_pending, dirty_waiting
        Ids changed since :meth:`take_changes` (to persist); a ``None`` value
        means the entry was removed.
    clock_limit
        The clock never moves past this (``None``: no limit).
    """

    def __init__(self, window_ms: int, max_waiting: int = 100_000) -> None:
        if window_ms <= 0:
            raise ValueError(f"attribution window must be > 0 ms, got {window_ms}")
        self.window_ms = int(window_ms)
        self.max_waiting = max_waiting
        self.clock = 0
        self.clock_limit: int | None = None
        self._by_time: list[tuple[int, int, WaitingClick]] = []
        self._seq = itertools.count()
        self.pending: OrderedDict[str, Pending] = OrderedDict()
        self.waiting: OrderedDict[str, WaitingClick] = OrderedDict()
        self._impression_to_waiting: dict[str, list[str]] = {}
        self.dirty_pending: dict[str, Pending | None] = {}
        self.dirty_waiting: dict[str, WaitingClick | None] = {}

    def _judge(self, pending: Pending, time_ms: int, poster_id: str) -> str:
        if pending.credited:
            return "repeat"
        if poster_id != pending.poster_id:
            return "mismatch"
        delta = time_ms - pending.time_ms
        if not -CLOCK_SKEW_MS <= delta <= self.window_ms:
            return "after_window"
        return "credited"

    def add_impression(
        self,
        impression_id: str,
        time_ms: int,
        arm: tuple[str, str],
        poster_id: str,
        payload: bytes,
    ) -> list[tuple[str, Pending, WaitingClick]]:
        """Remember an impression; judge the clicks that waited for it.

        Returns
        -------
        list
            ``(outcome, pending, click)`` for each click that was waiting.
        """
        pending = Pending(time_ms, arm, poster_id, payload)
        self.pending[impression_id] = pending
        self.dirty_pending[impression_id] = pending
        if time_ms > self.clock:
            limit = self.clock_limit
            self.clock = (
                time_ms if limit is None else max(self.clock, min(time_ms, limit))
            )
        judged = []
        for click_id in self._impression_to_waiting.pop(impression_id, ()):
            click = self.waiting.pop(click_id)
            self.dirty_waiting[click_id] = None
            outcome = self._judge(pending, click.time_ms, click.poster_id)
            if outcome == "credited":
                pending.credited = True
                outcome = "credited_after_wait"
            judged.append((outcome, pending, click))
        return judged

    def add_click(
        self,
        click_id: str,
        impression_id: str,
        time_ms: int,
        poster_id: str,
        payload: bytes,
    ) -> tuple[str, Pending | None]:
        """Judge a click; returns the outcome and the impression it names."""
        pending = self.pending.get(impression_id)
        if pending is None:
            click = WaitingClick(click_id, impression_id, time_ms, poster_id, payload)
            self._hold(click)
            return "waiting", None
        outcome = self._judge(pending, time_ms, poster_id)
        if outcome == "credited":
            pending.credited = True
            self.dirty_pending[impression_id] = pending
        return outcome, pending

    def _hold(self, click: WaitingClick) -> None:
        self.waiting[click.click_id] = click
        heapq.heappush(self._by_time, (click.time_ms, next(self._seq), click))
        self.dirty_waiting[click.click_id] = click
        self._impression_to_waiting.setdefault(click.impression_id, []).append(
            click.click_id
        )

    def _drop_waiting(self, click: WaitingClick) -> None:
        self.dirty_waiting[click.click_id] = None
        ids = self._impression_to_waiting.get(click.impression_id)
        if ids is not None:
            ids.remove(click.click_id)
            if not ids:
                del self._impression_to_waiting[click.impression_id]

    def expire(self) -> tuple[list[tuple[str, Pending]], int]:
        """Forget what the clock has passed.

        Returns
        -------
        tuple
            The expired impressions that were never credited (with their
            ids), and the number
            of waiting clicks given up (``no_impression``).
        """
        unclicked: list[tuple[str, Pending]] = []
        horizon = self.clock - self.window_ms - GRACE_MS
        # Impressions arrive in near time order; stop at the first young one.
        while self.pending:
            impression_id, pending = next(iter(self.pending.items()))
            if pending.time_ms >= horizon:
                break
            self.pending.popitem(last=False)
            self.dirty_pending[impression_id] = None
            if not pending.credited:
                unclicked.append((impression_id, pending))
        # Waiting clicks leave oldest event time first; entries of clicks
        # already judged are skipped (removed lazily).
        given_up = 0
        heap, waiting = self._by_time, self.waiting
        while heap:
            time_ms, _, click = heap[0]
            if waiting.get(click.click_id) is not click:
                heapq.heappop(heap)
                continue
            too_many = len(waiting) > self.max_waiting
            if not too_many and time_ms + GRACE_MS >= self.clock:
                break
            heapq.heappop(heap)
            del waiting[click.click_id]
            self._drop_waiting(click)
            given_up += 1
        if len(heap) > 2 * len(waiting) + 1024:
            self._by_time = [e for e in heap if waiting.get(e[2].click_id) is e[2]]
            heapq.heapify(self._by_time)
        return unclicked, given_up

    def take_changes(
        self,
    ) -> tuple[dict[str, Pending | None], dict[str, WaitingClick | None]]:
        """Changes since the last call, for persisting; then forget them."""
        pending, self.dirty_pending = self.dirty_pending, {}
        waiting, self.dirty_waiting = self.dirty_waiting, {}
        return pending, waiting

    def restore(
        self,
        pending: list[tuple[str, Pending]],
        waiting: list[WaitingClick],
        clock: int,
    ) -> None:
        """Load persisted entries (not marked dirty), oldest first."""
        for impression_id, item in sorted(pending, key=lambda p: p[1].time_ms):
            self.pending[impression_id] = item
        for click in sorted(waiting, key=lambda c: c.time_ms):
            self.waiting[click.click_id] = click
            heapq.heappush(self._by_time, (click.time_ms, next(self._seq), click))
            self._impression_to_waiting.setdefault(click.impression_id, []).append(
                click.click_id
            )
        self.clock = max(self.clock, clock)
