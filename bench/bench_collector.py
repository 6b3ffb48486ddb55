"""Collector: impression events per second into Kafka through one gateway
process, beside a bare confluent-kafka producer loop, in one run.

Run: ``python bench/bench_collector.py [--seconds 10] [--batch 500]``.

Steps:

1. start a private broker and redis-server (free ports); seed the posters the
   events refer to;
2. start one ``keyart gateway`` process;
3. ours: a separate Python process posts batches of fresh impression events
   (valid signed tokens) on 4 connections for ``--seconds``; every event is
   validated, token-checked, deduplicated in Redis, Avro-encoded, produced and
   acknowledged by the broker before its batch is answered;
4. ceiling: a bare confluent-kafka producer loop in another process sends the
   same number of already encoded impression records to the same topic and
   waits for every acknowledgement;
5. print both rates.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import private_stack  # noqa: E402
from bench.bench_gateway import SECRET, HttpConnection, gateway_process  # noqa: E402
from gateway.token import ImpressionToken, TokenSigner  # noqa: E402
from keyart.keys import Keys  # noqa: E402
from keyart.settings import Settings  # noqa: E402

VIDEOS = 200


def tokens(count: int, run: str) -> list[str]:
    """``count`` signed tokens, each for one impression (the collector takes one
    impression per token)."""
    signer = TokenSigner(SECRET.encode())
    now_ms = int(time.time() * 1000)
    return [
        signer.sign(
            ImpressionToken(
                f"{run}-d{i}",
                f"user-{i}",
                f"video-{i % VIDEOS}",
                f"video-{i % VIDEOS}-p0",
                "home_row",
                "thompson",
                "ts",
                1,
                0.4,
                now_ms,
                1,
                "",
            )
        )
        for i in range(count)
    ]


def seed(settings: Settings) -> None:
    import redis

    keys = Keys(settings.redis_prefix)
    client = redis.Redis.from_url(settings.redis_url)
    for v in range(VIDEOS):
        client.hset(
            keys.poster(f"video-{v}-p0"),
            mapping={
                "video_id": f"video-{v}",
                "aspect": "2:3",
                "status": "approved",
                "features": b'{"brightness": 0.4}',
            },
        )
    client.close()


async def _post_batches(url, signed, batch, seconds, connections, run, out):
    host, port = url.removeprefix("http://").split(":")
    accepted = 0
    sent = 0
    started = time.perf_counter()
    now_ms = int(time.time() * 1000)

    async def runner(worker: int) -> None:
        nonlocal accepted, sent
        connection = await HttpConnection.open(host, int(port))
        mine = signed[worker::connections]
        n = 0
        while time.perf_counter() - started < seconds:
            if (n + 1) * batch > len(mine):  # every token is used once
                break
            events = [
                {
                    "type": "impression",
                    "event_id": f"{run}-{worker}-{n}-{i}",
                    "event_time": now_ms,
                    "token": mine[n * batch + i],
                }
                for i in range(batch)
            ]
            n += 1
            status, raw = await connection.post(
                "/v1/events", orjson.dumps({"events": events})
            )
            answer = orjson.loads(raw)
            if status != 200 or answer["errors"]:
                raise RuntimeError(f"collector refused: {raw[:300]!r}")
            accepted += answer["accepted"]
            sent += batch

    await asyncio.gather(*(runner(w) for w in range(connections)))
    out.put((accepted, sent, time.perf_counter() - started))


def _ours(url, signed, batch, seconds, connections, run, out):
    import uvloop

    uvloop.run(_post_batches(url, signed, batch, seconds, connections, run, out))


def _bare(settings_json, count, out):
    from confluent_kafka import Producer

    from keyart.settings import Settings
    from producers.events import KIND_TO_TOPIC
    from schemas.codec import get_codec

    settings = Settings.model_validate_json(settings_json)
    codec = get_codec()
    now_ms = int(time.time() * 1000)
    values = [
        codec.encode(
            "impression",
            {
                "event_id": f"bare-{i}",
                "event_time": now_ms,
                "user_id": f"user-{i}",
                "video_id": f"video-{i % VIDEOS}",
                "poster_id": f"video-{i % VIDEOS}-p0",
                "placement": "home_row",
                "variant": "ts",
                "policy": "thompson",
                "propensity": 0.4,
                "poster_features": {"brightness": 0.4},
            },
        )
        for i in range(1000)
    ]
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "linger.ms": 5,
            "acks": "all",
            "partitioner": "murmur2_random",
        }
    )
    topic = settings.topic(KIND_TO_TOPIC["impression"])
    started = time.perf_counter()
    for i in range(count):
        while True:
            try:
                producer.produce(topic, values[i % 1000], key=f"video-{i % VIDEOS}")
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    left = producer.flush(60)
    out.put((count - left, time.perf_counter() - started))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()
    ctx = multiprocessing.get_context("spawn")
    with private_stack() as settings, tempfile.TemporaryDirectory() as folder:
        seed(settings)
        # More than the rate one process reaches; a connection that uses up its
        # share stops, and the rate is taken over the time actually spent.
        signed = tokens(int(args.seconds * 60_000), "r")
        with gateway_process(settings, Path(folder) / "gateway.log") as url:
            out = ctx.Queue()
            warm = ctx.Process(
                target=_ours, args=(url, tokens(20_000, "w"), 100, 2.0, 2, "w", out)
            )
            warm.start()
            out.get(timeout=120)
            warm.join()
            load = ctx.Process(
                target=_ours,
                args=(
                    url,
                    signed,
                    args.batch,
                    args.seconds,
                    args.connections,
                    "r",
                    out,
                ),
            )
            load.start()
            accepted, sent, elapsed = out.get(timeout=args.seconds + 300)
            load.join()
        bare = ctx.Process(target=_bare, args=(settings.model_dump_json(), sent, out))
        bare.start()
        delivered, bare_elapsed = out.get(timeout=600)
        bare.join()

    ours = accepted / elapsed
    ceiling = delivered / bare_elapsed
    print(
        f"\none gateway process, batches of {args.batch} impressions on "
        f"{args.connections} connections, {accepted} events in {elapsed:.1f} s"
    )
    print(f"{'':38}{'events/s':>12}")
    print(f"{'collector (validate, dedupe, produce)':38}{ours:12.0f}")
    print(f"{'bare producer loop (ceiling)':38}{ceiling:12.0f}")
    print(f"{'share of the ceiling':38}{ours / ceiling:12.1%}")


if __name__ == "__main__":
    main()
