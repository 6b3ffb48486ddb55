"""Redis stopped, slow or gone, and the broker gone: the gateway still answers.

A private redis-server is started for this module, so stopping it (SIGSTOP
makes it accept connections and never answer, like an overloaded server)
touches no other test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from bandits.state import ArmStats
from keyart.stack import free_port, redis_server_binary
from tests.gateway.conftest import TOKEN_SECRET, add_poster, new_id, serve
from tests.helpers import wait_for_redis

BUDGET_MS = 50.0


@pytest.fixture
def private_redis(tmp_path) -> Iterator[tuple[str, subprocess.Popen]]:
    binary = redis_server_binary()
    assert binary is not None, "redis-server is needed (Debian redis-server)"
    port = free_port(0)
    process = subprocess.Popen(
        [str(binary), "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    wait_for_redis(url)
    yield url, process
    if process.poll() is None:
        os.kill(process.pid, signal.SIGCONT)
        process.terminate()
        process.wait(timeout=10)


def _timed_select(client: httpx.Client, user: str, videos: list[str]):
    started = time.monotonic()
    response = client.post(
        "/v1/select",
        json={"user_id": user, "placement": "home_row", "video_ids": videos},
    )
    return response, time.monotonic() - started


def test_stopped_then_dead_redis_gives_deterministic_fallbacks_never_5xx(
    make_settings, private_redis
):
    url, process = private_redis
    settings = make_settings(
        topics=True,
        redis_url=url,
        token_secret=TOKEN_SECRET,
        redis_budget_ms=BUDGET_MS,
    )
    server, served = serve(settings)
    try:
        video, unknown = new_id("v"), new_id("v")
        best, other = new_id("p"), new_id("p")
        add_poster(served, video, best, stats=ArmStats(1000, 90, 1000, 90))
        add_poster(served, video, other, stats=ArmStats(1000, 30, 1000, 30))
        live, _ = _timed_select(served.client, "u0", [video])
        assert live.status_code == 200
        assert live.json()["slots"][0]["fallback"] is False

        os.kill(process.pid, signal.SIGSTOP)
        reasons = set()
        for i in range(8):
            response, elapsed = _timed_select(served.client, f"u{i}", [video, unknown])
            assert response.status_code == 200, response.text
            assert elapsed < BUDGET_MS / 1000 + 0.25
            known, missing = response.json()["slots"]
            assert known["fallback"] is True and known["poster_id"] == best
            assert known["propensity"] == 1.0 and known["token"]
            assert missing["poster_id"] is None
            assert missing["reason"].endswith("no_cached_posters")
            reasons.add(known["reason"])
        assert reasons == {"redis_timeout", "circuit_open"}

        os.kill(process.pid, signal.SIGCONT)
        deadline = time.monotonic() + 10
        while True:
            response, _ = _timed_select(served.client, "back", [video])
            if not response.json()["slots"][0]["fallback"]:
                break
            assert time.monotonic() < deadline, "never went back to live state"
            time.sleep(0.2)

        process.terminate()
        process.wait(timeout=10)
        for i in range(5):
            response, elapsed = _timed_select(served.client, f"d{i}", [video])
            assert response.status_code == 200
            slot = response.json()["slots"][0]
            assert slot["fallback"] is True and slot["poster_id"] == best
            assert elapsed < BUDGET_MS / 1000 + 0.25
        ready = served.client.get("/readyz")
        assert ready.status_code == 503 and not ready.json()["checks"]["redis"]["ok"]

        metrics = served.client.get("/metrics").text
        assert 'keyart_gateway_fallbacks_total{reason="redis_timeout"}' in metrics
        assert 'keyart_gateway_fallbacks_total{reason="redis_error"}' in metrics or (
            'keyart_gateway_fallbacks_total{reason="circuit_open"}' in metrics
        )
    finally:
        served.client.close()
        served.redis.close()
        server.stop()


def test_a_dead_broker_does_not_slow_select(make_settings):
    settings = make_settings(topics=True, token_secret=TOKEN_SECRET).model_copy(
        update={"kafka_bootstrap": f"127.0.0.1:{free_port(0)}"}
    )
    server, served = serve(settings)
    try:
        video = new_id("v")
        add_poster(served, video, new_id("p"), stats=ArmStats(10, 1, 10, 1))
        for i in range(20):
            response, elapsed = _timed_select(served.client, f"u{i}", [video])
            assert response.status_code == 200
            assert response.json()["slots"][0]["fallback"] is False
            assert elapsed < 0.5
    finally:
        served.client.close()
        served.redis.close()
        server.stop()


def test_a_redis_that_lost_its_scripts_still_serves_live_state(
    make_settings, private_redis
):
    """A restarted Redis has no scripts: the row script is loaded again."""
    url, _ = private_redis
    # The reload costs two more round trips inside the row's budget; 20 ms by
    # default, which a loaded machine overruns now and then, and a row that
    # overruns it is served the fallback. What is checked is the reload.
    settings = make_settings(
        topics=True, redis_url=url, token_secret=TOKEN_SECRET, redis_budget_ms=200.0
    )
    server, served = serve(settings)
    try:
        video, best, other = new_id("v"), new_id("p"), new_id("p")
        add_poster(served, video, best, stats=ArmStats(1000, 90, 1000, 90))
        add_poster(served, video, other, stats=ArmStats(1000, 30, 1000, 30))
        for round_ in range(3):
            served.redis.script_flush()
            assert served.redis.script_exists(_row_script_sha()) == [False]
            response, _ = _timed_select(served.client, f"u{round_}", [video])
            assert response.status_code == 200, response.text
            slot = response.json()["slots"][0]
            assert slot["fallback"] is False, slot
            assert served.redis.script_exists(_row_script_sha()) == [True]
    finally:
        served.client.close()
        served.redis.close()
        server.stop()


def _row_script_sha() -> str:
    import hashlib

    from gateway.state import _ROW_SCRIPT

    return hashlib.sha1(_ROW_SCRIPT.encode(), usedforsecurity=False).hexdigest()


def test_dashboard_reads_answer_503_naming_redis_when_it_is_gone(
    make_settings, private_redis
):
    """The dashboard's JSON answers read Redis; with Redis dead they say so
    with a 503, as the admin routes do, instead of an unhandled 500."""
    url, process = private_redis
    settings = make_settings(
        topics=True, redis_url=url, token_secret=TOKEN_SECRET, redis_budget_ms=BUDGET_MS
    )
    server, served = serve(settings)
    try:
        assert served.client.get("/readyz").status_code == 200
        process.terminate()
        process.wait(timeout=10)
        for path in (
            "/dashboard/api/videos",
            "/dashboard/api/videos/v-1",
            "/dashboard/api/ops",
        ):
            response = served.client.get(path)
            assert response.status_code == 503, (path, response.text)
            assert response.json()["detail"].startswith("redis (KEYART_REDIS_URL)")
        assert served.client.get("/dashboard").status_code == 200
    finally:
        served.client.close()
        served.redis.close()
        server.stop()
