"""Where each partition of the learner resumes, and what a log past its end does.

On assignment (:meth:`ResumeOffsets._seek_to_state`, before Faust resumes
fetching) each partition of the impression and click topics is sought to the
offset stored in Redis with its state, and each posters partition to its
offset in ``{p}:catalog:offsets``; a partition without one starts at the
earliest retained offset (Redis lost its data). Redis is the state, so
Kafka's committed offset alone is no evidence that an event's effect exists.

A stored offset past the log end (the topic was recreated or truncated,
:mod:`streams.offsets`) is logged as an ERROR naming topic, partition, stored
offset and log end, counted in ``keyart_streams_offset_resets_total`` and
reset to the earliest offset of the new log; the arm state stays, and the
reset offset reaches Redis with the next flush, together with the state of
the records applied from there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from keyart.settings import Settings
from streams import metrics
from streams.offsets import stored_past_log_end
from streams.partition import PartitionLearner
from streams.state_keys import StreamKeys

__all__ = ["PAST_END_CHECK_S", "ResumeOffsets"]

logger = logging.getLogger("streams")

PAST_END_CHECK_S = 10.0
"""Longest the check of stored offsets against the log ends may hold up an
assignment; past it the stored offsets are used as they are."""


class ResumeOffsets:
    """Seeking partitions to their stored offsets (a mixin of the learner)."""

    app: Any
    settings: Settings
    redis: Any
    keys: StreamKeys
    lock: asyncio.Lock
    partitions: dict[int, PartitionLearner]
    topics: tuple[str, str]
    posters: str
    redis_call: Callable[..., Awaitable[Any]]

    def _tp(self, topic: str, partition: int) -> Any:
        return self.app.consumer._new_topicpartition(topic, partition)

    async def _seek_to_state(self, assigned: set[Any]) -> None:
        posters = sorted(tp.partition for tp in assigned if tp.topic == self.posters)
        catalog: dict[bytes, bytes] = {}
        if posters:
            catalog = await self.redis_call(
                "load", lambda: self.redis.hgetall(self.keys.catalog_offsets())
            )
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
        missing = [tp for tp, offset in targets.items() if offset is None]
        earliest: dict[Any, int] = {}
        if missing or past_end:
            try:
                earliest = dict(
                    await self.app.consumer.earliest_offsets(*missing, *past_end)
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
        async with self.lock:
            for tp, end in past_end.items():
                start = int(earliest.get(tp) or 0)
                self._reset_offset(tp, targets[tp], end, start)
                targets[tp] = start
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
        learner = self.partitions.get(tp.partition)
        if tp.topic in self.topics and learner is not None:
            learner.offsets[tp.topic] = start
            learner.dirty_offsets = True
