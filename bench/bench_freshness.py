"""Freshness: time from an event's produce to its effect being visible in Redis.

Run by hand: ``python -m bench.bench_freshness [--rate 10000] [--seconds 20]``.

One ``keyart streams`` process runs on a private local stack. Impressions are
produced at a steady ``--rate`` (events per second); the broker's delivery
report gives each one's partition and offset. A poller reads the learner's
offsets hash in Redis every 5 ms: an event is visible once the stored next
offset of its partition passes it (its counts were written in the same
transaction). Freshness is that poll's time minus the send time.

The floor printed beside it is the broker's own produce-to-acknowledge time
of the same events. Target: p99 at most 1 second at 10,000 events/s.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import redis

from bench._common import private_stack, wait_assigned, worker
from keyart.keys import Keys
from schemas.codec import get_codec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--flush-ms", type=int, default=500, help="flush_interval_ms")
    args = parser.parse_args()
    from confluent_kafka import Producer

    with private_stack(flush_interval_ms=args.flush_ms) as settings:
        log = Path(tempfile.mkdtemp(prefix="keyart-bench-")) / "worker.log"
        client = redis.Redis.from_url(settings.redis_url)
        key = Keys(settings.redis_prefix).offsets(settings.streams_app_id)
        topic = settings.topic("impressions")
        codec = get_codec()
        with worker(settings, log):
            wait_assigned(log)
            polls: list[tuple[float, dict[bytes, bytes]]] = []
            stop = threading.Event()

            def poll() -> None:
                while not stop.is_set():
                    polls.append((time.time(), client.hgetall(key)))
                    time.sleep(0.005)

            poller = threading.Thread(target=poll, daemon=True)
            poller.start()
            sent: list[tuple[int, int, float, float]] = []

            def delivered(error, message, t0):  # partition, offset, send, ack
                if error is None:
                    sent.append(
                        (message.partition(), message.offset(), t0, time.time())
                    )

            producer = Producer(
                {"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 5}
            )
            total = int(args.rate * args.seconds)
            tick = 0.01
            per_tick = max(1, int(args.rate * tick))
            started = time.time()
            i = 0
            while i < total:
                target = started + (i / args.rate)
                delay = target - time.time()
                if delay > 0:
                    time.sleep(delay)
                for _ in range(min(per_tick, total - i)):
                    video = f"v{i % 3000}"
                    value = codec.encode(
                        "impression",
                        {
                            "event_id": f"i{i}",
                            "event_time": int(time.time() * 1000),
                            "user_id": f"u{i % 10_000}",
                            "video_id": video,
                            "poster_id": f"p{i % 5}",
                            "placement": "row",
                            "context": {"age": 0.5, "night": 1.0},
                        },
                    )
                    t0 = time.time()
                    producer.produce(
                        topic,
                        value=value,
                        key=video.encode(),
                        on_delivery=lambda e, m, t0=t0: delivered(e, m, t0),
                    )
                    i += 1
                producer.poll(0)
            producer.flush(60)
            achieved = total / (time.time() - started)
            deadline = time.time() + 120
            while len(polls) and time.time() < deadline:
                stored = polls[-1][1]
                done = sum(
                    int(v) for k, v in stored.items() if k.startswith(topic.encode())
                )
                if done >= total:
                    break
                time.sleep(0.1)
            time.sleep(0.05)
            stop.set()
            poller.join()
        client.close()

    # An event is visible at the first poll whose stored offset passes it.
    times = np.array([t for t, _ in polls])
    latencies, acks = [], []
    partition_to_stored = {}
    for partition in {p for p, _, _, _ in sent}:
        field = f"{topic}:{partition}".encode()
        stored = np.array([int(s.get(field, 0)) for _, s in polls])
        partition_to_stored[partition] = np.maximum.accumulate(stored)
    for p, offset, t0, t_ack in sorted(sent, key=lambda item: item[2]):
        index = np.searchsorted(partition_to_stored[p], offset + 1)
        if index < len(times):
            latencies.append(times[index] - t0)
        acks.append(t_ack - t0)
    lat = np.array(latencies)
    ack = np.array(acks)
    print(
        f"produced {total:,} impressions at {achieved:,.0f}/s "
        f"(asked {args.rate:,}/s); {len(lat):,} seen in Redis"
    )
    print(
        f"floor: broker ack     p50 {np.percentile(ack, 50) * 1000:7.0f} ms  "
        f"p99 {np.percentile(ack, 99) * 1000:7.0f} ms"
    )
    print(
        f"keyart: Redis-visible p50 {np.percentile(lat, 50) * 1000:7.0f} ms  "
        f"p99 {np.percentile(lat, 99) * 1000:7.0f} ms  max {lat.max() * 1000:.0f} ms"
        f"  (target p99 <= 1000 ms)"
    )

    thirds = np.array_split(lat, 3)
    print(
        "  p99 by third of the run (growing: the learner falls behind): "
        + ", ".join(f"{np.percentile(t, 99) * 1000:.0f} ms" for t in thirds)
    )


if __name__ == "__main__":
    main()
