"""Events per second from the broker to Redis-visible state, one worker process.

Run by hand: ``python -m bench.bench_learner_throughput [--events 200000]``.

The same events are read twice from a private local broker in one run:

1. the ceiling: a bare aiokafka consumer that fetches and decodes every record
   with the schemas codec, and does nothing else;
2. keyart: one ``keyart streams`` process, timed from its first offsets in
   Redis until Redis holds the offsets of the last record (the state being
   visible), so the Faust join is not counted.

Target: keyart at least 25 % of the ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import redis

from bench._common import applied, private_stack, wait_assigned, worker
from producers.events import EventProducer
from schemas.codec import get_codec


def produce(settings, events: int, seed: int, videos: int = 5000) -> int:
    """Impressions of ``videos`` titles with Zipf (s=1) popularity, 5 % clicked.

    Real catalogs are heavy-tailed: a few titles take most of the traffic.
    """
    rng = random.Random(seed)
    weights = 1.0 / np.arange(1, videos + 1)
    draws = np.random.default_rng(seed).choice(
        videos, size=events, p=weights / weights.sum()
    )
    producer = EventProducer(settings, config={"linger.ms": 50})
    base = int(time.time() * 1000) - events
    sent = 0
    for i in range(events):
        video = f"v{draws[i]}"
        poster = f"p{rng.randrange(5)}"
        producer.send(
            "impression",
            {
                "event_id": f"i{i}",
                "event_time": base + i,
                "user_id": f"u{rng.randrange(100_000)}",
                "video_id": video,
                "poster_id": poster,
                "placement": "row",
                "context": {"age": rng.random(), "night": float(rng.random() < 0.3)},
                "poster_features": {"dark": int(poster[1:]) / 5, "faces": 1.0},
            },
        )
        sent += 1
        if rng.random() < 0.05:
            producer.send(
                "click",
                {
                    "event_id": f"c{i}",
                    "event_time": base + i + 500,
                    "impression_id": f"i{i}",
                    "user_id": "u",
                    "video_id": video,
                    "poster_id": poster,
                    "placement": "row",
                },
            )
            sent += 1
    producer.flush(120)
    return sent


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, all threads (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def bare_ceiling(settings, total: int) -> tuple[float, float]:
    from aiokafka import AIOKafkaConsumer

    codec = get_codec()
    topics = {
        settings.topic("impressions"): "impression",
        settings.topic("clicks"): "click",
    }
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id="bare-" + uuid.uuid4().hex[:6],
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=5000,
    )
    await consumer.start()
    seen, started, cpu = 0, None, 0.0
    try:
        while seen < total:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for tp, records in batch.items():
                if started is None:
                    started = time.perf_counter()
                    cpu = time.process_time()
                kind = topics[tp.topic]
                for record in records:
                    codec.decode(kind, record.value)
                seen += len(records)
    finally:
        await consumer.stop()
    wall = time.perf_counter() - started
    return seen / wall, seen / (time.process_time() - cpu)


def _alive(process: subprocess.Popen[bytes], log: Path) -> None:
    if process.poll() is not None:
        raise RuntimeError(f"the learner exited with {process.returncode}: see {log}")


def keyart_rate(settings, total: int, log: Path) -> tuple[float, float, float]:
    client = redis.Redis.from_url(settings.redis_url)
    with worker(settings, log) as process:
        wait_assigned(log)
        first = 0
        while (first := applied(client, settings)) == 0:
            _alive(process, log)
            time.sleep(0.005)
        started = time.perf_counter()
        cpu = cpu_seconds(process.pid)
        while applied(client, settings) < total:
            _alive(process, log)
            time.sleep(0.005)
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(process.pid) - cpu
    client.close()
    return (total - first) / elapsed, (total - first) / cpu, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    with private_stack(flush_interval_ms=500) as settings:
        total = produce(settings, args.events, args.seed)
        print(f"produced {total} events ({args.events} impressions + clicks)")
        # Ceiling before and after keyart: the machine's load drifts.
        before, before_cpu = asyncio.run(bare_ceiling(settings, total))
        log = Path(tempfile.mkdtemp(prefix="keyart-bench-")) / "worker.log"
        rate, rate_cpu, elapsed = keyart_rate(settings, total, log)
        after, after_cpu = asyncio.run(bare_ceiling(settings, total))
        ceiling, ceiling_cpu = (before + after) / 2, (before_cpu + after_cpu) / 2
        print(
            f"ceiling: bare aiokafka consume+decode  {ceiling:10,.0f} events/s "
            f"(before {before:,.0f}, after {after:,.0f}); "
            f"{ceiling_cpu:,.0f} per CPU second"
        )
        print(
            f"keyart:  broker -> Redis-visible state {rate:10,.0f} events/s "
            f"({elapsed:.1f} s); {rate_cpu:,.0f} per CPU second of the worker"
        )
        print(
            f"ratio:   {rate / ceiling:.1%} of the ceiling (target >= 25%); "
            f"per CPU second {rate_cpu / ceiling_cpu:.1%}"
        )
        print(
            f"load average at the end: {os.getloadavg()[0]:.1f} "
            f"on {os.cpu_count()} CPUs"
        )


if __name__ == "__main__":
    main()
