"""A seeded trace of the gateway's select path, to compare two versions of it.

Run: ``python -m bench.trace_gateway OUT.jsonl`` on each version, then
``cmp`` the files (or compare the digests printed at the end);
``python -m bench.trace_gateway NEW.jsonl --compare OLD.jsonl`` says which
fields of which records moved.

A change that only makes the gateway faster must leave its behaviour as it
was: the same answers, the same decision records on the broker (propensities
included) and the same counters. Steps:

1. freeze the wall clock and the request and decision id prefixes (the only
   inputs besides the seeds that differ between runs), start a private broker
   and redis-server and seed the catalog of :mod:`bench.bench_gateway`, plus
   fresh posters (ramp-up), users' seen posters (deweighting), a LinUCB and an
   FM model;
2. build a :class:`gateway.service.Gateway` with the refresher and the
   retirement thread stopped: the trace evaluates the retirement queue itself
   after every row, so which rows see which statuses does not depend on
   thread timing;
3. answer rows one after the other in three phases: the default rules and
   split, a split over every policy, and every rule turned up (high MMR,
   tight exposure caps, deweighting, a large ramp-up share, scene boosts);
   each row's retirement tasks finish before the next row;
4. stop the gateway (its producer flushes), read every decision and
   poster_published record back from the broker, and write answers, records
   (hex of the bytes produced, sorted by decision id) and the gateway's
   counters as JSON lines.

Latency histograms are left out: they measure the machine, not the gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import secrets
import time
from pathlib import Path

import numpy as np
import orjson

FROZEN_S = 1_800_000_000.0
_real_time = time.time


def _freeze() -> None:
    """Step 1: one wall-clock instant, and id prefixes from a counter."""
    counter = itertools.count()
    time.time = lambda: FROZEN_S  # type: ignore[assignment]
    secrets.token_hex = lambda n=32: f"{next(counter):0{2 * n}x}"  # type: ignore[assignment]


def _seed_extras(settings, rng: np.random.Generator) -> None:
    import redis

    from bandits.features import FEATURE_DIM, cross_features
    from bandits.fm import OnlineFM, fm_features
    from bandits.linucb import LinUCB
    from bench.bench_gateway import VIDEOS
    from keyart.keys import Keys

    keys = Keys(settings.redis_prefix)
    client = redis.Redis.from_url(settings.redis_url)
    now_ms = int(time.time() * 1000)
    pipe = client.pipeline(transaction=False)
    for v in range(0, VIDEOS, 10):  # a fresh poster on every tenth video
        video, poster = f"video-{v}", f"video-{v}-new"
        pipe.hset(
            keys.poster(poster),
            mapping={
                "video_id": video,
                "image_url": f"https://cdn.example/{poster}.jpg",
                "aspect": "2:3",
                "placements": b"[]",
                "features": orjson.dumps({"brightness": 0.5, "faces": 2.0}),
                "tags": orjson.dumps(["tag1", "new art"]),
                "embedding": rng.normal(size=64).astype("<f4").tobytes(),
                "status": "approved",
                "created_ms": now_ms,
            },
        )
        pipe.sadd(keys.posters(video), poster)
    for u in range(200):  # returning users saw some posters recently
        for v in rng.choice(VIDEOS, 40, replace=False).tolist():
            poster = f"video-{v}-p{int(rng.integers(0, 5))}"
            pipe.zadd(keys.seen(f"user-{u}", f"video-{v}"), {poster: now_ms - 1000})
    pipe.execute()

    model = LinUCB(dim=FEATURE_DIM, alpha=0.3)
    X = np.vstack(
        [
            cross_features(
                {"hour": float(rng.random()), "tv": 0.0},
                {"brightness": float(rng.random()), "faces": float(rng.integers(3))},
            )
            for _ in range(400)
        ]
    )
    model.update_many(X, (rng.random(400) < 0.3).astype(np.float64))
    mapping = dict(model.to_mapping())
    mapping["updated_ms"] = now_ms - 5000
    client.hset(keys.model("linucb"), mapping=mapping)
    fm = OnlineFM(n_factors=4, seed=3, learning_rate=0.05)
    for _ in range(300):
        x = fm_features(
            {"hour": float(rng.random())},
            {"brightness": float(rng.random()), "faces": float(rng.integers(3))},
            poster_id=f"video-{int(rng.integers(VIDEOS))}-p{int(rng.integers(5))}",
        )
        fm.learn_one(x, bool(rng.random() < 0.2))
    client.hset(
        keys.model("fm"),
        mapping={"data": orjson.dumps(fm.export()), "version": 1, "updated_ms": 77},
    )
    client.close()


def _requests(rng: np.random.Generator, count: int, offset: int) -> list[bytes]:
    from bench.bench_gateway import ROW, VIDEOS

    placements = ["home_row"] * 6 + ["search", "detail", "tv_grid", "phone_row"]
    out = []
    for i in range(count):
        size = ROW if i % 5 else int(rng.integers(1, ROW + 1))
        videos = rng.choice(VIDEOS, size, replace=False)
        if i % 17 == 0:
            videos[-1] = VIDEOS + i  # a video the catalog does not have
        body = {
            "user_id": f"user-{(offset + i) % 300}",
            "placement": placements[i % len(placements)],
            "video_ids": [f"video-{v}" for v in videos],
            "context": {"hour": float(rng.random()), "tv": float(i % 2)},
            "cues": [f"tag{rng.integers(0, 8)}"] if i % 3 else ["New Art", "x"],
        }
        if i % 4 == 0:
            body["segment"] = f"seg{i % 3}"
        if i % 7 == 0:
            body["request_id"] = f"r{offset + i}"
        out.append(orjson.dumps(body))
    return out


async def _settle(gateway, idle: set) -> None:
    """Finish the row's retirement tasks and evaluate the retirement queue."""
    while True:
        pending = [t for t in asyncio.all_tasks() if t not in idle]
        if not pending:
            break
        await asyncio.gather(*pending)
    retirement = gateway.retirement
    while retirement._queue:
        video_id = next(iter(retirement._queue))
        rules, identity, n, c = retirement._queue.pop(video_id)
        statuses = retirement.evaluate(rules, identity[0], n, c)
        retirement._cache[video_id] = (time.monotonic() + 1e6, identity, statuses)


async def _run(settings, out: list[bytes]) -> None:
    from gateway.config import (
        POLICY_NAMES,
        ExperimentsDocument,
        RulesDocument,
        Variant,
        store_document,
    )
    from gateway.models import SelectRequest
    from gateway.service import Gateway

    gateway = Gateway(settings)
    await gateway.start()
    for task in (gateway._refresher, gateway._retirer):  # Step 2
        task.cancel()
    await asyncio.sleep(0)
    idle = set(asyncio.all_tasks())
    phases = [
        (None, None, _requests(np.random.default_rng(1), 300, 0)),
        (
            None,
            ExperimentsDocument(
                salt="trace",
                variants=[
                    Variant(name=f"v-{p}", policy=p, weight=1.0) for p in POLICY_NAMES
                ],
            ),
            _requests(np.random.default_rng(2), 400, 300),
        ),
        (
            RulesDocument(
                default={
                    "mmr_lambda": 0.6,
                    "exposure_cap_share": 0.25,
                    "exposure_min_impressions": 10,
                    "deweight_factor": 0.3,
                    "ramp_share": 0.4,
                    "ramp_min_impressions": 8000,
                    "scene_boost": 4.0,
                },
                placements={"search": {"mmr_lambda": 0.0, "ramp_share": 0.0}},
            ),
            None,
            _requests(np.random.default_rng(3), 300, 700),
        ),
    ]
    try:
        for rules, experiments, bodies in phases:  # Step 3
            if rules is not None:
                await store_document(
                    gateway.redis, gateway.keys.config("rules"), rules, None
                )
            if experiments is not None:
                await store_document(
                    gateway.redis,
                    gateway.keys.config("experiments"),
                    experiments,
                    None,
                )
            await gateway.refresh()
            for body in bodies:
                answer = await gateway.select(SelectRequest(**orjson.loads(body)))
                out.append(b"answer " + orjson.dumps(answer))
                await _settle(gateway, idle)
    finally:
        await gateway.stop()


def _records(settings, expected: dict[str, int]) -> list[bytes]:
    """Step 4: every decision and poster_published record on the broker.

    The broker's watermarks are not trusted to count records (the local
    broker's may run ahead of what a consumer reads), so each topic is read
    until it holds the records the gateway says it produced.
    """
    from confluent_kafka import Consumer, TopicPartition

    from producers.events import KIND_TO_TOPIC

    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": "trace",
            "enable.auto.commit": False,
        }
    )
    lines = []
    for kind, count in expected.items():
        topic = settings.topic(KIND_TO_TOPIC[kind])
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        found = []
        while len(found) < count:
            message = consumer.poll(10.0)
            if message is None:
                raise RuntimeError(f"{topic}: {len(found)} records, not {count}")
            if message.error():
                raise RuntimeError(str(message.error()))
            found.append((message.key() or b"", message.value()))
        extra = consumer.poll(1.0)
        if extra is not None and not extra.error():
            raise RuntimeError(f"{topic}: more records than the {count} produced")
        consumer.unassign()
        for key, value in sorted(found, key=lambda kv: kv[1]):
            lines.append(f"{kind} {key.decode()} {value.hex()}".encode())
    consumer.close()
    return lines


def _counters() -> list[bytes]:
    from prometheus_client import REGISTRY, generate_latest

    lines = generate_latest(REGISTRY).splitlines()
    return [
        b"metric " + line
        for line in lines
        if line.startswith(b"keyart_gateway")
        and b"_seconds" not in line
        and b"_created" not in line
    ]


def compare(before: Path, after: Path) -> None:
    """Print how two traces differ, field by field of the decision records.

    For a change that cannot keep the bytes (another floating-point order),
    this shows what moved: which fields of which records, and by how much
    the scores did.
    """
    from schemas.codec import get_codec

    codec = get_codec()
    a, b = before.read_bytes().splitlines(), after.read_bytes().splitlines()
    kinds = sorted({line.split(b" ", 1)[0] for line in a + b})
    for kind in kinds:
        part_a = [line for line in a if line.startswith(kind + b" ")]
        part_b = [line for line in b if line.startswith(kind + b" ")]
        same = part_a == part_b
        print(f"{kind.decode():18} {len(part_a):6} / {len(part_b):6} lines, ", end="")
        print("identical" if same else "differ")
        if same or kind != b"decision":
            continue
        fields: dict[str, int] = {}
        worst = 0.0

        def record(line: bytes) -> dict:
            return codec.decode(
                "decision", bytes.fromhex(line.split(b" ")[-1].decode())
            )

        left = sorted((record(line) for line in part_a), key=lambda r: r["event_id"])
        right = sorted((record(line) for line in part_b), key=lambda r: r["event_id"])
        for x, y in zip(left, right, strict=True):
            for name in x:
                if x[name] != y[name]:
                    fields[name] = fields.get(name, 0) + 1
            for s, t in zip(x["scores"], y["scores"], strict=True):
                if s != t:
                    worst = max(worst, abs(s - t) / max(abs(s), abs(t)))
        policies = {r["policy"] for r, q in zip(left, right, strict=True) if r != q}
        print(f"  fields that differ (records): {fields or 'none'}")
        print(f"  policies of the records that differ: {sorted(policies)}")
        print(f"  largest relative score difference: {worst:.3g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument(
        "--compare", type=Path, help="an earlier trace: print how OUT differs"
    )
    args = parser.parse_args()
    if args.compare is not None:
        compare(args.compare, args.out)
        return

    from bench._common import private_stack
    from bench.bench_gateway import SECRET, seed
    from gateway import metrics

    _freeze()
    out: list[bytes] = []
    with private_stack(token_secret=SECRET, redis_budget_ms=5000.0) as settings:
        seed(settings, np.random.default_rng(0))
        _seed_extras(settings, np.random.default_rng(4))
        asyncio.run(_run(settings, out))
        slots = sum(len(orjson.loads(line[7:])["slots"]) for line in out)
        retired = int(metrics.RETIREMENTS._value.get())
        out += _records(settings, {"decision": slots, "poster_published": retired})
    out += _counters()
    args.out.write_bytes(b"\n".join(out) + b"\n")
    for kind in (b"answer", b"decision", b"poster_published", b"metric"):
        part = [line for line in out if line.startswith(kind + b" ")]
        digest = hashlib.sha256(b"\n".join(part)).hexdigest()[:16]
        print(f"{kind.decode():18} {len(part):6} lines  sha256 {digest}")
    print(f"wall {_real_time() - START:.1f} s")


START = _real_time()

if __name__ == "__main__":
    main()
