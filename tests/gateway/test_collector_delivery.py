"""The collector's claims: counted only once acknowledged, one per token slot.

The first test stops the session's broker (SIGSTOP) and kills a gateway
process while its events wait for it; the second stops a private Redis.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from gateway.token import ImpressionToken, TokenSigner
from keyart.stack import free_port
from tests.gateway.conftest import TOKEN_SECRET, new_id, read_records, serve
from tests.gateway.test_degradation import private_redis  # noqa: F401 (fixture)
from tests.helpers import settings_env

PENDING_S = 3.0


def _token(video: str, poster: str = "p-1", decision: str | None = None) -> str:
    signer = TokenSigner(TOKEN_SECRET.encode())
    return signer.sign(
        ImpressionToken(
            decision or new_id("d"),
            "u-1",
            video,
            poster,
            "home_row",
            "thompson",
            "ts",
            1,
            0.5,
            int(time.time() * 1000),
            1,
            "",
        )
    )


def _impression(event_id: str, token: str) -> dict:
    return {
        "type": "impression",
        "event_id": event_id,
        "event_time": int(time.time() * 1000),
        "token": token,
    }


def _gateway_process(settings, port: int) -> subprocess.Popen:
    env = settings_env(settings)
    env["KEYART_GATEWAY_PORT"] = str(port)
    process = subprocess.Popen(
        [sys.executable, "-m", "keyart.cli", "gateway"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                return process
        except httpx.TransportError:
            pass
        assert process.poll() is None, "the gateway process exited"
        assert time.monotonic() < deadline, "the gateway process did not start"
        time.sleep(0.1)


@pytest.mark.slow
def test_events_of_a_killed_gateway_are_taken_on_resend_exactly_once(
    stack, make_settings
):
    assert stack.broker_pid is not None
    settings = make_settings(
        topics=True, token_secret=TOKEN_SECRET, collect_pending_s=PENDING_S
    )
    video, event_id = new_id("v"), new_id("i")
    batch = {"events": [_impression(event_id, _token(video))]}
    port = free_port(0)
    import redis

    from keyart.keys import Keys

    r = redis.Redis.from_url(settings.redis_url)
    claim_key = Keys(settings.redis_prefix).collected("impression", event_id)
    # The broker stops before the process connects, so the record cannot leave
    # the producer's queue: killing the process loses it unless resent.
    os.kill(stack.broker_pid, signal.SIGSTOP)
    try:
        process = _gateway_process(settings, port)
        url = f"http://127.0.0.1:{port}"

        def send_and_lose() -> None:
            try:
                httpx.post(f"{url}/v1/events", json=batch, timeout=30)
            except httpx.TransportError:
                pass  # the process is killed while this batch waits

        first = threading.Thread(target=send_and_lose, daemon=True)
        first.start()
        deadline = time.monotonic() + 10
        while not r.exists(claim_key):
            assert time.monotonic() < deadline, "the event was never claimed"
            time.sleep(0.05)

        meanwhile = httpx.post(f"{url}/v1/events", json=batch, timeout=10).json()
        assert meanwhile["accepted"] == 0 and meanwhile["duplicates"] == 0
        (error,) = meanwhile["errors"]
        assert error["retry"] is True and error["reason"].startswith("event_id")

        process.kill()
        process.wait(timeout=10)
    finally:
        os.kill(stack.broker_pid, signal.SIGCONT)

    server, served = serve(settings)
    try:
        deadline = time.monotonic() + PENDING_S + 10
        while True:
            answer = served.client.post("/v1/events", json=batch).json()
            if answer["accepted"] == 1:
                break
            assert answer["duplicates"] == 0, "the lost event was called a duplicate"
            assert answer["errors"][0]["retry"] is True
            assert time.monotonic() < deadline, "the pending claim never expired"
            time.sleep(0.5)
        assert r.get(claim_key).startswith(b"d|")
        again = served.client.post("/v1/events", json=batch).json()
        assert again == {"accepted": 0, "duplicates": 1, "errors": []}
        records = read_records(
            settings, "impressions", "impression", lambda rs: False, timeout=6
        )
        assert [x["event_id"] for x in records].count(event_id) == 1
    finally:
        r.close()
        served.client.close()
        served.redis.close()
        server.stop()


def test_stopped_redis_costs_each_batch_at_most_its_budget(
    make_settings,
    private_redis,  # noqa: F811
):
    url, process = private_redis
    budget_ms = 100.0
    settings = make_settings(
        topics=True,
        redis_url=url,
        token_secret=TOKEN_SECRET,
        collect_redis_budget_ms=budget_ms,
    )
    server, served = serve(settings)
    try:
        video = new_id("v")
        os.kill(process.pid, signal.SIGSTOP)
        ids = []
        for _ in range(6):
            ids.append(new_id("i"))
            batch = {"events": [_impression(ids[-1], _token(video))]}
            started = time.monotonic()
            response = served.client.post("/v1/events", json=batch)
            elapsed = time.monotonic() - started
            assert response.status_code == 200, response.text
            assert response.json() == {"accepted": 1, "duplicates": 0, "errors": []}
            # Claims and exposure share one budget; the broker's ack comes on top.
            assert elapsed < 2 * budget_ms / 1000 + 1.0
        os.kill(process.pid, signal.SIGCONT)
        metrics = served.client.get("/metrics").text
        assert 'outcome="undeduplicated"' in metrics
        records = read_records(
            settings,
            "impressions",
            "impression",
            lambda rs: {x["event_id"] for x in rs} >= set(ids),
        )
        assert {x["event_id"] for x in records} >= set(ids)
    finally:
        os.kill(process.pid, signal.SIGCONT)
        served.client.close()
        served.redis.close()
        server.stop()
