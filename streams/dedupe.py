"""Remember event ids for a bounded time, so a repeated id counts once.

Producers and clients deliver at least once, so the same impression or click
id can arrive twice. The learner keeps every id it counted for
``dedupe_window_s`` of event time (the partition's clock, not the wall
clock) and persists the ids added since its last flush to a Redis sorted set
in the same transaction as its offsets, so the memory survives restarts.

Memory grows with the event rate times the window: about 120 bytes per id in
the worker and as much again in Redis. At high rates, shorten the window.

Examples
--------
>>> d = DedupeWindow(window_ms=1000)
>>> d.seen("a", 0), d.seen("a", 10), d.seen("b", 20)
(False, True, False)
>>> d.expire(now_ms=1010)
1
>>> d.seen("a", 1600)
False
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

__all__ = ["DedupeWindow"]


class DedupeWindow:
    """Time-bounded set of event ids.

    Parameters
    ----------
    window_ms
        How long (event time, milliseconds) an id is remembered.

    Attributes
    ----------
    added
        Ids added since :meth:`take_changes` last ran, with their times.
    hits
        Duplicates found so far.
    """

    def __init__(self, window_ms: int) -> None:
        if window_ms <= 0:
            raise ValueError(f"dedupe window must be > 0 ms, got {window_ms}")
        self.window_ms = int(window_ms)
        self._id_to_time: dict[str, int] = {}
        self._order: deque[tuple[int, str]] = deque()
        self.added: dict[str, int] = {}
        self.hits = 0

    def __len__(self) -> int:
        return len(self._id_to_time)

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._id_to_time

    def seen(self, event_id: str, t_ms: int) -> bool:
        """True when ``event_id`` was already counted; otherwise remember it."""
        if event_id in self._id_to_time:
            self.hits += 1
            return True
        self._id_to_time[event_id] = t_ms
        self._order.append((t_ms, event_id))
        self.added[event_id] = t_ms
        return False

    def expire(self, now_ms: int) -> int:
        """Forget ids older than the window as of ``now_ms``; return how many.

        Ids leave in arrival order, so an id that arrived after a much newer
        one stays until that one leaves: memory is bounded by the window plus
        the disorder of the stream.
        """
        cutoff = now_ms - self.window_ms
        dropped = 0
        order, id_to_time = self._order, self._id_to_time
        while order and order[0][0] < cutoff:
            _, event_id = order.popleft()
            if id_to_time.pop(event_id, None) is not None:
                dropped += 1
            self.added.pop(event_id, None)
        return dropped

    def cutoff(self, now_ms: int) -> int:
        """Ids with times below this have left the window as of ``now_ms``."""
        return now_ms - self.window_ms

    def take_changes(self) -> dict[str, int]:
        """Ids added since the last call (to persist), and forget the list."""
        added, self.added = self.added, {}
        return added

    def restore(self, items: Iterable[tuple[str, int]]) -> None:
        """Load remembered ids (from Redis), oldest first; not marked as added."""
        for event_id, t_ms in sorted(items, key=lambda item: item[1]):
            if event_id not in self._id_to_time:
                self._id_to_time[event_id] = t_ms
                self._order.append((t_ms, event_id))
