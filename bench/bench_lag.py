"""How long one `keyart lag` measurement takes, and one exporter scrape.

Set-up: a private local stack, keyart's 7 topics with 8 partitions (36
partitions in all), batched records on impressions and clicks, and 3 consumer
groups with committed offsets. Printed beside, from the same run:

* the floor: one bare metadata round trip to the broker, which any measurement
  needs at least once;
* the naive way: committed offsets plus ListOffsets "latest" per partition,
  which is what most lag tools do and which under-reports the log end on this
  broker when producers batch (see shared notes on tansu).

Run: ``python bench/bench_lag.py``
"""

from __future__ import annotations

import statistics
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from prometheus_client import CollectorRegistry

from keyart.health import HealthServer
from keyart.lag import LagCollector, committed_offsets, measure_lag
from keyart.settings import load_settings
from keyart.stack import LocalStack, free_port

GROUPS = ("bench-learner", "bench-posters", "bench-audit")
RECORDS = 20_000
REPEAT = 10


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    fn()
    runs = []
    for _ in range(REPEAT):
        started = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - started) * 1e3)
    return statistics.median(runs), min(runs)


def main() -> None:
    state = Path(tempfile.mkdtemp(prefix="bench-lag-"))
    settings = load_settings(
        state_dir=state,
        broker_port=0,
        redis_url=f"redis://127.0.0.1:{free_port(0)}/0",
        topic_prefix="bench",
    )
    with LocalStack(settings, state) as info:
        bootstrap = info.kafka_bootstrap
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
        for i in range(RECORDS):
            topic = settings.topic("impressions" if i % 4 else "clicks")
            producer.produce(topic, b"r%d" % i, key=b"v%d" % (i % 500))
        producer.flush(30)
        for n, group in enumerate(GROUPS):
            consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
            offsets = [
                TopicPartition(settings.topic(t), p, 100 * (n + 1))
                for t in ("impressions", "clicks")
                for p in range(settings.topic_partitions)
            ]
            consumer.commit(offsets=offsets, asynchronous=False)
            consumer.close()

        rows = measure_lag(bootstrap, list(GROUPS))
        print(f"{len(rows)} group-partition rows, {RECORDS} records, 3 groups")

        admin = AdminClient({"bootstrap.servers": bootstrap})
        floor = timed(lambda: admin.list_topics(timeout=10))
        ours = timed(lambda: measure_lag(bootstrap, list(GROUPS)))

        def naive() -> None:
            consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "naive"})
            for offsets in committed_offsets(bootstrap, list(GROUPS)).values():
                for topic, partition in offsets:
                    tp = TopicPartition(topic, partition)
                    consumer.get_watermark_offsets(tp, timeout=10)
            consumer.close()

        naive_ms = timed(naive)
        registry = CollectorRegistry()
        registry.register(LagCollector(bootstrap, list(GROUPS)))
        with HealthServer(port=0, registry=registry, interval=0) as server:
            scrape = timed(
                lambda: urllib.request.urlopen(server.url + "/metrics").read()  # noqa: S310
            )
        for label, (median, best) in (
            ("floor: one metadata round trip", floor),
            ("naive: committed + ListOffsets each", naive_ms),
            ("keyart lag: one full measurement", ours),
            ("keyart lag --serve: one /metrics scrape", scrape),
        ):
            print(f"{label:42} {median:8.1f} ms median (min {best:.1f})")


if __name__ == "__main__":
    main()
