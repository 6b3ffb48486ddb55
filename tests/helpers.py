"""Small helpers the tests share: read back what reached a topic."""

from __future__ import annotations

import time
from typing import Any

from keyart.settings import Settings


def consume_raw(
    settings: Settings, topic: str | list[str], count: int, timeout: float = 30.0
) -> list[Any]:
    """Read ``count`` messages from the start of ``topic`` (or topics).

    Partitions are assigned directly rather than through a consumer group, so
    no group join (several seconds on the local broker) is paid.
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    topics = [topic] if isinstance(topic, str) else list(topic)
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": "keyart-tests-unused",
            "enable.auto.commit": False,
        }
    )
    metadata = consumer.list_topics(timeout=10)
    consumer.assign(
        [
            TopicPartition(name, partition, OFFSET_BEGINNING)
            for name in topics
            for partition in metadata.topics[name].partitions
        ]
    )
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < count and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None or message.error():
                continue
            out.append(message)
    finally:
        consumer.close()
    return out
