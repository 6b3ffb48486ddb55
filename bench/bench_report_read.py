"""Speed of reading keyart's logs from Kafka for ``keyart report``.

Produces 200,000 impressions (and 6,000 clicks) to a private broker, then
times :func:`bandits.evaluation.logs.load_kafka_logs` (fetch, decode, build
DataFrames, join clicks) and :func:`bandits.evaluation.reports.variant_table`.
The ceiling, measured in the same run, is a bare confluent-kafka consumer that
fetches the same impression records without decoding them.

Run by hand: ``python -m bench.bench_report_read``.
"""

from __future__ import annotations

import time
import uuid

from bandits.evaluation.logs import load_kafka_logs
from bandits.evaluation.reports import variant_table
from bench._common import private_stack
from keyart.settings import Settings
from producers.events import EventProducer

N_IMPRESSIONS, N_CLICKS = 200_000, 6_000


def _produce(settings: Settings) -> None:
    producer = EventProducer(settings, config={"linger.ms": 20})
    for i in range(N_IMPRESSIONS):
        producer.send(
            "impression",
            {
                "event_id": f"i{i}",
                "event_time": 1_700_000_000_000 + i,
                "user_id": f"u{i % 20_000}",
                "video_id": f"v{i % 50}",
                "poster_id": f"p{i % 200}",
                "placement": "home",
                "variant": ("control", "ts", "linucb")[i % 3],
                "propensity": 0.25,
            },
        )
    for i in range(0, N_CLICKS * 30, 30):
        producer.send(
            "click",
            {
                "event_id": f"c{i}",
                "event_time": 1_700_000_000_000 + i + 1000,
                "impression_id": f"i{i}",
                "user_id": f"u{i % 20_000}",
                "video_id": f"v{i % 50}",
                "poster_id": f"p{i % 200}",
            },
        )
    producer.flush(120)


def _raw_read(settings: Settings) -> int:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    topic = settings.topic("impressions")
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": "bench-" + uuid.uuid4().hex[:6],
            "enable.partition.eof": True,
        }
    )
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    done, count = set(), 0
    while len(done) < len(parts):
        message = consumer.poll(0.5)
        if message is None:
            continue
        error = message.error()
        if error is not None and error.code() == KafkaError._PARTITION_EOF:
            done.add(message.partition())
        elif error is None:
            count += 1
    consumer.close()
    return count


def main() -> None:
    with private_stack() as settings:
        start = time.perf_counter()
        _produce(settings)
        print(f"produced in {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        count = _raw_read(settings)
        ceiling = time.perf_counter() - start
        start = time.perf_counter()
        logs = load_kafka_logs(settings)
        loaded = time.perf_counter() - start
        start = time.perf_counter()
        table = variant_table(logs.impressions)
        tabled = time.perf_counter() - start
        clicks = int(table["clicks"].sum())
        print(f"{count} impressions, {clicks} clicked")
        print(
            f"  ceiling (raw fetch of impressions): {ceiling:.2f} s,"
            f" {count / ceiling:,.0f} records/s"
        )
        total = N_IMPRESSIONS + N_CLICKS
        print(
            f"  load_kafka_logs (3 topics, decode, join): {loaded:.2f} s,"
            f" {total / loaded:,.0f} records/s ({loaded / ceiling:.1f}x ceiling)"
        )
        print(f"  variant_table: {tabled * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
