"""The batch learner: applies fetched batches, flushes to Redis, survives rebalances.

Steps of one batch (:meth:`Learner.on_batch`):

1. group the records by partition; impressions before clicks;
2. each partition learner skips what it already applied, decodes, checks,
   dedupes, counts and attributes (no Redis on this path);
3. bad records become dead letters, produced right away;
4. when ``flush_interval_ms`` has passed since the last flush, start one in
   the background (batches go on being applied while Redis works).

Steps of a flush (:meth:`Learner.flush`, one at a time):

1. wait until the broker has every dead letter produced so far;
2. take each partition's changes, offsets included, under the learner's lock
   (a consistent cut), and write them in one ``MULTI/EXEC``;
3. commit the same offsets to Kafka (so Kafka's committed offset never passes
   the one in Redis);
4. the owner of partition 0 merges the LinUCB shards into ``{p}:model:linucb``
   and, every few seconds or when idle, the FM shards into ``{p}:model:fm``.

When the worker stops (:meth:`Learner.stop`, after Faust has stopped
fetching) the learner flushes once more, so the offsets in Redis cover every
record it applied. That flush and the Kafka commit of any flush still running
are bounded (:data:`FINAL_FLUSH_TIMEOUT_S`, :data:`SHUTDOWN_COMMIT_TIMEOUT_S`):
with the broker unreachable the commit is given up, which loses nothing, since
a restart seeks to the offsets in Redis.

On assignment the learner rebuilds each new partition from Redis before Faust
resumes fetching, and seeks the consumer to the offsets stored with that
state (:mod:`streams.resume`, which also deals with stored offsets past the
log end, at assignment and every few seconds while the learner runs). On
revocation the learner flushes, then forgets the partition.

Redis outages are ridden out by :mod:`streams.redis_guard`; the merged models
are published by :mod:`streams.publish`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from bandits.features import FEATURE_DIM
from keyart.settings import Settings, shown_url
from schemas.codec import get_codec
from streams import metrics
from streams.partition import DeadLetter, PartitionLearner
from streams.publish import ModelPublisher
from streams.redis_guard import (
    REDIS_ERRORS,
    REDIS_TIMEOUT_S,
    RedisGuard,
    StateLostError,
)
from streams.resp import Transaction
from streams.resume import ResumeOffsets
from streams.state_keys import StreamKeys

__all__ = ["REDIS_ERRORS", "REDIS_TIMEOUT_S", "Learner", "StateLostError"]

logger = logging.getLogger("streams")

SHUTDOWN_COMMIT_TIMEOUT_S = 3.0
"""Once the worker stops, how long a flush waits for its Kafka commit. The
offsets it commits are in Redis already; the broker that does not answer in
this time is taken for unreachable, and later flushes skip the commit."""

FINAL_FLUSH_TIMEOUT_S = 8.0
"""How long the final flush may take: waiting for a running flush, delivering
dead letters, the Redis write and the Kafka commit. A final flush cut short
leaves Redis at the last flush (a ``MULTI/EXEC`` is applied whole or not at
all), from where the next start replays."""

_ATTRIBUTION_OUTCOMES = (
    "credited",
    "credited_after_wait",
    "after_window",
    "repeat",
    "mismatch",
    "waiting",
    "no_impression",
)


def _now_ms() -> int:
    return int(time.time() * 1000)


class Learner(RedisGuard, ModelPublisher, ResumeOffsets):
    """Per-partition learners of one worker and their Redis flushes.

    Parameters
    ----------
    app
        The Faust app (its consumer commits, its producer sends dead letters).
    settings
        Topics, Redis, windows, flush interval.
    redis
        A ``redis.asyncio.Redis`` client (a short socket timeout, so a stalled
        Redis is noticed and retried).
    load_redis
        The client that reads partitions back on assignment (defaults to
        ``redis``); give it a longer timeout, a large dedupe memory takes
        seconds to read.
    """

    def __init__(
        self, app: Any, settings: Settings, redis: Any, load_redis: Any | None = None
    ) -> None:
        self.app = app
        self.settings = settings
        self.redis = redis
        self.load_redis = load_redis if load_redis is not None else redis
        self.codec = get_codec()
        self.keys = StreamKeys(settings.redis_prefix)
        self.group = settings.streams_app_id
        self.impressions = settings.topic("impressions")
        self.clicks = settings.topic("clicks")
        self.deadletter = settings.topic("deadletter")
        self.topics = (self.impressions, self.clicks)
        self.posters = settings.topic("posters")
        self.dim = FEATURE_DIM
        self.partitions: dict[int, PartitionLearner] = {}
        self.lock = asyncio.Lock()
        self.flush_lock = asyncio.Lock()
        self._flush_task: asyncio.Future[None] | None = None
        self._fm_published_at = 0.0
        self._logged_at = time.monotonic()
        self._logged_applied = 0
        self.last_flush = time.monotonic()
        self.last_flush_wall = time.time()
        self.pending_dead: list[Any] = []
        self.flushes = 0
        self._merged_n = -1
        self._merged_fm = -1
        self._init_guard()
        self._init_resume()
        self._stored: set[int] = set()  # partitions whose state is in Redis
        self._stopping = asyncio.Event()
        self._broker_gone = False  # a commit at shutdown got no answer
        metrics.STATE_AGE.set_function(lambda: time.time() - self.last_flush_wall)

    # -- batches ---------------------------------------------------------------------

    async def on_batch(self, batch: Mapping[Any, Sequence[Any]]) -> None:
        """Apply one fetched batch (see the module's steps)."""
        if not self.redis_ok:
            # Redis is out: hold the fetch loop rather than pile up state.
            await self._redis_back.wait()
        dead: list[DeadLetter] = []
        async with self.lock:
            touched: list[PartitionLearner] = []
            # Step 1: impressions first, so clicks find their impression.
            ordered = sorted(
                batch.items(), key=lambda kv: kv[0].topic != self.impressions
            )
            for tp, records in ordered:
                learner = self.partitions.get(tp.partition)
                if learner is None:
                    logger.warning(
                        "records of unowned partition %s dropped",
                        tp,
                        extra={"partition": tp.partition, "topic": tp.topic},
                    )
                    continue
                # Step 2
                if tp.topic == self.impressions:
                    learner.apply_impressions(tp.topic, records, dead)
                else:
                    learner.apply_clicks(tp.topic, records, dead)
                touched.append(learner)
            for learner in set(touched):
                learner.advance()
                self._export_counts(learner)
            # Step 3
            for item in dead:
                self._send_dead(item)
        interval = self.settings.flush_interval_ms / 1000
        if (
            time.monotonic() - self.last_flush >= interval
            and not self.flush_lock.locked()
        ):
            # Step 4, in the background: fetching goes on while Redis works.
            self._flush_task = asyncio.ensure_future(self.flush())

    def _export_counts(self, learner: PartitionLearner) -> None:
        counts: Counter[str] = learner.counts
        if counts["impressions"]:
            metrics.EVENTS.labels(self.impressions).inc(counts["impressions"])
        if counts["clicks"]:
            metrics.EVENTS.labels(self.clicks).inc(counts["clicks"])
        for kind in ("impression", "click"):
            if counts[f"dedupe_{kind}"]:
                metrics.DEDUPE_HITS.labels(kind).inc(counts[f"dedupe_{kind}"])
        for outcome in _ATTRIBUTION_OUTCOMES:
            if counts[outcome]:
                metrics.ATTRIBUTION.labels(outcome).inc(counts[outcome])
        if counts["skipped_replay"]:
            metrics.SKIPPED_REPLAY.inc(counts["skipped_replay"])
        counts.clear()

    def _send_dead(self, item: DeadLetter) -> None:
        topic, partition, offset, key, payload, reason = item
        record = {
            "event_id": f"{topic}:{partition}:{offset}",
            "event_time": _now_ms(),
            "source": topic,
            "partition": partition,
            "offset": offset,
            "reason": reason[:1000],
            "key": key,
            "payload": payload,
        }
        value = self.codec.encode("dead_letter", record)
        self.pending_dead.append(
            self.app.producer.send(self.deadletter, key, value, None, None, None)
        )
        metrics.DEAD_LETTERS.labels(topic).inc()
        logger.warning(
            "dead letter from %s[%s]@%s: %s",
            topic,
            partition,
            offset,
            reason,
            extra={"topic": topic, "partition": partition, "offset": offset},
        )

    # -- flushing --------------------------------------------------------------------

    async def flush(self) -> None:
        """Write every partition's changes and offsets (see the module's steps).

        Flushes run one at a time; batches keep being applied while one
        waits for Redis. A Redis outage is retried (:meth:`redis_call`); a
        flush that still fails crashes the worker: the changes it carried are
        no longer marked dirty, so the only safe way on is a restart from the
        state and offsets last written.
        """
        async with self.flush_lock:
            try:
                await self._flush()
            except Exception as error:
                logger.error(
                    "flush to Redis failed; the worker stops and restarts from "
                    "the last flush: %r",
                    error,
                )
                await self.app.crash(error)
                raise

    async def _flush(self) -> None:
        started = time.perf_counter()
        # Step 1
        if self.pending_dead:
            sends, self.pending_dead = self.pending_dead, []
            futures = await asyncio.gather(*sends)
            await self.app.producer.flush()
            await asyncio.gather(*futures)
        # Step 2: build under the lock (a consistent cut), send outside it.
        now = _now_ms()
        transaction = Transaction()
        written = 0
        async with self.lock:
            for learner in self.partitions.values():
                written += learner.write(transaction, self.keys, self.group, now)
            offsets = {
                self._tp(topic, p): offset
                for p, learner in self.partitions.items()
                for topic, offset in learner.offsets.items()
            }
            owns_zero = 0 in self.partitions
            flushed = list(self.partitions)
        stored = sorted(self._stored & set(flushed))

        async def send() -> list[Any]:
            if stored:
                await self._check_state_kept(stored)
            return await transaction.execute(self.redis)

        await self.redis_call("flush", send)
        self._stored.update(flushed)
        # Step 3
        if offsets:
            await self._commit(offsets)
        self.last_flush = time.monotonic()
        self.last_flush_wall = time.time()
        self.flushes += 1
        metrics.FLUSH_SECONDS.observe(time.perf_counter() - started)
        metrics.ARMS_WRITTEN.inc(written)
        self._export_lag(offsets)
        self._progress(offsets)
        # Step 4
        if owns_zero:
            try:
                await self._merge_models(now, idle=written == 0)
            except REDIS_ERRORS as error:  # published at a later flush
                logger.warning("model merge skipped, Redis failed: %r", error)

    async def _commit(self, offsets: Mapping[Any, int]) -> None:
        """Step 3 of a flush: commit ``offsets`` (already in Redis) to Kafka.

        While the worker runs, the commit waits for the broker however long it
        is away, and holds the flush lock meanwhile, as aiokafka retries it.
        Once the worker stops it gets :data:`SHUTDOWN_COMMIT_TIMEOUT_S` more;
        a commit that misses it is logged once and the flushes after it skip
        theirs.
        """
        if self._broker_gone:
            return
        commit = asyncio.ensure_future(self.app.consumer.commit_offsets(offsets))
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({commit, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        try:
            await asyncio.wait_for(commit, SHUTDOWN_COMMIT_TIMEOUT_S)
        except TimeoutError:
            self._broker_gone = True
            logger.warning(
                "could not commit offsets to the broker at shutdown: no answer "
                "from %s (KEYART_KAFKA_BOOTSTRAP) in %.0f s; they are in Redis, so the "
                "next start resumes there",
                self.settings.kafka_bootstrap,
                SHUTDOWN_COMMIT_TIMEOUT_S,
            )

    async def stop(self) -> None:
        """The final flush, as the worker stops; within :data:`FINAL_FLUSH_TIMEOUT_S`.

        Faust has stopped fetching when this runs, so the flush covers every
        record applied. A flush in progress finishes first (its Kafka commit
        now bounded). What cannot be done in time is one warning, and the next
        start resumes from the offsets that reached Redis.
        """
        self._stopping.set()
        try:
            async with asyncio.timeout(FINAL_FLUSH_TIMEOUT_S), self.flush_lock:
                await self._flush()
        except TimeoutError:
            logger.warning(
                "could not finish the final flush to Redis in %.0f s (Redis at %s "
                "or the broker did not answer); the next start resumes from the "
                "last flush's offsets in Redis and replays the rest",
                FINAL_FLUSH_TIMEOUT_S,
                shown_url(self.settings.redis_url),
            )
            return
        except Exception as error:  # noqa: BLE001 - the worker is stopping anyway
            logger.warning(
                "the final flush to Redis failed: %r; the next start resumes from "
                "the last flush's offsets in Redis and replays the rest",
                error,
            )
            return
        logger.info(
            "final flush written to Redis: partitions %s",
            sorted(self.partitions),
            extra={"partitions": sorted(self.partitions)},
        )

    def _progress(self, offsets: Mapping[Any, int]) -> None:
        """Log the applied offsets at most every 30 seconds."""
        now = time.monotonic()
        if now - self._logged_at < 30.0:
            return
        applied = sum(offsets.values())
        rate = (applied - self._logged_applied) / (now - self._logged_at)
        self._logged_at, self._logged_applied = now, applied
        logger.info(
            "learner at %s records (%.0f/s), %s partitions, %s flushes",
            applied,
            rate,
            len(self.partitions),
            self.flushes,
            extra={"applied": applied, "partitions": sorted(self.partitions)},
        )

    def _export_lag(self, offsets: Mapping[Any, int]) -> None:
        for tp, offset in offsets.items():
            end = self.fetched_end(tp)
            if end is not None:
                metrics.LAG.labels(tp.topic, str(tp.partition)).set(
                    max(0, end - offset)
                )

    # -- rebalances ------------------------------------------------------------------

    async def on_assigned(self, assigned: set[Any]) -> None:
        """Rebuild newly assigned partitions from Redis before fetching resumes.

        Then seek every assigned partition of the learner's topics and of the
        posters topic to the offset Redis holds for it, or to the earliest
        retained offset when it holds none.
        """
        self.rebalances += 1
        async with self.seek_lock:
            await self._assign_learner(assigned)
            await self._seek_to_state(assigned)

    async def _assign_learner(self, assigned: set[Any]) -> None:
        wanted = sorted(
            {tp.partition for tp in assigned if tp.topic in self.topics}
            - set(self.partitions)
        )
        if not wanted:
            return
        async with self.lock:

            async def load() -> list[Any]:
                pipe = self.load_redis.pipeline(transaction=False)
                for p in wanted:
                    PartitionLearner.queue_load(pipe, self.keys, self.group, p)
                return await pipe.execute()

            results = await self.redis_call("load", load)
            steps = PartitionLearner.LOAD_STEPS
            for i, p in enumerate(wanted):
                learner = PartitionLearner(p, self.settings, self.codec, self.dim)
                part = results[i * steps : (i + 1) * steps]
                learner.restore(part, self.topics)
                self.partitions[p] = learner
                if part[3]:  # the partition's learner hash: state exists
                    self._stored.add(p)
                else:
                    self._stored.discard(p)
        logger.info(
            "learner partitions assigned: %s", wanted, extra={"partitions": wanted}
        )

    async def on_revoked(self, revoked: set[Any]) -> None:
        """Flush everything, then forget the revoked partitions.

        Both under the flush lock, so no background flush can write a revoked
        partition after its new owner has loaded it.
        """
        self.rebalances += 1
        self.posters_owned -= {self._tp(tp.topic, tp.partition) for tp in revoked}
        gone = {tp.partition for tp in revoked if tp.topic in self.topics}
        if not gone:
            return
        async with self.flush_lock:
            try:
                await self._flush()
            except Exception as error:
                logger.error("flush before handing partitions over failed: %r", error)
                await self.app.crash(error)
                raise
            async with self.lock:
                for p in gone:
                    self.partitions.pop(p, None)
        logger.info(
            "learner partitions revoked: %s",
            sorted(gone),
            extra={"partitions": sorted(gone)},
        )
