"""The health endpoints against the real Redis, broker and PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import orjson
import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from keyart.health import (
    HealthServer,
    check_broker,
    check_database,
    check_max_age,
    check_redis,
    health_router,
    run_checks,
    serve_health,
)
from keyart.stack import StackInfo, free_port


def get(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310
            return response.status, response.read(), response.headers["Content-Type"]
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers["Content-Type"]


@pytest.fixture
def real_checks(stack: StackInfo, pg_url: str) -> dict:
    return {
        "redis": check_redis(stack.redis_url),
        "broker": check_broker(stack.kafka_bootstrap),
        "database": check_database(pg_url),
    }


@pytest.fixture
def server(real_checks: dict) -> Iterator[HealthServer]:
    with HealthServer(real_checks, port=0, name="test-process") as running:
        yield running


def test_ready_when_redis_broker_and_database_answer(server: HealthServer) -> None:
    status, body, kind = get(server.url + "/readyz")
    report = orjson.loads(body)
    assert status == 200, report
    assert kind == "application/json"
    assert report["ready"] is True
    assert set(report["checks"]) == {"redis", "broker", "database"}
    assert all(c["ok"] for c in report["checks"].values())
    assert "broker(s)" in report["checks"]["broker"]["detail"]


def test_alive_and_unknown_paths(server: HealthServer) -> None:
    status, body, _ = get(server.url + "/healthz")
    assert status == 200
    assert orjson.loads(body) == {"alive": True, "process": "test-process"}
    status, body, _ = get(server.url + "/nothing")
    assert status == 404
    assert b"/readyz" in body


def test_metrics_show_check_outcomes(server: HealthServer) -> None:
    get(server.url + "/readyz")
    status, body, kind = get(server.url + "/metrics")
    assert status == 200
    assert kind.startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    outcomes = {
        s.labels["check"]: s.value for s in families["keyart_ready_check"].samples
    }
    assert outcomes["redis"] == 1.0
    assert outcomes["broker"] == 1.0
    assert outcomes["database"] == 1.0


def test_unreachable_services_fail_readiness_and_name_the_setting() -> None:
    nobody = free_port(0)
    checks = {
        "redis": check_redis(f"redis://127.0.0.1:{nobody}/0", timeout=0.5),
        "broker": check_broker(f"127.0.0.1:{nobody}", timeout=1.0),
        "database": check_database(
            f"postgresql+psycopg://postgres@127.0.0.1:{nobody}/x", timeout=1.0
        ),
    }
    with HealthServer(checks, port=0, timeout=4.0) as running:
        started = time.monotonic()
        status, body, _ = get(running.url + "/readyz")
        took = time.monotonic() - started
    report = orjson.loads(body)
    assert status == 503
    assert report["ready"] is False
    assert "KEYART_REDIS_URL" in report["checks"]["redis"]["detail"]
    assert "KEYART_KAFKA_BOOTSTRAP" in report["checks"]["broker"]["detail"]
    assert "KEYART_DATABASE_URL" in report["checks"]["database"]["detail"]
    assert took < 6.0


def test_failed_checks_show_urls_without_their_passwords() -> None:
    nobody = free_port(0)
    checks = {
        "redis": check_redis(f"redis://:redis-pw@127.0.0.1:{nobody}/0", timeout=0.5),
        "database": check_database(
            f"postgresql+psycopg://postgres:pg-pw@127.0.0.1:{nobody}/x"
            "?sslmode=disable&password=pg-pw",
            timeout=1.0,
        ),
    }
    with HealthServer(checks, port=0, timeout=4.0) as running:
        status, body, _ = get(running.url + "/readyz")
    assert status == 503
    details = {name: c["detail"] for name, c in orjson.loads(body)["checks"].items()}
    assert "redis-pw" not in details["redis"] and "pg-pw" not in details["database"]
    assert details["redis"].startswith(f"redis at redis://:***@127.0.0.1:{nobody}/0 ")
    assert details["database"].startswith(
        f"database postgresql+psycopg://postgres:***@127.0.0.1:{nobody}/x"
        "?sslmode=disable&password=*** "
    )


def test_a_slow_or_raising_check_fails_without_failing_the_probe() -> None:
    def slow() -> tuple[bool, str]:
        time.sleep(3)
        return True, "late"

    def broken() -> tuple[bool, str]:
        raise RuntimeError("disk on fire")

    results = {r.name: r for r in run_checks({"slow": slow, "broken": broken}, 0.3)}
    assert not results["slow"].ok
    assert "no answer within 0.3 s" in results["slow"].detail
    assert not results["broken"].ok
    assert "disk on fire" in results["broken"].detail


def test_async_checks_run_on_the_given_loop(stack: StackInfo) -> None:
    import redis.asyncio as aioredis

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    client = asyncio.run_coroutine_threadsafe(
        _make_client(aioredis, stack.redis_url), loop
    ).result(5)
    seen_loops = []

    async def redis_on_worker_loop() -> tuple[bool, str]:
        seen_loops.append(asyncio.get_running_loop())
        return bool(await client.ping()), "pong"

    try:
        with HealthServer({"redis": redis_on_worker_loop}, port=0, loop=loop) as hs:
            status, body, _ = get(hs.url + "/readyz")
        assert status == 200, body
        assert seen_loops and all(seen is loop for seen in seen_loops)
    finally:
        asyncio.run_coroutine_threadsafe(client.aclose(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


async def _make_client(module, url):  # type: ignore[no-untyped-def]
    return module.Redis.from_url(url)


def test_max_age_check() -> None:
    ages = iter([None, 3.0, 30.0])
    check = check_max_age("impressions lag", lambda: next(ages), bound=10)
    assert check() == (True, "impressions lag: nothing measured yet")
    assert check()[0] is True
    ok, detail = check()
    assert ok is False
    assert "30.0 s (above 10 s)" in detail


def test_metrics_port_zero_picks_a_free_port_and_logs_it(
    make_settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(metrics_port=0)
    with caplog.at_level(logging.INFO, logger="keyart"):
        running = serve_health(settings, "lagger")
    try:
        assert running.port > 0
        assert f":{running.port}" in caplog.text
        assert get(running.url + "/healthz")[0] == 200
    finally:
        running.stop()


def test_taken_port_names_the_setting() -> None:
    with HealthServer(port=0) as first:
        with pytest.raises(OSError, match="KEYART_METRICS_PORT"):
            HealthServer(port=first.port).start()


async def test_fastapi_router_serves_the_same_endpoints(real_checks: dict) -> None:
    import httpx
    from fastapi import FastAPI

    registry = CollectorRegistry()
    served = Counter(
        "keyart_test_requests", "Requests in this test.", registry=registry
    )
    served.inc(3)
    checks = dict(real_checks)
    app = FastAPI()
    app.include_router(health_router(checks, registry=registry))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["ready"] is True
        checks["failing"] = lambda: (False, "not caught up")
        not_ready = await client.get("/readyz")
        assert not_ready.status_code == 503
        assert not_ready.json()["checks"]["failing"]["detail"] == "not caught up"
        metrics = await client.get("/metrics")
        assert "keyart_test_requests_total 3.0" in metrics.text
        assert (await client.get("/healthz")).json()["alive"] is True
        schema = (await client.get("/openapi.json")).json()
        assert {"/healthz", "/readyz"} <= set(schema["paths"])


def test_background_runs_keep_the_gauge_current(stack: StackInfo) -> None:
    from prometheus_client import REGISTRY

    calls = []

    def counted() -> tuple[bool, str]:
        calls.append(time.monotonic())
        return len(calls) < 3, f"run {len(calls)}"

    with HealthServer({"counted": counted}, port=0, interval=0.2):
        deadline = time.monotonic() + 10
        while len(calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.1)
        value = REGISTRY.get_sample_value("keyart_ready_check", {"check": "counted"})
    assert len(calls) >= 3
    assert value == 0.0
