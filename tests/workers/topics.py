"""Read back every record of a topic (the poster tests' view of Kafka)."""

from __future__ import annotations

import time
import uuid


def read_all(settings, short_name, idle_s=1.5):
    """Every record on a topic, from the start of each partition.

    Reading stops once each partition's position reached the high watermark
    of the fetch responses (the broker's ListOffsets under-reports) and no
    record arrived for ``idle_s``.
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    topic = settings.topic(short_name)
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": "read-" + uuid.uuid4().hex[:8],
            "enable.auto.commit": False,
        }
    )
    out = []
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions]
        )
        last = time.monotonic()
        deadline = last + 30
        while time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and not message.error():
                out.append(message)
                last = time.monotonic()
            elif time.monotonic() - last > idle_s:
                break
    finally:
        consumer.close()
    return out
