"""Partitions whose topic was deleted and created again: found by topic id.

Each stored offset goes with the id of the topic it belongs to
(:mod:`streams.topic_ids`); a partition whose stored id is not the broker's
is reset to the start of the new log, at assignment
(:meth:`streams.resume.ResumeOffsets._seek_to_state`) and by the running
check every :data:`streams.resume.LOG_END_CHECK_S`
(:meth:`RecreatedTopics._check_topic_ids`):

1. one DescribeTopics request for the learner's topics, in a thread, bounded
   by :data:`streams.topic_ids.DESCRIBE_TIMEOUT_S`; partitions whose stored id
   differs are the recreated ones;
2. under the learner's lock, for the partitions still owned, with no
   rebalance since step 1: seek the consumer to the log start, then reset as
   at assignment. Records the learner applied from the old offset on were
   fetched from the new log; fetched again now, they are dropped by the
   per-partition dedupe by event id, and a batch fetched before the seek and
   handed over after it is dropped whole
   (``PartitionLearner.fetched_before_reset``);
3. store the new offsets: a posters partition's in ``{p}:catalog:offsets``
   (then its id in ``{p}:catalog:topic_ids``), and all of them as Kafka's
   committed offsets, which ``keyart lag`` reads (the next flush writes the
   learner's to Redis, with their ids).

A partition without a stored id (state written before keyart stored them, a
new partition, or one just reset because its offset was past the log end)
takes the broker's: recorded, not reset.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from streams import metrics
from streams.partition import PartitionLearner
from streams.state_keys import StreamKeys
from streams.topic_ids import TopicIds

__all__ = ["RecreatedTopics"]

logger = logging.getLogger("streams")


class RecreatedTopics:
    """Resetting the partitions of recreated topics (a mixin of
    :class:`streams.resume.ResumeOffsets`)."""

    app: Any
    redis: Any
    keys: StreamKeys
    lock: asyncio.Lock
    seek_lock: asyncio.Lock
    partitions: dict[int, PartitionLearner]
    topics: tuple[str, str]
    posters: str
    posters_owned: set[Any]
    redis_call: Callable[..., Awaitable[Any]]
    _stopping: asyncio.Event
    reset_timeout_s: float
    """How long the running reset's earliest offsets, seek and commit may
    take each."""

    def _init_recreated(self, bootstrap: str) -> None:
        self.topic_ids = TopicIds(bootstrap)
        # Posters partition to the topic id its catalog offset belongs to.
        self.catalog_ids: dict[Any, str] = {}
        self._catalog_ids_dirty = False

    # Provided by ResumeOffsets.
    def _tp(self, topic: str, partition: int) -> Any:
        raise NotImplementedError

    def _epoch(self) -> tuple[int, int]:
        raise NotImplementedError

    def _check_failed(self, what: str, error: BaseException) -> None:
        raise NotImplementedError

    def _rewind(self, tp: Any, start: int) -> None:
        raise NotImplementedError

    async def _catalog_offsets(self) -> dict[Any, int]:
        raise NotImplementedError

    async def _store_catalog_starts(
        self, starts: Mapping[Any, int], stored: Mapping[Any, int | None] | None
    ) -> None:
        raise NotImplementedError

    async def _check_topic_ids(self) -> None:
        if self._stopping.is_set() or not self.topic_ids.supported:
            return
        epoch = self._epoch()
        # Step 1
        try:
            current = await self.topic_ids.current([*self.topics, self.posters])
        except Exception as error:  # noqa: BLE001 - checked again in a moment
            self._check_failed("describe the learner's topics", error)
            return
        async with self.lock:
            changed = self._changed_ids(current)
        if changed:
            try:
                async with asyncio.timeout(self.reset_timeout_s):
                    earliest = dict(await self.app.consumer.earliest_offsets(*changed))
            except Exception as error:  # noqa: BLE001 - checked again in a moment
                self._check_failed("find the start of a recreated log", error)
                return
            catalog = await self._catalog_offsets()
            # Step 2
            async with self.seek_lock, self.lock:
                if self._epoch() != epoch or self._stopping.is_set():
                    return  # the assignment has compared every partition again
                starts = await self._reset_recreated_topics(
                    self._changed_ids(current), earliest, catalog
                )
            # Step 3
            try:
                await self._store_catalog_starts(starts, None)
                if starts:
                    async with asyncio.timeout(self.reset_timeout_s):
                        await self.app.consumer.commit_offsets(starts)
            except Exception as error:  # noqa: BLE001 - the next flush commits
                self._check_failed("store the offsets of a recreated topic", error)
                return
        await self._store_catalog_ids()

    async def _reset_recreated_topics(
        self,
        changed: Mapping[Any, tuple[str, str]],
        earliest: Mapping[Any, int],
        catalog: Mapping[Any, int],
    ) -> dict[Any, int]:
        """Seek the partitions of recreated topics to the start of their new
        log and reset them; return where each now starts. Under both locks.

        A partition whose offset is not past the start of the new log only
        takes the new id: none of the new log's records would be skipped.
        """
        starts, stored = {}, {}
        for tp, (_, new_id) in changed.items():
            start = int(earliest.get(tp) or 0)
            if tp.topic == self.posters:
                offset = catalog.get(tp)
            else:
                offset = self.partitions[tp.partition].offsets.get(tp.topic)
            if offset is None or offset <= start:
                self._take_id(tp, new_id)
            else:
                starts[tp], stored[tp] = start, offset
        if not starts:
            return {}
        try:
            # Seek first: when it fails, nothing has moved.
            async with asyncio.timeout(self.reset_timeout_s):
                await self.app.consumer.seek_wait(starts)
        except Exception as error:  # noqa: BLE001 - checked again in a moment
            self._check_failed("seek to the start of a recreated log", error)
            return {}
        for tp, start in starts.items():
            old_id, new_id = changed[tp]
            self._reset_recreated(tp, stored[tp], old_id, new_id, start)
            if tp.topic == self.posters:
                self.app.consumer._committed_offset[tp] = start
            else:
                # Records fetched before the seek come in at or above here.
                learner = self.partitions[tp.partition]
                learner.fetched_before_reset[tp.topic] = stored[tp]
        return starts

    def _changed_ids(self, current: Mapping[str, str]) -> dict[Any, tuple[str, str]]:
        """Owned partitions whose topic id is no longer ``current``'s, with the
        old and the new id. Under the learner's lock.

        A partition with no id yet (state written before keyart stored ids, or
        a new partition) takes the current one: recorded, not reset. The
        learner's go to Redis with the next flush, the catalog's with
        :meth:`_store_catalog_ids`.
        """
        changed = {}
        for p, learner in self.partitions.items():
            for topic in self.topics:
                new = current.get(topic)
                old = learner.topic_ids.get(topic)
                if new is None or old == new:
                    continue
                if old is None:
                    learner.topic_ids[topic] = new
                    learner.dirty_offsets = True
                else:
                    changed[self._tp(topic, p)] = (old, new)
        new = current.get(self.posters)
        for tp in self.posters_owned:
            old = self.catalog_ids.get(tp)
            if new is None or old == new:
                continue
            if old is None:
                self.catalog_ids[tp] = new
                self._catalog_ids_dirty = True
            else:
                changed[tp] = (old, new)
        return changed

    async def _store_catalog_ids(self) -> None:
        """Write the topic ids of the posters partitions, once their offsets
        are in Redis (a crash in between resets them again, which changes
        nothing)."""
        if not self._catalog_ids_dirty:
            return
        self._catalog_ids_dirty = False
        fields = {
            f"{tp.topic}:{tp.partition}": topic_id
            for tp, topic_id in self.catalog_ids.items()
            if tp in self.posters_owned
        }
        if not fields:
            return
        try:
            await self.redis_call(
                "catalog",
                lambda: self.redis.hset(self.keys.catalog_topic_ids(), mapping=fields),
            )
        except Exception:
            self._catalog_ids_dirty = True
            raise

    async def _current_ids(self, topics: set[str]) -> dict[str, str]:
        """The broker's topic ids at assignment; none when it does not answer
        (then the next running check compares them)."""
        try:
            return await self.topic_ids.current(sorted(topics))
        except Exception as error:  # noqa: BLE001 - the seek itself must go on
            logger.warning(
                "could not read the topic ids (%r); a recreated topic whose log "
                "has reached the stored offsets is found at the next check",
                error,
            )
            return {}

    def _forget_id(self, tp: Any) -> None:
        """Drop the stored id of ``tp``, whose offset now belongs to a new log."""
        if tp.topic == self.posters:
            self.catalog_ids.pop(tp, None)
            return
        learner = self.partitions.get(tp.partition)
        if learner is not None:
            learner.topic_ids.pop(tp.topic, None)

    def _take_id(self, tp: Any, topic_id: str | None) -> None:
        """Note that the offset of ``tp`` now belongs to the topic ``topic_id``."""
        if topic_id is None:
            return
        if tp.topic == self.posters:
            self.catalog_ids[tp] = topic_id
            self._catalog_ids_dirty = True
            return
        learner = self.partitions.get(tp.partition)
        if learner is not None and tp.topic in self.topics:
            learner.topic_ids[tp.topic] = topic_id
            learner.dirty_offsets = True

    def _reset_recreated(
        self, tp: Any, stored: int | None, old_id: str, new_id: str, start: int
    ) -> None:
        """Resume ``tp`` from ``start`` of the topic created again as ``new_id``.

        As :meth:`_reset_offset`, for a topic whose id changed: its log may
        have grown past ``stored``, so the offsets alone do not show it.
        """
        metrics.OFFSET_RESETS.labels(tp.topic).inc()
        logger.error(
            "topic %s was recreated (topic id %s, now %s): %s[%s] resumes from "
            "offset %s of the new log instead of the stored offset %s (the arm "
            "state stays; its records are new events)",
            tp.topic,
            old_id,
            new_id,
            tp.topic,
            tp.partition,
            start,
            stored,
            extra={
                "topic": tp.topic,
                "partition": tp.partition,
                "offset": stored,
                "old_topic_id": old_id,
                "topic_id": new_id,
            },
        )
        self._rewind(tp, start)
        self._take_id(tp, new_id)
