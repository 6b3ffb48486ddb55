"""The gateway's producer: a record logged without waiting is still counted."""

from __future__ import annotations

import asyncio
import time

from gateway.broker import GatewayProducer
from gateway.metrics import DECISION_LOG_FAILURES
from keyart.stack import free_port
from tests.helpers import settings_env


def _decision(event_id: str, video_id: str) -> dict[str, object]:
    return {
        "event_id": event_id,
        "event_time": 1_700_000_000_000,
        "user_id": "u1",
        "video_id": video_id,
        "poster_id": f"{video_id}-p0",
        "placement": "home_row",
        "variant": "ts",
        "policy": "thompson",
        "propensity": 0.5,
    }


def _failures(reason: str) -> float:
    return DECISION_LOG_FAILURES.labels(reason=reason)._value.get()


def test_a_decision_the_broker_never_takes_is_counted(settings):
    # The logging producer reports failed records only; this checks that a
    # failure still reaches the counter. Nobody listens on the port.
    nowhere = settings.model_copy(
        update={"kafka_bootstrap": f"127.0.0.1:{free_port(0)}"}
    )
    loop = asyncio.new_event_loop()
    made = GatewayProducer(nowhere, timeout_s=1.0)
    made.start(loop)
    before = _failures("broker")
    try:
        made.log("decision", _decision("lost", "v"))
        deadline = time.monotonic() + 10
        while _failures("broker") == before and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.3)  # a second report of the same record would land by now
        assert _failures("broker") == before + 1
    finally:
        made.close(timeout=0.5)
        loop.close()


def test_a_gateway_without_broker_logs_each_kafka_failure_once_a_minute(
    make_settings, tmp_path
):
    """librdkafka wrote a raw line per connection retry, 266 in 40 s from the
    gateway's three producers; they now take keyart's format, once a minute."""
    import signal
    import subprocess
    import sys

    import httpx

    settings = make_settings(
        kafka_bootstrap=f"127.0.0.1:{free_port(0)}", gateway_port=free_port(0)
    )
    env = settings_env(settings)
    log = tmp_path / "gateway.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "keyart.cli", "gateway"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{settings.gateway_port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        assert httpx.get(f"{url}/readyz").status_code == 503
        time.sleep(8)  # librdkafka retries every few hundred ms meanwhile
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    lines = log.read_text().splitlines()
    assert not [line for line in lines if line.startswith("%")], lines[:5]
    refused = [line for line in lines if "Connection refused" in line]
    assert refused, lines  # the failure is still told
    assert all(" gateway." in line and "kafka: FAIL" in line for line in refused)
    # One line per producer and address at most: three producers, one address.
    assert len(refused) <= 3, refused
