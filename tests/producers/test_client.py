"""The Python client against a real gateway, Redis and broker."""

from __future__ import annotations

import threading
import time

from bandits.state import ArmStats
from keyart.stack import free_port
from producers.client import GatewayClient
from tests.gateway.conftest import (
    TOKEN_SECRET,
    ServerThread,
    add_poster,
    new_id,
    read_records,
    serve,
)


def test_client_selects_batches_events_and_resends_harmlessly(make_settings):
    server, served = serve(make_settings(topics=True, token_secret=TOKEN_SECRET))
    try:
        video = new_id("v")
        add_poster(served, video, new_id("p"), stats=ArmStats(10, 1, 10, 1))
        with GatewayClient(served.url, max_batch=7) as client:
            ids = []
            for i in range(10):
                row = client.select(f"u{i}", "home_row", [video])
                token = row["slots"][0]["token"]
                impression = client.impression(token, context={"age": 0.5})
                ids.append(impression)
                client.click(token, impression)
            client.impression("forged.token")
            report = client.flush()
            assert report.accepted == 20
            assert [reason for _, reason in report.failed] == [
                "token: token is not base64url"
            ]
            assert report.attempts == 3  # batches of 7, 7 and 7

            for event_id in ids[:3]:  # a resend after a lost answer
                client.impression(token, event_id=event_id)
            again = client.flush()
            assert (again.accepted, again.duplicates) == (0, 3)

        records = read_records(
            served.settings,
            "impressions",
            "impression",
            lambda rs: {r["event_id"] for r in rs} >= set(ids),
        )
        assert sorted(r["event_id"] for r in records) == sorted(ids)
    finally:
        served.client.close()
        served.redis.close()
        server.stop()


def test_client_retries_until_the_gateway_comes_up(make_settings):
    from gateway.app import create_app

    settings = make_settings(topics=True, token_secret=TOKEN_SECRET)
    port = free_port(0)
    late = ServerThread(create_app(settings), port)
    starter = threading.Timer(1.0, late.start)
    starter.start()
    try:
        with GatewayClient(
            f"http://127.0.0.1:{port}", retries=8, backoff_s=0.2, seed=1
        ) as client:
            started = time.monotonic()
            row = client.select("u1", "home_row", ["nothing-here"])
            assert time.monotonic() - started >= 0.9
            assert row["slots"][0]["reason"] == "no_candidates"
    finally:
        starter.join()
        late.stop()


def test_client_reports_events_it_could_never_deliver():
    port = free_port(0)  # nothing listens here
    with GatewayClient(f"http://127.0.0.1:{port}", retries=2, backoff_s=0.01) as client:
        client.impression("a.b", event_id="e1")
        report = client.flush()
    assert report.attempts == 3
    assert [(e["event_id"], why) for e, why in report.failed] == [
        ("e1", "retries exhausted")
    ]
