"""Small helpers the tests share: read back what reached a topic."""

from __future__ import annotations

import os
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


def wait_for_redis(url: str, timeout_s: float = 10.0) -> None:
    """Block until the Redis at ``url`` answers PING (a server just started)."""
    import redis

    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "private redis did not start"
                time.sleep(0.05)
    finally:
        client.close()


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    """This process's environment with every set value of ``settings`` as its
    ``KEYART_*`` variable, for a ``keyart`` child on the test stack."""
    env = dict(os.environ)
    for key, value in settings.model_dump(mode="json").items():
        if value is not None:
            env[f"KEYART_{key.upper()}"] = str(value)
    env.update(extra)
    return env


def poster_worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a ``keyart posters worker`` child on the test stack."""
    return {
        **os.environ,
        "KEYART_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "KEYART_TOPIC_PREFIX": settings.topic_prefix,
        "KEYART_POSTER_GROUP_ID": settings.poster_group_id,
        "KEYART_DATABASE_URL": settings.database_url,
        "KEYART_POSTER_STORE": str(settings.poster_store),
        "KEYART_DATA_CACHE": str(settings.data_cache),
        "KEYART_STATE_DIR": str(settings.state_dir),
        **extra,
    }
