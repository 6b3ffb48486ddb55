"""The gateway's producer: a record logged without waiting is still counted."""

from __future__ import annotations

import asyncio
import time

from gateway.broker import GatewayProducer
from gateway.metrics import DECISION_LOG_FAILURES
from keyart.stack import free_port


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
