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

On assignment the learner rebuilds each new partition from Redis before Faust
resumes fetching; on revocation it flushes, then forgets the partition.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson

from bandits.features import FEATURE_DIM
from keyart.settings import Settings
from schemas.codec import get_codec
from streams import metrics
from streams.fm_shard import FM_PUBLISH_S, FMShard, merge_fm
from streams.partition import DeadLetter, PartitionLearner
from streams.resp import Transaction
from streams.shards import LinUCBShard, merge_linucb
from streams.state_keys import StreamKeys

__all__ = ["Learner"]

logger = logging.getLogger("streams")

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


def _all_finite(value: Any) -> bool:
    """Whether every number in a JSON-like value is finite."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, Mapping):
        return all(_all_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_all_finite(v) for v in value)
    if isinstance(value, np.ndarray):
        return bool(np.isfinite(value).all())
    return True


class Learner:
    """Per-partition learners of one worker and their Redis flushes.

    Parameters
    ----------
    app
        The Faust app (its consumer commits, its producer sends dead letters).
    settings
        Topics, Redis, windows, flush interval.
    redis
        A ``redis.asyncio.Redis`` client.
    """

    def __init__(self, app: Any, settings: Settings, redis: Any) -> None:
        self.app = app
        self.settings = settings
        self.redis = redis
        self.codec = get_codec()
        self.keys = StreamKeys(settings.redis_prefix)
        self.group = settings.streams_app_id
        self.impressions = settings.topic("impressions")
        self.clicks = settings.topic("clicks")
        self.deadletter = settings.topic("deadletter")
        self.topics = (self.impressions, self.clicks)
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
        metrics.STATE_AGE.set_function(lambda: time.time() - self.last_flush_wall)

    # -- batches ---------------------------------------------------------------------

    async def on_batch(self, batch: Mapping[Any, Sequence[Any]]) -> None:
        """Apply one fetched batch (see the module's steps)."""
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
        waits for Redis. A failed flush crashes the worker: the changes it
        carried are no longer marked dirty, so the only safe way on is a
        restart from the state and offsets last written.
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
        await transaction.execute(self.redis)
        # Step 3
        if offsets:
            await self.app.consumer.commit_offsets(offsets)
        self.last_flush = time.monotonic()
        self.last_flush_wall = time.time()
        self.flushes += 1
        metrics.FLUSH_SECONDS.observe(time.perf_counter() - started)
        metrics.ARMS_WRITTEN.inc(written)
        self._export_lag(offsets)
        self._progress(offsets)
        # Step 4
        if owns_zero:
            await self._merge_models(now, idle=written == 0)

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

    def _tp(self, topic: str, partition: int) -> Any:
        return self.app.consumer._new_topicpartition(topic, partition)

    def _export_lag(self, offsets: Mapping[Any, int]) -> None:
        for tp, offset in offsets.items():
            try:
                end = self.app.consumer.highwater(tp)
            except Exception:  # noqa: S112 - no fetch yet for this partition
                continue
            if end is not None:
                metrics.LAG.labels(tp.topic, str(tp.partition)).set(
                    max(0, end - offset)
                )

    async def _merge_models(self, now_ms: int, idle: bool) -> None:
        n = self.settings.topic_partitions
        pipe = self.redis.pipeline(transaction=False)
        for p in range(n):
            pipe.hgetall(self.keys.model_shard("linucb", p))
        for p in range(n):
            pipe.hget(self.keys.model_shard("fm", p), "examples")
        results = await pipe.execute()
        fm_examples = sum(int(x) for x in results[n:] if x)
        due = time.monotonic() - self._fm_published_at >= FM_PUBLISH_S
        if fm_examples != self._merged_fm and (due or idle):
            await self._merge_fm(now_ms)
            self._merged_fm = fm_examples
        shards = [LinUCBShard.from_mapping(m, self.dim) for m in results[:n]]
        total = sum(s.n + s.clicks for s in shards)
        if total == self._merged_n:
            return
        self._merged_n = total
        finite = []
        for p, shard in enumerate(shards):
            if np.isfinite(shard.a).all() and np.isfinite(shard.b).all():
                finite.append(shard)
                continue
            logger.error(
                "LinUCB shard %s in Redis is not finite; merged without it "
                "(delete %s to start the partition's share afresh)",
                p,
                self.keys.model_shard("linucb", p),
                extra={"partition": p},
            )
            metrics.NON_FINITE.labels("linucb_shard").inc()
        try:
            model = merge_linucb(finite, alpha=self.settings.linucb_alpha, ridge=1.0)
            ok = all(np.isfinite(x).all() for x in (model.a, model.b, model.a_inv))
        except (IndexError, ValueError, np.linalg.LinAlgError):
            ok = False
        if not ok:
            logger.error(
                "merged LinUCB model is not finite; %s keeps the last good one",
                self.keys.model("linucb"),
            )
            metrics.NON_FINITE.labels("linucb_model").inc()
            return
        mapping: dict[str, Any] = dict(model.to_mapping())
        mapping["updated_ms"] = now_ms
        await self.redis.hset(self.keys.model("linucb"), mapping=mapping)

    async def _merge_fm(self, now_ms: int) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for p in range(self.settings.topic_partitions):
            pipe.hgetall(self.keys.model_shard("fm", p))
        seed = self.settings.seed
        exports = [
            FMShard.from_fields(fields, seed).export()
            for fields in await pipe.execute()
        ]
        merged = merge_fm(exports)
        self._fm_published_at = time.monotonic()
        if merged is None:
            return
        if not _all_finite(merged):
            logger.error(
                "merged FM model is not finite; %s keeps the last good one",
                self.keys.model("fm"),
            )
            metrics.NON_FINITE.labels("fm_model").inc()
            return
        await self.redis.hset(
            self.keys.model("fm"),
            mapping={
                "data": orjson.dumps(merged),
                "version": merged["version"],
                "updated_ms": now_ms,
            },
        )

    # -- rebalances ------------------------------------------------------------------

    async def on_assigned(self, assigned: set[Any]) -> None:
        """Rebuild newly assigned partitions from Redis before fetching resumes."""
        wanted = sorted(
            {tp.partition for tp in assigned if tp.topic in self.topics}
            - set(self.partitions)
        )
        if not wanted:
            return
        async with self.lock:
            pipe = self.redis.pipeline(transaction=False)
            for p in wanted:
                PartitionLearner.queue_load(pipe, self.keys, self.group, p)
            results = await pipe.execute()
            steps = PartitionLearner.LOAD_STEPS
            for i, p in enumerate(wanted):
                learner = PartitionLearner(p, self.settings, self.codec, self.dim)
                learner.restore(results[i * steps : (i + 1) * steps], self.topics)
                self.partitions[p] = learner
        logger.info(
            "learner partitions assigned: %s", wanted, extra={"partitions": wanted}
        )

    async def on_revoked(self, revoked: set[Any]) -> None:
        """Flush everything, then forget the revoked partitions.

        Both under the flush lock, so no background flush can write a revoked
        partition after its new owner has loaded it.
        """
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
