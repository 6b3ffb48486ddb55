"""The learner's Redis calls through an outage.

Every Redis call of the learner goes through :meth:`RedisGuard.redis_call`,
which retries timeouts and refused connections with backoff (0.5 s doubling
to 5 s), logging a WARNING each time. While Redis is out the learner stops
applying batches (the fetch loop waits, so memory stays bounded by what was
applied before the outage was noticed) and ``/readyz`` fails. A flush's
transaction holds absolute values (no increments), so sending it again after
an unanswered attempt is safe. Only after ``redis_outage_s`` does the learner
give up, with an ERROR naming ``KEYART_REDIS_URL``; a restart then resumes
from the last flush.

A Redis that comes back empty (it lost its data) is not written to: a flush
holds only what changed, so it would leave arms with a fraction of their
counts. :meth:`RedisGuard._check_state_kept` finds the partitions' learner
keys gone and the learner stops; restarted, it rebuilds from Kafka.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from keyart.settings import Settings, shown_url
from streams import metrics
from streams.state_keys import StreamKeys

__all__ = [
    "LOAD_TIMEOUT_S",
    "REDIS_ERRORS",
    "REDIS_TIMEOUT_S",
    "RedisGuard",
    "StateLostError",
]

logger = logging.getLogger("streams")

T = TypeVar("T")

REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError, asyncio.TimeoutError)
"""Errors of an unreachable or stalled Redis: retried, not fatal."""

REDIS_TIMEOUT_S = 2.0
"""Socket timeout of the learner's Redis client: a stalled Redis is noticed
(and retried) after this long. A flush takes milliseconds."""

LOAD_TIMEOUT_S = 60.0
"""Socket timeout of the client that reads partitions back on assignment."""

_RETRY_FIRST_S, _RETRY_MAX_S = 0.5, 5.0


class StateLostError(RuntimeError):
    """Redis no longer holds state this learner wrote (it lost its data)."""


class RedisGuard:
    """Retrying Redis calls and the lost-state check (a mixin of the learner)."""

    settings: Settings
    redis: Any
    keys: StreamKeys

    def _init_guard(self) -> None:
        self.redis_ok = True
        self._redis_back = asyncio.Event()
        self._redis_back.set()

    async def redis_call(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        """``await call()``, retried while Redis is unreachable.

        ``call`` must be safe to repeat (build a new pipeline inside it).
        Gives up, re-raising, once ``redis_outage_s`` have passed.
        """
        started = time.monotonic()
        delay = _RETRY_FIRST_S
        while True:
            try:
                result = await call()
            except REDIS_ERRORS as error:
                waited = time.monotonic() - started
                bound = self.settings.redis_outage_s
                if waited + delay > bound:
                    logger.error(
                        "Redis at %s (KEYART_REDIS_URL) has not answered the "
                        "learner's %s for %.0f s (KEYART_REDIS_OUTAGE_S=%s); the "
                        "learner stops, a restart resumes from the last flush: %r",
                        shown_url(self.settings.redis_url),
                        operation,
                        waited,
                        bound,
                        error,
                    )
                    raise
                self.redis_ok = False
                self._redis_back.clear()
                metrics.REDIS_RETRIES.labels(operation).inc()
                logger.warning(
                    "Redis at %s (KEYART_REDIS_URL) failed the learner's %s (%r); "
                    "consumption paused, retrying in %.1f s (gives up after "
                    "KEYART_REDIS_OUTAGE_S=%s s)",
                    shown_url(self.settings.redis_url),
                    operation,
                    error,
                    delay,
                    bound,
                    extra={"operation": operation},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)
                continue
            if not self.redis_ok:
                logger.warning(
                    "Redis answers the learner's %s again after %.1f s; "
                    "consumption resumes",
                    operation,
                    time.monotonic() - started,
                )
                self.redis_ok = True
                self._redis_back.set()
            return result

    async def _check_state_kept(self, partitions: Sequence[int]) -> None:
        """Refuse to write a flush's changes over a Redis that lost its data.

        A flush holds only what changed; written to an emptied Redis it would
        leave arms with a fraction of their counts. The learner stops instead;
        on restart it finds no state and rebuilds from Kafka.
        """
        found = await self.redis.exists(*(self.keys.learner(p) for p in partitions))
        if found != len(partitions):
            raise StateLostError(
                f"Redis at {shown_url(self.settings.redis_url)} (KEYART_REDIS_URL) "
                f"lost the learner's state of partitions {list(partitions)} (their "
                f"{self.keys.learner(partitions[0])} keys are gone); restart the "
                "learner to rebuild it from Kafka"
            )
