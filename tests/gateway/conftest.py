"""Gateway fixtures: a real uvicorn server on a free port, and catalog seeding.

The server runs in a thread of the test process with its own event loop; its
Redis and broker are the session's real ones (tests/conftest.py).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from bandits.state import ArmStats
from keyart.keys import Keys, arm_field
from keyart.settings import Settings
from keyart.stack import free_port

TOKEN_SECRET = "test-token-secret"
ADMIN_TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


class ServerThread:
    """uvicorn serving an app in a daemon thread until :meth:`stop`."""

    def __init__(self, app: Any, port: int) -> None:
        import uvicorn

        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_config=None,
            lifespan="on",
            access_log=False,
        )
        self.server = uvicorn.Server(config)
        self.url = f"http://127.0.0.1:{port}"
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@dataclass
class Served:
    """A running gateway and what a test needs to talk to it and its Redis."""

    url: str
    settings: Settings
    keys: Keys
    redis: Any
    client: httpx.Client
    app: Any

    def select(self, user: str, videos: Sequence[str], **extra: Any) -> Any:
        body = {"user_id": user, "placement": "home_row", "video_ids": list(videos)}
        body.update(extra)
        response = self.client.post("/v1/select", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    def set_rules(self, **default: Any) -> int:
        current = self.client.get("/admin/rules", headers=ADMIN).json()
        response = self.client.put(
            "/admin/rules",
            headers=ADMIN,
            json={
                "expected_version": current["version"],
                "document": {"default": default, "placements": {}},
            },
        )
        assert response.status_code == 200, response.text
        return response.json()["version"]

    def set_variants(self, *variants: tuple[str, str, float], salt: str = "t") -> int:
        response = self.client.put(
            "/admin/experiments",
            headers=ADMIN,
            json={
                "document": {
                    "salt": salt,
                    "variants": [
                        {"name": n, "policy": p, "weight": w} for n, p, w in variants
                    ],
                }
            },
        )
        assert response.status_code == 200, response.text
        return response.json()["version"]


RULES_OFF = {
    "exposure_cap_share": 1.0,
    "deweight_factor": 1.0,
    "mmr_lambda": 0.0,
    "ramp_share": 0.0,
    "scene_boost": 1.0,
    "retire_min_impressions": 10**9,
}
"""Every rule at its neutral value: a test turns on only the one it checks."""


def serve(settings: Settings) -> tuple[ServerThread, Served]:
    import redis

    from gateway.app import create_app

    app = create_app(settings)
    server = ServerThread(app, free_port(0)).start()
    served = Served(
        url=server.url,
        settings=settings,
        keys=Keys(settings.redis_prefix),
        redis=redis.Redis.from_url(settings.redis_url),
        client=httpx.Client(base_url=server.url, timeout=10),
        app=app,
    )
    return server, served


@pytest.fixture(scope="module")
def gateway(make_settings: Callable[..., Settings]) -> Iterator[Served]:
    """A gateway with its own topic and key prefix, shared by a test module."""
    settings = make_settings(
        topics=True,
        token_secret=TOKEN_SECRET,
        admin_token=ADMIN_TOKEN,
        redis_budget_ms=200.0,
    )
    server, served = serve(settings)
    try:
        yield served
    finally:
        served.client.close()
        served.redis.close()
        server.stop()


def sign_token(fields: object) -> str:
    """A token signed with the gateway's secret around any JSON payload."""
    import hashlib
    import hmac

    from gateway.token import MAC_BYTES, _b64

    payload = orjson.dumps(fields)
    mac = hmac.new(TOKEN_SECRET.encode(), payload, hashlib.sha256).digest()
    return f"{_b64(payload)}.{_b64(mac[:MAC_BYTES])}"


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def add_poster(
    served: Served,
    video: str,
    poster: str,
    *,
    aspect: str = "2:3",
    stats: ArmStats | None = None,
    tags: Sequence[str] = (),
    features: dict[str, float] | None = None,
    embedding: Sequence[float] | None = None,
    placements: Sequence[str] = (),
    status: str = "approved",
) -> None:
    """Write a poster the way the learner does: catalog hash, set, arm stats."""
    keys, r = served.keys, served.redis
    fields: dict[str, Any] = {
        "video_id": video,
        "image_url": f"{video}/{poster}.jpg",
        "aspect": aspect,
        "placements": orjson.dumps(list(placements)),
        "features": orjson.dumps(features or {"brightness": 0.5}),
        "tags": orjson.dumps(list(tags)),
        "status": status,
        "created_ms": int(time.time() * 1000),
    }
    if embedding is not None:
        fields["embedding"] = np.asarray(embedding, dtype="<f4").tobytes()
    r.hset(keys.poster(poster), mapping=fields)
    if status == "approved":
        r.sadd(keys.posters(video), poster)
    if stats is not None:
        r.hset(keys.arms(video), arm_field(poster), stats.pack())
    r.hset(keys.arms(video), "_updated_ms", int(time.time() * 1000))


def read_records(
    settings: Settings,
    short_topic: str,
    kind: str,
    done: Callable[[list[dict[str, Any]]], bool],
    timeout: float = 20.0,
) -> list[dict[str, Any]]:
    """Decode records of a topic from its start until ``done(records)`` holds."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from schemas.codec import get_codec

    topic = settings.topic(short_topic)
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": "keyart-tests-unused",
            "enable.auto.commit": False,
        }
    )
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    records: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while not done(records) and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and not message.error():
                records.append(get_codec().decode(kind, message.value()))
    finally:
        consumer.close()
    return records
