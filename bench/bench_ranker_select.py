"""The gateway's select latency without and with the offline ranker, in one run.

A private broker and Redis, 4 videos x 5 posters (a 20-candidate row) with
arm counts, Thompson sampling for every request, and two gateways started one
after the other in this process: one with ``KEYART_RANKER_PATH`` unset, one
with it pointing at a logistic-regression ranker trained on synthetic logs.
Each answers 2,000 sequential ``POST /v1/select`` over loopback HTTP; the
figures are client-side wall-clock p50 and p99 in ms. The ranker's target is
that it adds no more than 1 ms at the 99th percentile.

When the gateway is not wired to the ranker yet (``RowDecider`` takes no
``ranker``), the second run is skipped and the script says so.

Run: ``python -m bench.bench_ranker_select``
"""

from __future__ import annotations

import inspect
import secrets
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import orjson
import redis

from bandits.state import ArmStats
from bench._common import private_stack
from keyart.keys import Keys, arm_field
from keyart.settings import Settings, load_settings
from keyart.stack import free_port
from ranking.dataset import build_training_set
from ranking.synthetic import CONTEXT_KEYS, POSTER_KEYS, simulate_logs
from ranking.train import train_model, write_outputs

REQUESTS, ADMIN, SECRET = 2000, secrets.token_hex(16), secrets.token_hex(16)


def seed_catalog(settings: Settings, rng: np.random.Generator) -> list[str]:
    keys, r = Keys(settings.redis_prefix), redis.Redis.from_url(settings.redis_url)
    videos = [f"bv{i}" for i in range(4)]
    for video in videos:
        for j in range(5):
            poster = f"{video}-p{j}"
            features = dict(zip(POSTER_KEYS, rng.random(5).tolist(), strict=True))
            r.hset(
                keys.poster(poster),
                mapping={
                    "video_id": video,
                    "image_url": f"{video}/{poster}.jpg",
                    "aspect": "2:3",
                    "placements": orjson.dumps([]),
                    "features": orjson.dumps(features),
                    "tags": orjson.dumps([]),
                    "status": "approved",
                    "created_ms": int(time.time() * 1000),
                },
            )
            r.sadd(keys.posters(video), poster)
            n = int(rng.integers(0, 3000))
            c = int(rng.binomial(n, 0.08))
            r.hset(keys.arms(video), arm_field(poster), ArmStats(n, c, n, c).pack())
        r.hset(keys.arms(video), "_updated_ms", int(time.time() * 1000))
    r.close()
    return videos


def measure(settings: Settings, videos: list[str]) -> tuple[float, float, str]:
    import uvicorn

    from gateway.app import create_app

    port = free_port(0)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=port, log_config=None,
            access_log=False, lifespan="on",
        )
    )  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    rng = np.random.default_rng(3)
    times = np.empty(REQUESTS)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            response = client.put(
                "/admin/experiments",
                headers={"Authorization": f"Bearer {ADMIN}"},
                json={
                    "document": {
                        "salt": "b",
                        "variants": [{"name": "ts", "policy": "thompson", "weight": 1}],
                    }
                },
            )
            response.raise_for_status()
            for i in range(-200, REQUESTS):
                body = {
                    "user_id": f"u{rng.integers(0, 10_000)}",
                    "placement": "home_row",
                    "video_ids": videos,
                    "context": dict(
                        zip(CONTEXT_KEYS, rng.random(5).tolist(), strict=True)
                    ),
                }
                start = time.perf_counter_ns()
                response = client.post("/v1/select", json=body)
                elapsed = time.perf_counter_ns() - start
                response.raise_for_status()
                if i >= 0:
                    times[i] = elapsed
            metrics = client.get("/metrics").text
    finally:
        server.should_exit = True
        thread.join(timeout=15)
    gauge = next(
        (line for line in metrics.splitlines() if line.startswith("keyart_ranker_un")),
        "keyart_ranker_unavailable (not exported)",
    )
    return np.percentile(times, 50) / 1e6, np.percentile(times, 99) / 1e6, gauge


def main() -> None:
    from gateway.decide import RowDecider

    wired = "ranker" in inspect.signature(RowDecider.__init__).parameters
    logs = simulate_logs(20_000, n_videos=20, seed=0)
    ts = build_training_set(logs.impressions, logs.clicks, logs.catalog)
    with tempfile.TemporaryDirectory() as folder:
        path = write_outputs(Path(folder), [train_model("lr", ts)], [])["lr"]
        with private_stack(token_secret=SECRET, admin_token=ADMIN) as base:
            videos = seed_catalog(base, np.random.default_rng(1))
            print(f"POST /v1/select, 4 videos x 5 posters, Thompson, {REQUESTS} "
                  "requests, client wall-clock ms")  # fmt: skip
            print(f"{'gateway':32} {'p50':>8} {'p99':>8}  ranker gauge")
            runs = [("without ranker", None)]
            if wired:
                runs.append(("with ranker (lr)", path))
            else:
                print("the gateway is not wired to the ranker yet: one run only")
            for name, ranker_path in runs:
                settings = load_settings(
                    **{**base.model_dump(), "ranker_path": ranker_path}
                )
                p50, p99, gauge = measure(settings, videos)
                print(f"{name:32} {p50:8.3f} {p99:8.3f}  {gauge}")


if __name__ == "__main__":
    main()
