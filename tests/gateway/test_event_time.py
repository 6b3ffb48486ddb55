"""The collector takes an event_time only where the learner can judge it."""

from __future__ import annotations

import time

from tests.gateway.conftest import RULES_OFF, add_poster, new_id


def _slot(gateway):
    gateway.set_rules(**RULES_OFF)
    video = new_id("v")
    add_poster(gateway, video, new_id("p"))
    return gateway.select(new_id("u"), [video])["slots"][0]


def _impression(token, event_time):
    return {
        "type": "impression",
        "event_id": new_id("i"),
        "event_time": event_time,
        "token": token,
    }


def _click(token, impression_id, event_time):
    return {
        "type": "click",
        "event_id": new_id("c"),
        "event_time": event_time,
        "token": token,
        "impression_id": impression_id,
    }


def _reasons(answer):
    assert answer.status_code == 200, answer.text
    return {e["index"]: e["reason"] for e in answer.json()["errors"]}


SKEW_MS = 60_000
"""The default ``collect_clock_skew_s``, which the gateway fixture keeps."""


def test_an_event_dated_past_the_client_clock_skew_is_refused(gateway):
    skew_ms = SKEW_MS
    token = _slot(gateway)["token"]
    now_ms = int(time.time() * 1000)
    shown = _impression(token, now_ms + skew_ms // 2)
    # Two minutes ahead: within the old five-minute slack, enough for the
    # learner's partition clock to give up every early click for that long.
    ahead = _click(token, shown["event_id"], now_ms + 2 * skew_ms)

    answer = gateway.client.post("/v1/events", json={"events": [shown, ahead]})

    reasons = _reasons(answer)
    assert answer.json()["accepted"] == 1
    assert list(reasons) == [1]
    assert reasons[1].startswith("event_time: in the future, 120 s after"), reasons
    assert "KEYART_COLLECT_CLOCK_SKEW_S" in reasons[1]
