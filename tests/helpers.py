"""Small helpers the tests share: read back what reached a topic."""

from __future__ import annotations

import time
import uuid
from typing import Any

from keyart.settings import Settings


def consume_raw(
    settings: Settings, topic: str, count: int, timeout: float = 30.0
) -> list[Any]:
    """Read ``count`` messages from the start of ``topic`` with a fresh group."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": "test-" + uuid.uuid4().hex[:8],
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            out.append(message)
    finally:
        consumer.close()
    return out
