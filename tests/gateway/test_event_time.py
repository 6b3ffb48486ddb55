"""The collector takes an event_time only where the learner can judge it."""

from __future__ import annotations

import re
import time

import pytest

from gateway._event_time import EventTimeBounds
from keyart.settings import Settings, SettingsError
from tests.gateway.conftest import RULES_OFF, add_poster, new_id, sign_token

HOUR_MS = 3_600_000


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


def _seconds(reason, pattern):
    """The seconds a reason reports, matched by ``pattern`` around ``(\\d+)``."""
    found = re.match(pattern, reason)
    assert found, reason
    return int(found.group(1))


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
    # The collector's clock reads a little after the test's.
    ahead_s = _seconds(reasons[1], r"event_time: in the future, (\d+) s after the ")
    assert 110 <= ahead_s <= 120
    assert reasons[1].endswith("(at most 60 s, KEYART_COLLECT_CLOCK_SKEW_S)")


def _issued_ms(token):
    import base64

    import orjson

    payload = token.split(".")[0]
    fields = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return fields[10]


def test_an_event_dated_before_its_token_was_issued_is_refused(gateway):
    token = _slot(gateway)["token"]
    issued_ms = _issued_ms(token)
    now_ms = int(time.time() * 1000)
    events = [
        _impression(token, 0),  # 1970
        _impression(token, now_ms - 365 * 24 * HOUR_MS),
        _impression(token, issued_ms - 2 * SKEW_MS),
        _impression(token, issued_ms - SKEW_MS // 2),  # a client clock behind
    ]

    answer = gateway.client.post("/v1/events", json={"events": events})

    reasons = _reasons(answer)
    assert answer.json()["accepted"] == 1
    assert list(reasons) == [0, 1, 2]
    for reason in reasons.values():
        assert reason.startswith("event_time: "), reason
        assert "before its token was issued (at most 60 s" in reason, reason
        assert "KEYART_COLLECT_CLOCK_SKEW_S" in reason
    assert reasons[2].startswith("event_time: 120 s before")


def test_an_event_time_in_seconds_is_refused_saying_it_reads_as_seconds(gateway):
    """`date +%s` gives seconds; the reason says the unit is milliseconds."""
    token = _slot(gateway)["token"]
    issued_ms = _issued_ms(token)
    events = [
        _impression(token, issued_ms // 1000),
        _impression(token, issued_ms - 2 * SKEW_MS),  # milliseconds, too early
    ]

    answer = gateway.client.post("/v1/events", json={"events": events})

    reasons = _reasons(answer)
    assert answer.json()["accepted"] == 0
    assert reasons[0].endswith(
        "(at most 60 s, KEYART_COLLECT_CLOCK_SKEW_S); it reads as seconds since "
        "the epoch, and event_time is in milliseconds"
    ), reasons[0]
    assert "seconds since the epoch" not in reasons[1], reasons[1]


def test_an_event_older_than_the_learner_windows_is_refused(gateway):
    """A token issued hours ago is still valid; its events must still be young."""
    video, poster = new_id("v"), new_id("p")
    add_poster(gateway, video, poster)
    now_ms = int(time.time() * 1000)
    token = sign_token(
        [1, new_id("d"), new_id("u"), video, poster, "home_row", "thompson", "ts"]
        + [1, 0.5, now_ms - 3 * HOUR_MS, 1, ""]
    )
    max_age_ms = 1800 * 1000  # attribution window + a minute's grace - skew
    old = _impression(token, now_ms - 2 * HOUR_MS)
    shown = _impression(token, now_ms - max_age_ms + 60_000)
    events = [
        old,
        shown,
        _click(token, old["event_id"], now_ms - max_age_ms - 60_000),
        _click(token, shown["event_id"], now_ms - max_age_ms + 120_000),
    ]

    answer = gateway.client.post("/v1/events", json={"events": events})

    reasons = _reasons(answer)
    assert answer.json()["accepted"] == 2
    assert list(reasons) == [0, 2]
    old_s = _seconds(reasons[0], r"event_time: (\d+) s old, more than the 1800 s ")
    assert 7200 <= old_s <= 7202
    old_s = _seconds(reasons[2], r"event_time: (\d+) s old, more than the 1800 s ")
    assert 1860 <= old_s <= 1862
    for reason in reasons.values():
        assert "KEYART_DEDUPE_WINDOW_S" in reason
        assert "KEYART_ATTRIBUTION_WINDOW_S" in reason


def test_the_age_bound_follows_the_shorter_learner_window():
    assert EventTimeBounds(Settings()).max_age_ms == 1_800_000
    short_dedupe = Settings(dedupe_window_s=600, collect_clock_skew_s=30)
    assert EventTimeBounds(short_dedupe).max_age_ms == 570_000
    with pytest.raises(SettingsError, match="KEYART_COLLECT_CLOCK_SKEW_S"):
        EventTimeBounds(Settings(attribution_window_s=10, collect_clock_skew_s=100))
