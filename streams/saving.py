"""Saving a partition learner to Redis and rebuilding it from there.

:class:`PartitionStore` is the persistence half of
:class:`streams.partition.PartitionLearner`: :meth:`PartitionStore.write`
queues every change since the last flush on one ``MULTI/EXEC`` transaction
(arm statistics, window buckets, dedupe ids, pending impressions, waiting
clicks, model shards, the partition clock and the offsets, so they land
together), and :meth:`PartitionStore.restore` rebuilds a learner from the
reads :meth:`PartitionStore.queue_load` queues. The Redis layout is in
:mod:`streams.state_keys`.

A LinUCB shard that is not finite is never written: the shard goes back to
its last written state and the event is counted in
``keyart_streams_non_finite_total`` (validation should make this impossible;
this is the last guard for the model every user is scored with).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote

import numpy as np

from bandits.window import SlidingWindow
from keyart.keys import escape
from keyart.settings import Settings
from schemas.codec import Codec
from streams import metrics
from streams.attribution import CLOCK_LEAD_MS, Attribution, Pending, WaitingClick
from streams.dedupe import DedupeWindow
from streams.fm_shard import FMShard
from streams.shards import LinUCBShard
from streams.state_keys import StreamKeys
from streams.vocabulary import ContextVocabulary

__all__ = ["Arm", "PartitionStore"]

logger = logging.getLogger("streams")

Arm = tuple[str, str]
"""(video id, arm field)."""


def _number(text: str) -> float | int:
    return float(text) if ("." in text or "e" in text or "n" in text) else int(text)


class PartitionStore:
    """How a partition learner is saved and restored (a mixin of its state)."""

    partition: int
    settings: Settings
    codec: Codec
    dim: int
    time_window: bool
    window: SlidingWindow
    alltime: dict[Arm, list[int]]
    dirty: set[Arm]
    dedupe: dict[str, DedupeWindow]
    attribution: Attribution
    linucb: LinUCBShard
    fm: FMShard
    offsets: dict[str, int]
    dirty_offsets: bool
    topic_ids: dict[str, str]
    counts: Counter[str]
    max_skew_ms: int
    _linucb_good: tuple[np.ndarray, np.ndarray, int, int]

    def _arm(self, record: Mapping[str, Any]) -> Arm:  # pragma: no cover
        raise NotImplementedError

    def _wstate_field(self, arm: Arm) -> str:
        return f"{escape(arm[0])}/{arm[1]}"

    def _wstate_value(self, arm: Arm) -> bytes:
        n, c = self.alltime[arm]
        buckets = ",".join(str(v) for v in self.window.state(arm))
        return f"{n},{c}|{buckets}".encode()

    def write(self, pipe: Any, keys: StreamKeys, group: str, now_ms: int) -> int:
        """Queue every change since the last write on ``pipe``; return arms written.

        The caller runs ``pipe`` as one ``MULTI/EXEC`` transaction, so the
        arm statistics, the learner state and the offsets land together.
        """
        p = self.partition
        clock_s = self.attribution.clock / 1000.0
        video_to_fields: dict[str, dict[str, bytes]] = {}
        wstate: dict[str, bytes] = {}
        for arm in self.dirty:
            n, c = self.alltime[arm]
            wn, wc = self.window.totals(arm, clock_s)
            video_to_fields.setdefault(arm[0], {})[arm[1]] = (
                f"{n},{c},{wn},{min(wc, wn) if wn else 0}".encode()
            )
            wstate[self._wstate_field(arm)] = self._wstate_value(arm)
        written = len(self.dirty)
        self.dirty = set()
        stamp = str(now_ms).encode()
        for video, fields in video_to_fields.items():
            fields["_updated_ms"] = stamp
            pipe.hset(keys.arms(video), mapping=fields)
        if wstate:
            pipe.hset(keys.wstate(p), mapping=wstate)
        for kind, dedupe in self.dedupe.items():
            added = dedupe.take_changes()
            key = keys.dedupe(kind, p)
            if added:
                flat: list[Any] = []
                for event_id, t in added.items():
                    flat.append(b"%d.%03d" % divmod(t, 1000))  # seconds
                    flat.append(event_id)
                pipe.execute_command("ZADD", key, *flat)
            cutoff = dedupe.cutoff(self.attribution.clock) / 1000.0
            pipe.zremrangebyscore(key, "-inf", f"({cutoff}")
        pending, waiting = self.attribution.take_changes()
        self._write_changes(pipe, keys.pending(p), pending, _pending_value)
        self._write_changes(pipe, keys.waiting(p), waiting, lambda w: w.payload)
        if self.linucb.version != self.linucb.written_version:
            if self._linucb_finite():
                pipe.hset(
                    keys.model_shard("linucb", p), mapping=self.linucb.to_mapping()
                )
                self._linucb_good = self._linucb_copy()
            self.linucb.written_version = self.linucb.version
        if self.fm.version != self.fm.written_version:
            pipe.hset(keys.model_shard("fm", p), mapping=self.fm.take_changes())
        pipe.hset(
            keys.learner(p),
            mapping={
                "clock_ms": self.attribution.clock,
                "updated_ms": now_ms,
                **{f"topic_id:{t}": i for t, i in self.topic_ids.items()},
            },
        )
        if self.offsets:
            pipe.hset(
                keys.offsets(group),
                mapping={f"{t}:{p}": o for t, o in self.offsets.items()},
            )
        self.dirty_offsets = False
        return written

    def _linucb_copy(self) -> tuple[np.ndarray, np.ndarray, int, int]:
        shard = self.linucb
        return shard.a.copy(), shard.b.copy(), shard.n, shard.clicks

    def _linucb_finite(self) -> bool:
        """Whether the LinUCB shard may be written; if not, roll it back.

        Validation keeps feature values bounded, so this should never fail;
        it is the last guard against one event making the shared model
        infinite for every user (the shard goes back to its last written
        state, losing the changes since).
        """
        shard = self.linucb
        if np.isfinite(shard.a).all() and np.isfinite(shard.b).all():
            return True
        a, b, n, clicks = self._linucb_good
        logger.error(
            "LinUCB shard of partition %s is not finite; kept its last written "
            "state (%s impressions since are not learnt)",
            self.partition,
            shard.n - n,
            extra={"partition": self.partition},
        )
        metrics.NON_FINITE.labels("linucb_shard").inc()
        shard.a, shard.b, shard.n, shard.clicks = a.copy(), b.copy(), n, clicks
        return False

    @staticmethod
    def _write_changes(pipe: Any, key: str, changes: dict, value: Any) -> None:
        gone = [i for i, item in changes.items() if item is None]
        kept = {i: value(item) for i, item in changes.items() if item is not None}
        if gone:
            pipe.hdel(key, *gone)
        if kept:
            pipe.hset(key, mapping=kept)

    @staticmethod
    def queue_load(pipe: Any, keys: StreamKeys, group: str, partition: int) -> None:
        """Queue the reads :meth:`restore` needs, in its order."""
        pipe.hgetall(keys.wstate(partition))
        pipe.hgetall(keys.pending(partition))
        pipe.hgetall(keys.waiting(partition))
        pipe.hgetall(keys.learner(partition))
        pipe.hgetall(keys.model_shard("linucb", partition))
        pipe.hgetall(keys.model_shard("fm", partition))
        for kind in ("impression", "click"):
            pipe.zrange(keys.dedupe(kind, partition), 0, -1, withscores=True)
        pipe.hgetall(keys.offsets(group))

    LOAD_STEPS = 9

    def restore(self, results: Sequence[Any], topics: Sequence[str]) -> None:
        """Rebuild from the results of :meth:`queue_load` (one partition)."""
        wstate, pending, waiting, learner, shard, fm, d_imp, d_click, offsets = results
        for field, value in wstate.items():
            video_part, _, arm_part = field.decode().partition("/")
            arm = (unquote(video_part), arm_part)
            counts, _, buckets = value.decode().partition("|")
            n, c = (int(x) for x in counts.split(","))
            self.alltime[arm] = [n, c]
            if buckets:
                self.window.restore(arm, [_number(x) for x in buckets.split(",")])
        clock = int(learner.get(b"clock_ms", 0))
        restored_pending = []
        for impression_id, value in pending.items():
            event = self.codec.decode("impression", value[1:])
            item = Pending(
                event["event_time"],
                self._arm(event),
                event["poster_id"],
                value[1:],
                credited=value[:1] == b"1",
            )
            restored_pending.append((impression_id.decode(), item))
        restored_waiting = []
        for click_id, value in waiting.items():
            event = self.codec.decode("click", value)
            restored_waiting.append(
                WaitingClick(
                    click_id.decode(),
                    event["impression_id"],
                    event["event_time"],
                    event["poster_id"],
                    value,
                )
            )
        limit = int(time.time() * 1000) + CLOCK_LEAD_MS
        if clock > limit:
            logger.warning(
                "stored clock of partition %s (%s ms) is ahead of the wall clock "
                "by more than %s s; it restarts from the wall clock",
                self.partition,
                clock,
                CLOCK_LEAD_MS / 1000,
                extra={"partition": self.partition},
            )
            clock = limit
        self.attribution.restore(restored_pending, restored_waiting, clock)
        if self.time_window and clock:
            self.window.expire(clock / 1000.0)
        self.linucb = LinUCBShard.from_mapping(shard, self.dim)
        self._linucb_good = self._linucb_copy()
        self.fm = FMShard.from_fields(
            fm,
            self.settings.seed,
            ContextVocabulary.from_settings(self.settings, self.partition),
        )
        for kind, items in (("impression", d_imp), ("click", d_click)):
            self.dedupe[kind].restore(
                (i.decode(), round(score * 1000)) for i, score in items
            )
        for topic in topics:
            stored = offsets.get(f"{topic}:{self.partition}".encode())
            if stored is not None:
                self.offsets[topic] = int(stored)
            topic_id = learner.get(f"topic_id:{topic}".encode())
            if topic_id is not None:
                self.topic_ids[topic] = topic_id.decode()


def _pending_value(item: Pending) -> bytes:
    return (b"1" if item.credited else b"0") + item.payload
