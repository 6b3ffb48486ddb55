"""The gateway's producer: records queued one by one or a batch at a time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from confluent_kafka import Producer

from gateway.broker import GatewayProducer
from gateway.metrics import DECISION_LOG_FAILURES
from keyart.settings import Settings
from keyart.stack import free_port
from schemas.codec import get_codec
from tests.helpers import consume_raw


def _decision(event_id: str, video_id: str) -> dict[str, object]:
    return {
        "event_id": event_id,
        "event_time": 1_700_000_000_000,
        "user_id": "u1",
        "video_id": video_id,
        "poster_id": f"{video_id}-p0",
        "placement": "home_row",
        "variant": "ts",
        "policy": "thompson",
        "propensity": 0.5,
    }


def _failures(reason: str) -> float:
    return DECISION_LOG_FAILURES.labels(reason=reason)._value.get()


@pytest.fixture
def producer(settings: Settings) -> Iterator[GatewayProducer]:
    loop = asyncio.new_event_loop()
    made = GatewayProducer(settings)
    made.start(loop)
    try:
        yield made
    finally:
        made.close()
        loop.close()


def test_a_batch_lands_on_the_partitions_one_by_one_logging_gives(producer, settings):
    videos = [f"video-{i}" for i in range(24)]
    for video in videos:
        producer.log("decision", _decision(f"one-{video}", video))
    producer.log_many("decision", [_decision(f"many-{v}", v) for v in videos])
    assert producer._log_producer.flush(10) == 0

    messages = consume_raw(settings, settings.topic("decisions"), 2 * len(videos))
    where: dict[str, dict[str, int]] = {"one": {}, "many": {}}
    for message in messages:
        record = get_codec().decode("decision", message.value())
        assert message.key() == record["video_id"].encode()
        how = record["event_id"].split("-", 1)[0]
        where[how][record["video_id"]] = message.partition()
    assert where["many"] == where["one"] and len(where["one"]) == len(videos)
    assert len(set(where["one"].values())) > 1  # the keys do spread


def test_a_batch_counts_records_it_cannot_encode_or_queue(producer, settings):
    unreadable, full = _failures("encode"), _failures("queue_full")
    producer.log_many("decision", [{"event_id": "no fields"}])
    assert _failures("encode") == unreadable + 1

    # The same producer class with a queue of three records, whose batches
    # wait for a second before they are sent: the fourth and fifth are refused.
    producer._log_producer = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "linger.ms": 1000,
            "queue.buffering.max.messages": 3,
        }
    )
    producer.log_many("decision", [_decision(f"d{i}", "v") for i in range(5)])
    assert _failures("queue_full") == full + 2


def test_a_decision_the_broker_never_takes_is_counted(settings):
    # The decision log's producer reports failed records only; this checks
    # that a failure still reaches the counter. Nobody listens on the port.
    nowhere = settings.model_copy(
        update={"kafka_bootstrap": f"127.0.0.1:{free_port(0)}"}
    )
    loop = asyncio.new_event_loop()
    made = GatewayProducer(nowhere, timeout_s=1.0)
    made.start(loop)
    before = _failures("broker")
    try:
        made.log_many("decision", [_decision("lost", "v")])
        deadline = time.monotonic() + 10
        while _failures("broker") == before and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.3)  # a second report of the same record would land by now
        assert _failures("broker") == before + 1
    finally:
        made.close(timeout=0.5)
        loop.close()
