"""Publishing the global models merged from the partitions' shards.

The owner of partition 0 sums the LinUCB shards into ``{p}:model:linucb``
after every flush that changed them and averages the FM shards into
``{p}:model:fm`` every :data:`streams.fm_shard.FM_PUBLISH_S` seconds or when
idle. Nothing that is not finite is published: a shard found NaN or infinite
in Redis is left out of the merge (ERROR naming its key), and a merged model
that is not finite is not written, so the gateway keeps the last good one;
both are counted in ``keyart_streams_non_finite_total``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson

from keyart.settings import Settings
from streams import metrics
from streams.fm_shard import FM_PUBLISH_S, FMShard, merge_fm
from streams.shards import LinUCBShard, merge_linucb
from streams.state_keys import StreamKeys

__all__ = ["ModelPublisher"]

logger = logging.getLogger("streams")


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


class ModelPublisher:
    """Merging and publishing the models (a mixin of the learner)."""

    settings: Settings
    redis: Any
    keys: StreamKeys
    dim: int
    _merged_n: int
    _merged_fm: int
    _fm_published_at: float

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
            self._merged_n = total
            return
        mapping: dict[str, Any] = dict(model.to_mapping())
        mapping["updated_ms"] = now_ms
        await self.redis.hset(self.keys.model("linucb"), mapping=mapping)
        self._merged_n = total

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
