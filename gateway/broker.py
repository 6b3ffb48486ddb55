"""The gateway's Kafka producer: never blocks the event loop.

Two confluent-kafka producers share one daemon thread that serves their
delivery callbacks:

- the collector's waits for the broker's acknowledgement of every event, so a
  client learns which events to resend; its thread hands each outcome to the
  event loop;
- :meth:`GatewayProducer.log`'s (the ``poster_published`` record of a
  retirement) is fire and forget: a record that cannot be logged is counted,
  never waited for, and only failed records are reported
  (``delivery.report.only.error``).

Decisions do not pass here: a child process produces them
(:mod:`gateway.decision_log`), with the configuration of
:func:`producer_config`.

A full local queue (the broker is gone for long) makes ``produce`` refuse at
once instead of waiting, and librdkafka gives up on a record after
``message.timeout.ms``, so memory stays bounded while the broker is down.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from gateway._ratelimit import RateLimitedLog
from gateway.metrics import DECISION_LOG_FAILURES
from keyart.settings import Settings
from producers.events import KIND_TO_TOPIC
from schemas.codec import Codec, get_codec

__all__ = ["GatewayProducer", "producer_config"]

logger = logging.getLogger("gateway")
_warn = RateLimitedLog(logger)


def producer_config(settings: Settings, timeout_s: float = 10.0) -> dict[str, Any]:
    """The confluent-kafka settings the gateway's producers share.

    ``timeout_s`` is how long librdkafka tries to deliver one record before it
    fails it.
    """
    return {
        "bootstrap.servers": settings.kafka_bootstrap,
        "linger.ms": 5,
        "acks": "all",
        "enable.idempotence": False,
        "partitioner": "murmur2_random",
        "message.timeout.ms": int(timeout_s * 1000),
        "queue.buffering.max.messages": 200_000,
        "socket.connection.setup.timeout.ms": 3000,
    }


class GatewayProducer:
    """Produce keyart events from an asyncio program.

    Parameters
    ----------
    settings
        Broker address and topic prefix.
    timeout_s
        How long librdkafka tries to deliver one record before failing it.
    """

    def __init__(
        self, settings: Settings, timeout_s: float = 10.0, codec: Codec | None = None
    ) -> None:
        from confluent_kafka import Producer

        self.settings = settings
        self.codec = codec or get_codec()
        from keyart.logs import librdkafka_logger

        # Not in producer_config: the decision log's child gets that as JSON.
        config = {
            **producer_config(settings, timeout_s),
            "logger": librdkafka_logger("gateway.kafka"),
        }
        self._producer = Producer(config)
        """The collector's producer: every outcome is reported."""
        self._log_producer = Producer({**config, "delivery.report.only.error": True})
        """The decision log's producer (and :meth:`log`'s): failures only."""
        self._topics = {k: settings.topic(v) for k, v in KIND_TO_TOPIC.items()}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Serve delivery callbacks for ``loop`` from a daemon thread."""
        self._loop = loop
        self._thread = threading.Thread(
            target=self._serve, name="gateway-producer", daemon=True
        )
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            # The collector's acknowledgements are waited on by clients: its
            # producer gets the blocking poll. The decision log's reports only
            # failures, so a non-blocking look after each wake-up is enough.
            self._producer.poll(0.05)
            self._log_producer.poll(0)

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (up to ``timeout``) and stop the thread."""
        deadline = time.monotonic() + timeout
        events = self._producer.flush(timeout)
        decisions = self._log_producer.flush(max(0.0, deadline - time.monotonic()))
        if events or decisions:
            logger.error(
                "undelivered at shutdown: %s collected events, %s decisions",
                events,
                decisions,
            )
        if decisions:
            DECISION_LOG_FAILURES.labels(reason="shutdown").inc(decisions)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        # librdkafka stops reconnecting once released
        self._producer = self._log_producer = _Closed()

    def produce_many(
        self, items: list[tuple[str, bytes, str]]
    ) -> asyncio.Future[list[str | None]]:
        """Queue ``(kind, value, key)`` records; one future settles with every
        record's outcome (None or the error text) once all are known."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("GatewayProducer.start was not called")
        future: asyncio.Future[list[str | None]] = loop.create_future()
        outcomes: list[str | None] = [None] * len(items)
        left = [len(items)]
        lock = threading.Lock()

        def settle_one(index: int, outcome: str | None) -> None:
            outcomes[index] = outcome
            with lock:
                left[0] -= 1
                done = left[0] == 0
            if done:
                loop.call_soon_threadsafe(_settle, future, outcomes)

        def callback(index: int) -> Any:
            return lambda error, message: settle_one(
                index, None if error is None else str(error)
            )

        if not items:
            future.set_result(outcomes)
        for index, (kind, value, key) in enumerate(items):
            try:
                self._producer.produce(
                    self._topics[kind],
                    value=value,
                    key=key.encode() if key else None,
                    on_delivery=callback(index),
                )
            except BufferError:
                settle_one(index, "local queue full")
        return future

    def log(self, kind: str, record: Mapping[str, Any]) -> None:
        """Encode and queue a record without waiting; failures are counted."""
        try:
            value = self.codec.encode(kind, record)
        except ValueError:
            logger.exception("cannot encode a %s record", kind)
            DECISION_LOG_FAILURES.labels(reason="encode").inc()
            return
        try:
            self._log_producer.produce(
                self._topics[kind],
                value=value,
                key=str(record.get("video_id", "")).encode() or None,
                on_delivery=_count_failure,
            )
        except BufferError:
            DECISION_LOG_FAILURES.labels(reason="queue_full").inc()

    def queued(self) -> int:
        """Records waiting in the local queues."""
        return len(self._producer) + len(self._log_producer)


class _Closed:
    """Stands in for the released producer: every use says it is closed."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError("the gateway producer is closed")

    def __len__(self) -> int:
        return 0


def _settle(future: asyncio.Future[Any], outcome: Any) -> None:
    if not future.done():
        future.set_result(outcome)


def _count_failure(error: Any, message: Any) -> None:
    if error is not None:
        DECISION_LOG_FAILURES.labels(reason="broker").inc()
        _warn.warning(
            "log", "a %s record was not delivered: %s", message.topic(), error
        )
