"""Produce keyart events to Kafka, encoded with the one schemas codec.

Every record is keyed by its video id (the dead-letter topic by its source),
so all arms of a video land on one partition.

Examples
--------
>>> producer = EventProducer(settings)  # doctest: +SKIP
>>> producer.send("click", {...})  # doctest: +SKIP
>>> producer.flush()  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from keyart.settings import Settings
from schemas.codec import Codec, get_codec

__all__ = ["KIND_TO_TOPIC", "EventProducer", "ProduceError"]

logger = logging.getLogger("producers")

KIND_TO_TOPIC = {
    "impression": "impressions",
    "click": "clicks",
    "decision": "decisions",
    "video_published": "videos",
    "poster_candidate": "candidates",
    "poster_published": "posters",
    "dead_letter": "deadletter",
}


class ProduceError(RuntimeError):
    """The broker did not take a record; the message says which and why."""


class EventProducer:
    """A confluent-kafka producer that speaks keyart's Avro events.

    Parameters
    ----------
    settings
        Broker address and topic prefix.
    codec
        The schemas codec; the process-wide one by default.
    config
        Extra librdkafka settings (``linger.ms``, ``acks``, ...).
    """

    def __init__(
        self,
        settings: Settings,
        codec: Codec | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        from confluent_kafka import Producer

        self.settings = settings
        self.codec = codec or get_codec()
        self.errors: list[str] = []
        conf: dict[str, Any] = {
            "bootstrap.servers": settings.kafka_bootstrap,
            "linger.ms": 5,
            "acks": "all",
            "enable.idempotence": False,
            "partitioner": "murmur2_random",  # the same partition as Java clients
        }
        conf.update(config or {})
        self._producer = Producer(conf)

    def topic_for(self, kind: str) -> str:
        """Full topic name for an event kind such as ``impression``."""
        return self.settings.topic(KIND_TO_TOPIC[kind])

    def _on_delivery(self, error: Any, message: Any) -> None:
        if error is not None:
            self.errors.append(f"{message.topic()}: {error}")
            logger.error("delivery failed on %s: %s", message.topic(), error)

    def send_raw(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        """Produce bytes as they are (used for dead letters and tests)."""
        while True:
            try:
                self._producer.produce(
                    topic, value=value, key=key, on_delivery=self._on_delivery
                )
                break
            except BufferError:
                self._producer.poll(0.05)  # the local queue is full: let it drain
        self._producer.poll(0)

    def send(
        self, kind: str, record: Mapping[str, Any], key: str | None = None
    ) -> None:
        """Encode ``record`` as ``kind`` and produce it, keyed by its video id."""
        value = self.codec.encode(kind, record)
        if key is None:
            key = str(record.get("video_id") or record.get("source") or "")
        self.send_raw(self.topic_for(kind), value, key.encode() if key else None)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every record is acknowledged.

        Raises
        ------
        ProduceError
            When records are still queued after ``timeout`` or were refused.
        """
        left = self._producer.flush(timeout)
        if left:
            raise ProduceError(f"{left} records not delivered within {timeout} s")
        if self.errors:
            errors, self.errors = self.errors, []
            raise ProduceError(f"{len(errors)} records refused: {errors[:3]}")
