"""Redis stopped, slow or gone, and the broker gone: the gateway still answers.

A private redis-server is started for this module, so stopping it (SIGSTOP
makes it accept connections and never answer, like an overloaded server)
touches no other test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
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
    # Under the default 20 ms Redis budget a loaded machine holds the
    # gateway's thread back that long now and then, and the rows it then
    # sheds come from the fallback. What is checked here is the broker.
    settings = make_settings(
        topics=True, token_secret=TOKEN_SECRET, redis_budget_ms=200.0
    ).model_copy(update={"kafka_bootstrap": f"127.0.0.1:{free_port(0)}"})
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


@contextlib.contextmanager
def _stalled_loop(served, stall_s: float) -> Iterator[None]:
    """Block the gateway's event loop for ``stall_s`` in every iteration, as a
    process with more rows than it can decide is held up, until the block
    ends."""
    gateway = served.app.state.gateway
    loop = gateway._lag_probe.get_loop()
    done = threading.Event()

    def stall() -> None:
        if not done.is_set():
            time.sleep(stall_s)
            loop.call_soon(stall)

    loop.call_soon_threadsafe(stall)
    try:
        deadline = time.monotonic() + 10
        while gateway.behind_s() < stall_s / 2:
            assert time.monotonic() < deadline, "the stall never showed as lag"
            time.sleep(0.02)
        time.sleep(stall_s * 5)  # the probe's last two wakes were late too
        yield
    finally:
        done.set()


def _sample(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize("shed_lag_ms", [100.0, 0.0])
def test_a_process_far_behind_answers_rows_it_read_by_the_fallback_rule(
    make_settings, shed_lag_ms
):
    """Past ``shed_lag_ms`` of loop lag a row that was read is not decided: it
    gets the fallback's choice among the posters just read, reason
    ``overload``, so a poster retired since is not served; 0 never sheds."""
    settings = make_settings(
        topics=True,
        token_secret=TOKEN_SECRET,
        redis_budget_ms=5000.0,
        shed_lag_ms=shed_lag_ms,
    )
    server, served = serve(settings)
    try:
        video, best, other = new_id("v"), new_id("p"), new_id("p")
        add_poster(served, video, best, stats=ArmStats(1000, 90, 1000, 90))
        add_poster(served, video, other, stats=ArmStats(1000, 30, 1000, 30))
        live, _ = _timed_select(served.client, "u0", [video])
        assert live.json()["slots"][0]["poster_id"] == best
        new_video, new_poster = new_id("v"), new_id("p")
        add_poster(served, new_video, new_poster, stats=ArmStats(10, 1, 10, 1))
        # Retired by review after the process remembered the video's state.
        served.redis.srem(served.keys.posters(video), best)
        served.redis.hset(served.keys.retired(video), best, "retired by review")

        fallbacks = "keyart_gateway_fallbacks_total"
        with _stalled_loop(served, stall_s=0.2):
            shed_before = _sample(fallbacks, reason="overload")
            rows = [
                _timed_select(served.client, f"u{i}", [video, new_video])[0]
                for i in range(3)
            ]
            shed = _sample(fallbacks, reason="overload") - shed_before
        for row in rows:
            assert row.status_code == 200, row.text
            slots = row.json()["slots"]
            assert [s["poster_id"] for s in slots] == [other, new_poster]
            assert all(s["token"] for s in slots)
            if shed_lag_ms:
                assert {s["reason"] for s in slots} == {"overload"}
                assert {s["propensity"] for s in slots} == {1.0}
            else:
                assert not any(s["fallback"] for s in slots)
        assert shed == (6 if shed_lag_ms else 0)

        deadline = time.monotonic() + 10
        while True:
            response, _ = _timed_select(served.client, "caught-up", [video])
            if not response.json()["slots"][0]["fallback"]:
                break
            assert time.monotonic() < deadline, "still shedding after catching up"
            time.sleep(0.05)
    finally:
        served.client.close()
        served.redis.close()
        server.stop()


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


def test_the_shedding_lag_defaults_to_the_redis_budget(make_settings):
    from gateway.service import Gateway

    assert Gateway(make_settings(redis_budget_ms=35.0)).shed_lag_s == 0.035
    never = Gateway(make_settings(redis_budget_ms=35.0, shed_lag_ms=0))
    assert never.shed_lag_s == float("inf")
