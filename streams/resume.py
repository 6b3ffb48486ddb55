"""Where each partition of the learner resumes, and what a recreated topic does.

On assignment (:meth:`ResumeOffsets._seek_to_state`, before Faust resumes
fetching) each partition of the impression and click topics is sought to the
offset stored in Redis with its state, and each posters partition to its
offset in ``{p}:catalog:offsets``; a partition without one starts at the
earliest retained offset (Redis lost its data). Redis is the state, so
Kafka's committed offset alone is no evidence that an event's effect exists.

Each stored offset goes with the id of the topic it belongs to
(:mod:`streams.topic_ids`): the learner's in ``{p}:learner:{partition}``,
written in the flush's ``MULTI/EXEC`` with the offsets, the catalog's in
``{p}:catalog:topic_ids``, written after the catalog's offsets. A topic
deleted and created again has a new id. A partition whose stored id is not
the broker's, or whose stored offset is past the log end (a broker without
topic ids, or a truncated log, :mod:`streams.offsets`), is logged as an
ERROR naming the topic and partition, the old and new id or the stored
offset and log end, counted in ``keyart_streams_offset_resets_total`` and
reset to the earliest offset of the new log; the arm state stays, and the
reset offset reaches Redis with the next flush, together with the state of
the records applied from there (a posters partition's at once). A partition
without a stored id (state written before keyart stored them) takes the
broker's: recorded, not reset.

Topics recreated under a running learner bring no rebalance (a broker
restart does: the consumer group is lost with it, and the worker joins
again). The consumer then fetches at the old offset and gets nothing until
the new log grows past it (the local broker), or resets itself to the log
start (Kafka's out-of-range reset); either way it applies records of the new
log as if the old log went on, and takes the records below the old offset
for applied. So every :data:`LOG_END_CHECK_S` the learner runs
:meth:`ResumeOffsets.check_log_ends`: first by topic id (the steps are in
:mod:`streams.recreated`), then by offset:

1. suspects: partitions whose offset is above the high watermark of the
   consumer's last fetch (no request). A healthy partition never is: the
   fetch that brought a record reported a high watermark past it;
2. confirm each suspect as at assignment (:func:`streams.offsets.stored_past_log_end`,
   which ends with a fresh fetch, since the local broker's ListOffsets falls
   short of the log end);
3. under the learner's lock, for the partitions still owned, with no
   rebalance since step 1 and no record applied since: seek the consumer to
   the log start, then reset as at assignment. A partition that applied a
   record meanwhile is left alone, so no record is applied twice;
4. store the new offsets: a posters partition's in ``{p}:catalog:offsets``,
   and all of them as Kafka's committed offsets, which ``keyart lag`` reads
   (the next flush writes the learner's to Redis).

A recreated topic is so found within :data:`LOG_END_CHECK_S` plus one
describe (milliseconds on the local broker, at most
:data:`streams.topic_ids.DESCRIBE_TIMEOUT_S`), however far its new log has
grown. Records of the new log applied before that are counted once as long
as their event times are within ``KEYART_DEDUPE_WINDOW_S`` of the
partition's clock when they are fetched again. A broker that returns no
topic ids (all zeros) gets one warning, and only the offset check runs:
there, the records of the new log below the stored offset are lost when it
grows past that offset before a check sees it. So are they when the describe
fails at every check (the broker answers fetches but not DescribeTopics), and
when the topic is recreated between the learner's start and the first
describe that answers (there is no stored id yet to compare).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from keyart.settings import Settings
from streams import metrics
from streams.offsets import stored_past_log_end
from streams.partition import PartitionLearner
from streams.recreated import RecreatedTopics
from streams.redis_guard import REDIS_ERRORS
from streams.state_keys import StreamKeys

__all__ = ["LOG_END_CHECK_S", "PAST_END_CHECK_S", "ResumeOffsets"]

logger = logging.getLogger("streams")

PAST_END_CHECK_S = 10.0
"""Longest the check of stored offsets against the log ends may hold up an
assignment; past it the stored offsets are used as they are. A running
learner's check and its seek get as long each."""

LOG_END_CHECK_S = 2.0
"""How often a running learner compares its partitions' offsets with the high
watermarks its consumer last fetched (:meth:`ResumeOffsets.check_log_ends`)."""

CHECK_WARN_EVERY_S = 60.0
"""A running check that keeps failing (the broker does not answer) warns at
most this often."""

_SET_IF_UNCHANGED = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
    return redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
end
return 0
"""


class ResumeOffsets(RecreatedTopics):
    """Seeking partitions to their stored offsets, at assignment and when their
    log was recreated (a mixin of the learner)."""

    app: Any
    settings: Settings
    redis: Any
    keys: StreamKeys
    lock: asyncio.Lock
    partitions: dict[int, PartitionLearner]
    topics: tuple[str, str]
    posters: str
    redis_call: Callable[..., Awaitable[Any]]
    _stopping: asyncio.Event
    reset_timeout_s = PAST_END_CHECK_S

    def _init_resume(self) -> None:
        # Held by an assignment and by a running reset: one seek at a time.
        self.seek_lock = asyncio.Lock()
        # Assignments and revocations, so a running reset can tell that one
        # came between its steps.
        self.rebalances = 0
        self.posters_owned: set[Any] = set()
        self._check_warned_at = -math.inf
        self._init_recreated(self.settings.kafka_bootstrap)

    def _tp(self, topic: str, partition: int) -> Any:
        return self.app.consumer._new_topicpartition(topic, partition)

    def fetched_end(self, tp: Any) -> int | None:
        """The high watermark of the consumer's last fetch of ``tp``; None when
        it has not fetched it since the assignment, or does not own it."""
        try:
            end = self.app.consumer.highwater(tp)
        except Exception:  # noqa: BLE001 - not assigned (aiokafka asserts)
            return None
        return int(end) if end is not None else None

    # -- a running learner -----------------------------------------------------------

    async def check_log_ends(self) -> None:
        """Reset the partitions whose topic was recreated, or whose log now ends
        before their offset.

        See the module's steps. Never raises (it runs on a Faust timer, which
        would take the worker down): what fails is tried again at the next
        check.
        """
        try:
            await self._check_topic_ids()
        except Exception as error:  # noqa: BLE001 - checked again in a moment
            self._check_failed("compare the topic ids with the broker's", error)
        try:
            await self._check_log_ends()
        except Exception as error:  # noqa: BLE001 - checked again in a moment
            self._check_failed("check the offsets against the log ends", error)

    async def _check_log_ends(self) -> None:
        if self._stopping.is_set():
            return
        epoch = self._epoch()
        # Step 1
        async with self.lock:
            stored = {
                self._tp(topic, p): offset
                for p, learner in self.partitions.items()
                for topic, offset in learner.offsets.items()
            }
        stored.update(await self._catalog_offsets())
        suspects = {}
        for tp, offset in stored.items():
            end = self.fetched_end(tp)
            if end is not None and offset > end:
                suspects[tp] = offset
        if not suspects:
            return
        # Step 2
        try:
            async with asyncio.timeout(PAST_END_CHECK_S):
                past_end = await stored_past_log_end(
                    self.app.consumer, self.settings.kafka_bootstrap, suspects
                )
                earliest = {}
                if past_end:
                    earliest = dict(await self.app.consumer.earliest_offsets(*past_end))
        except Exception as error:  # noqa: BLE001 - checked again in a moment
            self._check_failed("compare the offsets with the log ends", error)
            return
        # Step 3
        async with self.seek_lock, self.lock:
            if self._epoch() != epoch or self._stopping.is_set():
                return  # the assignment has checked every partition again
            starts = {
                tp: int(earliest.get(tp) or 0)
                for tp in past_end
                if self._still_at(tp, suspects[tp])
            }
            if not starts:
                return
            try:
                # Seek first: when it fails, nothing has moved.
                async with asyncio.timeout(PAST_END_CHECK_S):
                    await self.app.consumer.seek_wait(starts)
            except Exception as error:  # noqa: BLE001 - checked again in a moment
                self._check_failed("seek to the start of a recreated log", error)
                return
            for tp, start in starts.items():
                self._reset_offset(tp, suspects[tp], past_end[tp], start)
                if tp.topic == self.posters:
                    # Faust acks a posters record only at or past the offset it
                    # last committed, which the old log had set.
                    self.app.consumer._committed_offset[tp] = start
        # Step 4
        try:
            await self._store_catalog_starts(starts, suspects)
            async with asyncio.timeout(PAST_END_CHECK_S):
                await self.app.consumer.commit_offsets(starts)
        except Exception as error:  # noqa: BLE001 - the next flush commits
            self._check_failed("store the offsets of a recreated log", error)

    def _epoch(self) -> tuple[int, int]:
        # Faust counts a rebalance as soon as it starts, before the learner
        # hears of it; the learner's own count covers the rest.
        return self.rebalances, int(getattr(self.app, "rebalancing_count", 0))

    def _still_at(self, tp: Any, offset: int) -> bool:
        """Whether ``tp`` is still owned and still resumes at ``offset``."""
        if tp.topic == self.posters:
            return tp in self.posters_owned  # catalog writes are idempotent
        learner = self.partitions.get(tp.partition)
        return learner is not None and learner.offsets.get(tp.topic) == offset

    async def _catalog_offsets(self) -> dict[Any, int]:
        """The stored offsets of the posters partitions this worker owns; none
        while Redis does not answer (they are checked next time)."""
        if not self.posters_owned:
            return {}
        try:
            catalog = await self.redis.hgetall(self.keys.catalog_offsets())
        except REDIS_ERRORS:
            return {}
        out = {}
        for tp in self.posters_owned:
            value = catalog.get(f"{tp.topic}:{tp.partition}".encode())
            if value is not None:
                out[tp] = int(value)
        return out

    async def _store_catalog_starts(
        self, starts: Mapping[Any, int], stored: Mapping[Any, int | None] | None
    ) -> None:
        """Write the reset offsets of posters partitions to the catalog's.

        Unlike the learner's, nothing else would write them before the next
        poster, and until then every check and start would reset again. Each
        is written only where the offset is still ``stored``: a poster of the
        new log applied since has written a later one. With ``stored`` None
        (a recreated topic) they are written as they are: the posters of the
        new log applied since are applied again, which changes nothing.
        """
        key = self.keys.catalog_offsets()
        for tp, start in starts.items():
            if tp.topic != self.posters:
                continue
            field = f"{tp.topic}:{tp.partition}"
            if stored is None:

                async def put(field: str = field, new: int = start) -> Any:
                    return await self.redis.hset(key, field, new)

                await self.redis_call("catalog", put)
                continue
            old = stored[tp]

            async def write(
                field: str = field, old: Any = old, new: int = start
            ) -> Any:
                return await self.redis.eval(_SET_IF_UNCHANGED, 1, key, field, old, new)

            await self.redis_call("catalog", write)

    def _check_failed(self, what: str, error: BaseException) -> None:
        now = time.monotonic()
        if now - self._check_warned_at < CHECK_WARN_EVERY_S:
            logger.debug("could not %s: %r", what, error)
            return
        self._check_warned_at = now
        logger.warning(
            "could not %s (%r); a recreated topic may go unnoticed until this "
            "works (tried every %.0f s)",
            what,
            error,
            LOG_END_CHECK_S,
        )

    # -- at assignment ---------------------------------------------------------------

    async def _seek_to_state(self, assigned: set[Any]) -> None:
        posters = sorted(tp.partition for tp in assigned if tp.topic == self.posters)
        self.posters_owned = {self._tp(self.posters, p) for p in posters}
        catalog: dict[bytes, bytes] = {}
        if posters:
            catalog = await self.redis_call(
                "load", lambda: self.redis.hgetall(self.keys.catalog_offsets())
            )
        self.catalog_ids = {}
        if posters:
            stored_ids = await self.redis_call(
                "load", lambda: self.redis.hgetall(self.keys.catalog_topic_ids())
            )
            for tp in self.posters_owned:
                value = stored_ids.get(f"{tp.topic}:{tp.partition}".encode())
                if value is not None:
                    self.catalog_ids[tp] = value.decode()
        targets: dict[Any, int | None] = {}
        async with self.lock:
            for tp in assigned:
                if tp.topic in self.topics and tp.partition in self.partitions:
                    stored = self.partitions[tp.partition].offsets.get(tp.topic)
                elif tp.topic == self.posters:
                    value = catalog.get(f"{tp.topic}:{tp.partition}".encode())
                    stored = int(value) if value is not None else None
                else:
                    continue
                targets[self._tp(tp.topic, tp.partition)] = stored
        past_end = await self._past_log_end(targets)
        current = await self._current_ids({tp.topic for tp in targets})
        async with self.lock:
            recreated = {
                tp: ids
                for tp, ids in self._changed_ids(current).items()
                if tp in targets and targets[tp] and tp not in past_end
            }
        missing = [tp for tp, offset in targets.items() if offset is None]
        earliest: dict[Any, int] = {}
        if missing or past_end or recreated:
            try:
                earliest = dict(
                    await self.app.consumer.earliest_offsets(
                        *missing, *past_end, *recreated
                    )
                )
            except Exception as error:  # noqa: BLE001 - offset 0 resets to earliest
                logger.warning("earliest offsets unknown (%r); seeking to 0", error)
        if missing:
            logger.warning(
                "no state in Redis for %s: rebuilding them from the earliest "
                "retained offsets",
                ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(missing)),
                extra={"partitions": [f"{tp.topic}:{tp.partition}" for tp in missing]},
            )
        starts: dict[Any, int] = {}
        stored_offsets = dict(targets)
        async with self.lock:
            for tp, end in past_end.items():
                starts[tp] = int(earliest.get(tp) or 0)
                self._reset_offset(tp, targets[tp], end, starts[tp])
                targets[tp] = starts[tp]
            for tp, (old_id, new_id) in recreated.items():
                start = int(earliest.get(tp) or 0)
                if (targets[tp] or 0) <= start:
                    continue  # nothing of the new log would be skipped
                starts[tp] = start
                self._reset_recreated(tp, targets[tp], old_id, new_id, start)
                targets[tp] = start
            # Every offset sought to now belongs to the topic as it is.
            for tp in targets:
                self._take_id(tp, current.get(tp.topic))
        seeks = {
            tp: offset if offset is not None else int(earliest.get(tp) or 0)
            for tp, offset in targets.items()
        }
        if seeks:
            # In the consumer's own thread: Faust's plain seek() changes the
            # fetcher's buffers from this thread while that thread may be
            # draining them, which crashed the fetcher (KeyError in aiokafka's
            # fetched_records) on a fresh assignment.
            await self.app.consumer.seek_wait(seeks)
            # Any later seek to the committed offsets lands here too.
            await self.app.consumer.commit_offsets(seeks)
        await self._store_catalog_starts(starts, stored_offsets)
        await self._store_catalog_ids()

    async def _past_log_end(self, targets: Mapping[Any, int | None]) -> dict[Any, int]:
        """Stored offsets of ``targets`` past their partition's log end."""
        stored = {tp: offset for tp, offset in targets.items() if offset}
        try:
            # Assignment waits for this check: bound it, both steps together.
            async with asyncio.timeout(PAST_END_CHECK_S):
                return await stored_past_log_end(
                    self.app.consumer, self.settings.kafka_bootstrap, stored
                )
        except Exception as error:  # noqa: BLE001 - the seek itself must go on
            logger.warning(
                "could not compare the stored offsets with the log ends (%r); "
                "resuming from the stored offsets",
                error,
            )
            return {}

    def _reset_offset(self, tp: Any, stored: int | None, end: int, start: int) -> None:
        """Resume ``tp`` from ``start`` of a log that ends before ``stored``.

        Called under the learner's lock. The partition learner's offset moves
        back too, so its records are applied rather than skipped as replays,
        and the next flush writes the new offset with their state. A crash
        before that flush finds the old offset in Redis and resets again.
        """
        metrics.OFFSET_RESETS.labels(tp.topic).inc()
        logger.error(
            "stored offset %s of %s[%s] is past the log end %s: the topic was "
            "recreated or truncated. Resuming from offset %s of the new log (the "
            "arm state stays; its records are new events)",
            stored,
            tp.topic,
            tp.partition,
            end,
            start,
            extra={
                "topic": tp.topic,
                "partition": tp.partition,
                "offset": stored,
                "log_end": end,
            },
        )
        self._rewind(tp, start)
        # The new log's id, whatever it is, is the one the next describe
        # gives: recorded then, not taken for another recreation.
        self._forget_id(tp)

    def _rewind(self, tp: Any, start: int) -> None:
        """Move the partition learner's offset of ``tp`` back to ``start``."""
        learner = self.partitions.get(tp.partition)
        if tp.topic in self.topics and learner is not None:
            learner.offsets[tp.topic] = start
            learner.dirty_offsets = True
