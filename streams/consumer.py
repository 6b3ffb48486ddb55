"""A Faust app whose learner topics are read in batches, not event by event.

Faust gives keyart the worker, consumer-group membership with co-partitioned
assignment (partition ``n`` of the impression and click topics go to the same
worker), rebalance signals and offset commits. Its per-event machinery
(an ``Event`` per message, a queue hop per stream, a task per wait) costs
about 100 microseconds an event, which caps a worker far below what the
broker delivers. So the fetch loop here hands each fetched batch of the
learner's topics, grouped by partition, straight to a batch sink; messages of
every other topic still flow to their Faust agents as usual.

The batch sink commits the learner's Kafka offsets itself, after the state
they cover is in Redis (:meth:`BatchConsumer.commit_offsets`); Faust's own
acking never sees those messages, so it never commits them early.

Stopping with the broker unreachable is bounded here too
(:meth:`_ConsumerThread.on_thread_stop`): the consumer thread always reports
that it stopped, within :data:`CLOSE_TIMEOUT_S`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, cast

import faust
from aiokafka.errors import KafkaError
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from mode import Service

__all__ = ["BatchConsumer", "BatchSink", "LearnerApp"]

logger = logging.getLogger("streams")

BatchSink = Callable[[Mapping[TP, Sequence[Any]]], Awaitable[None]]
"""Called with fetched records of the learner's topics, by topic-partition."""


FETCH_MAX_WAIT_MS = 100
"""How long the broker may hold a fetch for more data. Faust fixes 1500 ms;
the local broker holds fetches that long even when records are waiting, which
alone made Redis state about 0.4 s older at the median."""


CLOSE_TIMEOUT_S = 5.0
"""How long the stopping consumer thread waits for aiokafka's consumer to leave
the group and close its connections. Against a reachable broker that takes
well under a second; an unreachable one never answers, and the learner's
offsets are in Redis by then (its final flush runs before)."""


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_consumer(self, loop: Any) -> Any:
        consumer = super()._create_consumer(loop)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when it starts
        return consumer

    async def on_thread_stop(self) -> None:
        """Close aiokafka's consumer within :data:`CLOSE_TIMEOUT_S`, whatever it raises.

        With the broker down, aiokafka 0.14 cancels a fetch that is sleeping
        out its retry backoff and lets that CancelledError out of
        ``AIOKafkaConsumer.stop()``. The thread then ended before telling its
        parent that it had shut down, and the worker sat out mode's 60 s
        shutdown timeout and printed two tracebacks (NodeNotReadyError, then
        TimeoutError). Here the close is bounded and its failure is one
        warning, so the thread always reaches its shutdown.
        """
        asyncio.get_running_loop().set_exception_handler(_broker_leftovers)
        try:
            await asyncio.wait_for(super().on_thread_stop(), CLOSE_TIMEOUT_S)
        except (asyncio.CancelledError, Exception) as error:
            task = asyncio.current_task()
            if isinstance(error, asyncio.CancelledError) and task and task.cancelling():
                raise  # this thread itself is cancelled, not aiokafka's fetch
            if isinstance(error, TimeoutError):
                reason = f"no answer within {CLOSE_TIMEOUT_S:.0f} s"
            elif isinstance(error, asyncio.CancelledError):
                reason = "aiokafka cancelled a fetch backing off from the broker"
            else:
                reason = repr(error)
            logger.warning(
                "could not leave the consumer group and close the broker "
                "connections cleanly at shutdown (%s); the worker exits anyway",
                reason,
            )


def _broker_leftovers(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The stopping consumer thread's loop: a broker error one line, no traceback.

    aiokafka shields its offset-commit request from cancellation, so a commit
    given up at shutdown (the learner's offsets are in Redis) can still fail
    later, with nobody to retrieve the error; asyncio then printed a
    traceback for a failure that costs nothing.
    """
    error = context.get("exception")
    if isinstance(error, KafkaError):
        logger.warning("a broker request abandoned at shutdown failed: %s", error)
        return
    loop.default_exception_handler(context)


class BatchConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer with a batch path for chosen topics."""

    def _new_consumer_thread(self) -> Any:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def commit_offsets(self, offsets: Mapping[TP, int]) -> bool:
        """Commit next offsets of learner partitions (still assigned ones only)."""
        return await self._commit(offsets)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover
        # Same contract as Faust's loop: runs until the consumer or the fetcher
        # stops, and drops a fetch that straddles a rebalance after seeking
        # back to the committed offsets (the learner skips what it applied).
        callback = self.callback
        to_message = self._to_message
        set_read_offset = self._read_offset.__setitem__
        consumer_stopped = cast(Service, self)._stopped.is_set
        fetcher_stopped = cast(Service, fetcher)._stopped.is_set
        batch_topics: frozenset[str] = getattr(self.app, "batch_topics", frozenset())
        batch_sink: BatchSink | None = getattr(self.app, "batch_sink", None)
        try:
            while not (consumer_stopped() or fetcher_stopped()):
                records, active = await self._wait_next_records(1.0)
                if not records or self.should_stop:
                    continue
                if not self.flow_active:
                    await self.perform_seek()
                    continue
                generation = self.app.consumer_generation_id
                batch: dict[TP, Sequence[Any]] = {}
                for tp, items in records.items():
                    if active is not None and tp not in active:
                        continue
                    if not items:
                        continue
                    if tp.topic in batch_topics:
                        batch[tp] = items
                        set_read_offset(tp, items[-1].offset)
                        continue
                    for record in items:
                        if self.app.consumer_generation_id != generation:
                            break
                        await callback(to_message(tp, record))
                        set_read_offset(tp, record.offset)
                if batch and batch_sink is not None:
                    if self.app.consumer_generation_id != generation:
                        await self.perform_seek()
                        continue
                    await batch_sink(batch)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise


class _BatchTransport(faust_aiokafka.Transport):
    Consumer = BatchConsumer


class LearnerApp(faust.App):
    """A Faust app using :class:`BatchConsumer`.

    Call :meth:`route_batches` before the worker starts to choose the topics
    and the sink.
    """

    batch_topics: frozenset[str] = frozenset()
    batch_sink: BatchSink | None = None

    def _new_transport(self) -> Any:
        return _BatchTransport(self.conf.broker_consumer, self)

    def on_rebalance_return(self) -> None:
        """Tell the sensors the consumer has its assignment, unless the
        rebalance is already over.

        Faust's recovery can end a rebalance (``on_rebalance_end`` drops the
        sensors' state) before the consumer calls this, and Faust then warned
        "Missing sensor state for rebalance" at every start of a healthy
        learner; a rebalance already over has nothing left to report.
        """
        if not self.rebalancing and self._rebalancing_sensor_state is None:
            return
        super().on_rebalance_return()

    def route_batches(self, topics: Sequence[str], sink: BatchSink) -> None:
        """Send fetched records of ``topics`` to ``sink`` in batches."""
        self.batch_topics = frozenset(topics)
        self.batch_sink = sink
