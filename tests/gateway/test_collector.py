"""The event collector: validated, token-checked, deduplicated, produced."""

from __future__ import annotations

import base64
import time

import orjson

from bandits.state import ArmStats
from gateway.state import EXPOSURE_BUCKET_MS
from keyart.keys import escape
from tests.gateway.conftest import RULES_OFF, add_poster, new_id, read_records


def _slot(gateway, user, video):
    return gateway.select(user, [video], context={"age": 0.25})["slots"][0]


def _forge(token: str, **changes) -> str:
    payload, mac = token.split(".")
    fields = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    if "propensity" in changes:
        fields[9] = changes["propensity"]
    forged = base64.urlsafe_b64encode(orjson.dumps(fields)).rstrip(b"=").decode()
    return f"{forged}.{mac}"


def test_events_are_filled_from_the_token_produced_once_and_feed_the_rules(gateway):
    gateway.set_rules(**RULES_OFF)
    video, poster, user = new_id("v"), new_id("p"), "user:with@odd/chars"
    add_poster(
        gateway, video, poster, stats=ArmStats(5, 1, 5, 1), features={"dark": 0.8}
    )
    slot = _slot(gateway, user, video)
    now_ms = int(time.time() * 1000)
    impression_id = new_id("i")
    batch = {
        "events": [
            {
                "type": "impression",
                "event_id": impression_id,
                "event_time": now_ms,
                "token": slot["token"],
                "context": {"age": 0.25},
            },
            {
                "type": "click",
                "event_id": new_id("c"),
                "event_time": now_ms + 1500,
                "token": slot["token"],
                "impression_id": impression_id,
            },
        ]
    }
    answer = gateway.client.post("/v1/events", json=batch)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"accepted": 2, "duplicates": 0, "errors": []}

    again = gateway.client.post("/v1/events", json=batch).json()
    assert again == {"accepted": 0, "duplicates": 2, "errors": []}

    impressions = read_records(
        gateway.settings,
        "impressions",
        "impression",
        lambda rs: any(r["event_id"] == impression_id for r in rs),
    )
    mine = [r for r in impressions if r["event_id"] == impression_id]
    assert len(mine) == 1
    record = mine[0]
    assert (record["user_id"], record["video_id"], record["poster_id"]) == (
        user,
        video,
        poster,
    )
    assert record["propensity"] == slot["propensity"]
    assert record["placement"] == "home_row" and record["policy"]
    assert record["context"] == {"age": 0.25}
    assert record["poster_features"] == {"dark": 0.8}
    clicks = read_records(
        gateway.settings,
        "clicks",
        "click",
        lambda rs: any(r["impression_id"] == impression_id for r in rs),
    )
    click = next(r for r in clicks if r["impression_id"] == impression_id)
    assert (click["user_id"], click["video_id"], click["poster_id"]) == (
        user,
        video,
        poster,
    )

    # The impression feeds display deweighting and exposure caps; ids are escaped.
    seen_key = gateway.keys.seen(user, video)
    assert "user%3Awith%40odd%2Fchars" in seen_key
    assert gateway.redis.zscore(seen_key, poster) is not None
    fields = gateway.redis.hgetall(gateway.keys.exposure(video))
    assert len(fields) == 1 and sum(int(v) for v in fields.values()) == 1
    poster_part, bucket = next(iter(fields)).decode().rsplit("|", 1)
    assert poster_part == escape(poster)
    assert abs(int(bucket) - now_ms // EXPOSURE_BUCKET_MS) <= 1
    assert gateway.redis.exists(gateway.keys.collected("impression", impression_id))


def test_each_bad_event_is_reported_with_its_index_and_the_rest_go_through(gateway):
    gateway.set_rules(**RULES_OFF)
    video = new_id("v")
    add_poster(gateway, video, new_id("p"))
    slot = _slot(gateway, new_id("u"), video)
    now_ms = int(time.time() * 1000)

    def impression(**fields):
        event = {
            "type": "impression",
            "event_id": new_id("i"),
            "event_time": now_ms,
            "token": slot["token"],
        }
        event.update(fields)
        return event

    missing_time = impression()
    del missing_time["event_time"]
    batch = {
        "events": [
            impression(),
            impression(token=_forge(slot["token"], propensity=0.999)),
            missing_time,
            {"type": "view", "event_id": "x"},
            impression(event_time=now_ms + 3_600_000),
            impression(event_id="has spaces"),
            impression(token="garbage"),
            "not an object",
        ]
    }
    answer = gateway.client.post("/v1/events", json=batch)
    assert answer.status_code == 200
    body = answer.json()
    assert body["accepted"] == 1
    reasons = {e["index"]: e["reason"] for e in body["errors"]}
    assert sorted(reasons) == [1, 2, 3, 4, 5, 6, 7]
    assert "signature" in reasons[1]
    assert reasons[2].startswith("impression.event_time")
    assert "type" in reasons[3] or "view" in reasons[3]
    assert "future" in reasons[4]
    assert "event_id" in reasons[5]
    # A placeholder pasted as it is, as README's "TOKEN", says where tokens come from.
    assert reasons[6] == "token: token is not one /v1/select issued (payload.mac)"
    assert not any(e["retry"] for e in body["errors"])


def test_malformed_and_oversized_batches_are_refused_whole(gateway):
    not_json = gateway.client.post(
        "/v1/events", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert not_json.status_code == 422 and "JSON" in not_json.json()["detail"]
    wrong_shape = gateway.client.post("/v1/events", json=[1, 2])
    assert wrong_shape.status_code == 422 and "events" in wrong_shape.json()["detail"]
    limit = gateway.settings.max_events_per_batch
    too_many = {"events": [{"type": "click"}] * (limit + 1)}
    answer = gateway.client.post("/v1/events", json=too_many)
    assert answer.status_code == 422
    assert "KEYART_MAX_EVENTS_PER_BATCH" in answer.json()["detail"]


def test_one_token_backs_one_impression_and_one_click(gateway):
    gateway.set_rules(**RULES_OFF)
    video = new_id("v")
    add_poster(gateway, video, new_id("p"), stats=ArmStats(5, 1, 5, 1))
    slot = _slot(gateway, new_id("u"), video)
    now_ms = int(time.time() * 1000)
    impressions = [new_id("i") for _ in range(5)]
    batch = [
        {
            "type": "impression",
            "event_id": i,
            "event_time": now_ms,
            "token": slot["token"],
        }
        for i in impressions
    ] + [
        {
            "type": "click",
            "event_id": new_id("c"),
            "event_time": now_ms,
            "token": slot["token"],
            "impression_id": i,
        }
        for i in impressions
    ]
    body = gateway.client.post("/v1/events", json={"events": batch}).json()
    assert body["accepted"] == 2 and body["duplicates"] == 0
    assert sorted(e["index"] for e in body["errors"]) == [1, 2, 3, 4, 6, 7, 8, 9]
    rule = " (one impression and one click per token)"
    first_click = batch[5]["event_id"]
    for error in body["errors"]:
        backed = (
            f"impression {impressions[0]}"
            if error["index"] < 5
            else f"click {first_click}"
        )
        assert error["reason"] == f"token: already backs {backed}{rule}"
        assert error["retry"] is False

    # A later batch with fresh ids on the same token is refused too; the first
    # events' own resend is still a harmless duplicate.
    later = [dict(batch[1], event_id=new_id("i")), dict(batch[5], event_id="c-x")]
    body = gateway.client.post("/v1/events", json={"events": later}).json()
    assert body["accepted"] == 0
    assert [e["reason"] for e in body["errors"]] == [
        f"token: already backs another impression{rule}",
        f"token: already backs another click{rule}",
    ]
    again = gateway.client.post("/v1/events", json={"events": [batch[0], batch[5]]})
    assert again.json() == {"accepted": 0, "duplicates": 2, "errors": []}


def test_context_values_are_bounded_in_impressions(gateway):
    video = new_id("v")
    add_poster(gateway, video, new_id("p"))
    slot = _slot(gateway, new_id("u"), video)
    now_ms = int(time.time() * 1000)

    def impression(context):
        return {
            "type": "impression",
            "event_id": new_id("i"),
            "event_time": now_ms,
            "token": slot["token"],
            "context": context,
        }

    batch = [
        impression({"a": 1e160}),
        impression({f"k{i}": 1.0 for i in range(65)}),
        impression({"a": -1e6}),
    ]
    body = gateway.client.post("/v1/events", json={"events": batch}).json()
    assert body["accepted"] == 1
    reasons = {e["index"]: e["reason"] for e in body["errors"]}
    assert sorted(reasons) == [0, 1]
    assert "context" in reasons[0] and "1e+160" in reasons[0]
    assert "context" in reasons[1] and "64" in reasons[1]


def _events(slot, event_id, impression_id=None, now_ms=None):
    """An impression and a click on ``slot``'s token, both ``event_id``."""
    now_ms = now_ms or int(time.time() * 1000)
    impression = {
        "type": "impression",
        "event_id": event_id,
        "event_time": now_ms,
        "token": slot["token"],
    }
    click = {
        "type": "click",
        "event_id": event_id,
        "event_time": now_ms + 1000,
        "token": slot["token"],
        "impression_id": impression_id or event_id,
    }
    return impression, click


def test_click_ids_and_impression_ids_are_separate_namespaces(gateway):
    gateway.set_rules(**RULES_OFF)
    video = new_id("v")
    add_poster(gateway, video, new_id("p"), stats=ArmStats(5, 1, 5, 1))

    # In two batches: the click is not a duplicate of the impression.
    apart = new_id("e")
    impression, click = _events(_slot(gateway, new_id("u"), video), apart)
    first = gateway.client.post("/v1/events", json={"events": [impression]}).json()
    assert first == {"accepted": 1, "duplicates": 0, "errors": []}
    second = gateway.client.post("/v1/events", json={"events": [click]}).json()
    assert second == {"accepted": 1, "duplicates": 0, "errors": []}
    again = gateway.client.post("/v1/events", json={"events": [impression, click]})
    assert again.json() == {"accepted": 0, "duplicates": 2, "errors": []}

    # In one batch.
    together = new_id("e")
    batch = list(_events(_slot(gateway, new_id("u"), video), together))
    body = gateway.client.post("/v1/events", json={"events": batch}).json()
    assert body == {"accepted": 2, "duplicates": 0, "errors": []}
    again = gateway.client.post("/v1/events", json={"events": batch}).json()
    assert again == {"accepted": 0, "duplicates": 2, "errors": []}

    clicks = read_records(
        gateway.settings,
        "clicks",
        "click",
        lambda rs: {apart, together} <= {r["event_id"] for r in rs},
    )
    assert {apart, together} <= {r["event_id"] for r in clicks}
    for kind in ("impression", "click"):
        assert gateway.redis.get(gateway.keys.collected(kind, apart)) is not None


def test_a_click_is_refused_when_its_impression_came_with_another_token(gateway):
    gateway.set_rules(**RULES_OFF)
    video, poster = new_id("v"), new_id("p")
    add_poster(gateway, video, poster, stats=ArmStats(5, 1, 5, 1))
    slot_a, slot_b, slot_c = (_slot(gateway, new_id("u"), video) for _ in range(3))
    assert slot_a["poster_id"] == slot_b["poster_id"] == poster

    def post(*events):
        return gateway.client.post("/v1/events", json={"events": list(events)}).json()

    # A's impression is known to the collector; B's token cannot click it.
    seen = new_id("i")
    impression_a, click_a = _events(slot_a, seen)
    assert post(impression_a)["accepted"] == 1
    _, stolen = _events(slot_b, new_id("c"), impression_id=seen)
    body = post(stolen)
    assert body["accepted"] == 0 and body["duplicates"] == 0
    (error,) = body["errors"]
    assert error["index"] == 0 and error["retry"] is False
    assert error["reason"].startswith("impression_id:")
    assert seen in error["reason"] and "another token" in error["reason"]

    # Within one batch, whichever comes first.
    shown = new_id("i")
    impression_c, _ = _events(slot_c, shown)
    _, stolen_too = _events(slot_a, new_id("c"), impression_id=shown)
    body = post(stolen_too, impression_c)
    assert body["accepted"] == 1
    assert [(e["index"], e["reason"][:14]) for e in body["errors"]] == [
        (0, "impression_id:")
    ]

    # The refused click took no token slot: B's own impression and click, and
    # A's click on its own impression, are taken.
    own = new_id("i")
    impression_b, click_b = _events(slot_b, own)
    assert post(impression_b, click_b, click_a)["accepted"] == 3

    # An impression the collector does not know is left to the learner (which
    # counts the click as no_impression).
    _, unknown = _events(slot_c, new_id("c"), impression_id=new_id("never-sent"))
    assert post(unknown) == {"accepted": 1, "duplicates": 0, "errors": []}

    clicks = read_records(
        gateway.settings,
        "clicks",
        "click",
        lambda rs: unknown["event_id"] in {r["event_id"] for r in rs},
    )
    produced = {r["event_id"] for r in clicks}
    assert {click_a["event_id"], click_b["event_id"], unknown["event_id"]} <= produced
    assert not {stolen["event_id"], stolen_too["event_id"]} & produced


def test_a_beacon_sent_as_text_plain_is_collected(gateway):
    """``navigator.sendBeacon(url, JSON.stringify(batch))`` sends text/plain."""
    video, poster = new_id("v"), new_id("p")
    add_poster(gateway, video, poster, stats=ArmStats(5, 1, 5, 1))
    impression, _ = _events(_slot(gateway, new_id("u"), video), new_id("i"))
    body = orjson.dumps({"events": [impression]})
    answer = gateway.client.post(
        "/v1/events", content=body, headers={"content-type": "text/plain;charset=UTF-8"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"accepted": 1, "duplicates": 0, "errors": []}
    html = gateway.client.post(
        "/v1/events", content=body, headers={"content-type": "text/html"}
    )
    assert html.status_code == 422, html.text
    records = read_records(
        gateway.settings,
        "impressions",
        "impression",
        lambda rs: any(r["event_id"] == impression["event_id"] for r in rs),
    )
    assert any(r["event_id"] == impression["event_id"] for r in records)
