"""Malformed requests get a 4xx (or a per-event error) naming the field, never 5xx."""

from __future__ import annotations

import time

import pytest

from tests.gateway.conftest import ADMIN

OK_SELECT = {"user_id": "u-1", "placement": "home_row", "video_ids": ["v-1"]}


def _select(**changes):
    body = dict(OK_SELECT)
    for key, value in changes.items():
        if value is _DROP:
            body.pop(key)
        else:
            body[key] = value
    return body


_DROP = object()

BAD_SELECTS = [
    (_select(user_id=_DROP), "user_id"),
    (_select(user_id=5), "user_id"),
    (_select(user_id=""), "user_id"),
    (_select(user_id="a*b"), "user_id"),
    (_select(user_id="a\nb"), "user_id"),
    (_select(user_id="ünï"), "user_id"),
    (_select(user_id="x" * 129), "user_id"),
    (_select(user_id=None), "user_id"),
    (_select(placement="nowhere"), "placement"),
    (_select(placement=_DROP), "placement"),
    (_select(video_ids="v-1"), "video_ids"),
    (_select(video_ids=[]), "video_ids"),
    (_select(video_ids=[1]), "video_ids"),
    (_select(video_ids=["a b"]), "video_ids"),
    (_select(video_ids=["v*"]), "video_ids"),
    (_select(video_ids=["v:1", "v:1"]), "video_ids"),
    (_select(video_ids=[f"v{i}" for i in range(101)]), "video_ids"),
    (_select(context={"a": "x"}), "context"),
    (_select(context={"a": "0.5"}), "context"),
    (_select(context={"a": True}), "context"),
    (_select(context={"a": 1e7}), "context"),
    (_select(context={"a": -1e160}), "context"),
    (_select(context={"": 1.0}), "context"),
    (_select(context={"a\n": 1.0}), "context"),
    (_select(context={f"k{i}": 1.0 for i in range(65)}), "context"),
    (_select(context=[1, 2]), "context"),
    (_select(cues=["c"] * 33), "cues"),
    (_select(cues=["c" * 201]), "cues"),
    (_select(segment="s:1"), "segment"),
    (_select(request_id="r r"), "request_id"),
    (_select(surprise=1), "surprise"),
]


@pytest.mark.parametrize(("body", "field"), BAD_SELECTS)
def test_bad_select_bodies_are_refused_naming_the_field(gateway, body, field):
    response = gateway.client.post("/v1/select", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith(field), response.text


@pytest.mark.parametrize(
    "raw",
    [b"", b"null", b"[]", b"{nope", b'{"user_id": NaN}', b"\xff\xfe", b'"text"'],
)
def test_unparsable_select_bodies_are_4xx(gateway, raw):
    response = gateway.client.post(
        "/v1/select", content=raw, headers={"content-type": "application/json"}
    )
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["detail"]


def test_ids_with_colons_and_slashes_are_valid(gateway):
    answer = gateway.select("user:1/a=b", ["video:1", "v~2"])
    assert [s["video_id"] for s in answer["slots"]] == ["video:1", "v~2"]


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/events"), ("POST", "/v1/select"), ("PUT", "/admin/rules")],
)
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_oversize_bodies_are_413_naming_the_setting(gateway, method, path, chunked):
    from tests.gateway.conftest import ADMIN

    size = gateway.settings.max_request_bytes + 1
    body = b'{"events": [' + b" " * size + b"]}"

    def chunks():
        # A generator body has no length: httpx sends it chunked.
        for start in range(0, len(body), 65_536):
            yield body[start : start + 65_536]

    response = gateway.client.request(
        method,
        path,
        content=chunks() if chunked else body,
        headers={"content-type": "application/json", **ADMIN},
    )
    assert response.status_code == 413, response.text
    answer = response.json()
    assert "KEYART_MAX_REQUEST_BYTES" in answer["detail"]
    # The shape of every other refusal: the fault in ``errors`` too.
    (error,) = answer["errors"]
    assert error["field"] == "body" and "KEYART_MAX_REQUEST_BYTES" in error["message"]


def _event(**changes):
    event = {
        "type": "impression",
        "event_id": "i-1",
        "event_time": int(time.time() * 1000),
        "token": "not.checked-before-the-fields",
    }
    for key, value in changes.items():
        if value is _DROP:
            event.pop(key)
        else:
            event[key] = value
    return event


BAD_EVENTS = [
    (_event(event_id="a*b"), "event_id"),
    (_event(event_id="a\nb"), "event_id"),
    (_event(event_id="ïd"), "event_id"),
    (_event(event_id=""), "event_id"),
    (_event(event_id="x" * 129), "event_id"),
    (_event(event_id=_DROP), "event_id"),
    (_event(event_time="now"), "event_time"),
    (_event(event_time=1.5), "event_time"),
    (_event(event_time=str(int(time.time() * 1000))), "event_time"),
    (_event(event_time=True), "event_time"),
    (_event(event_time=time.time() * 1000 // 1), "event_time"),
    (_event(event_time=-1), "event_time"),
    (_event(event_time=_DROP), "event_time"),
    (_event(token=5), "token"),
    (_event(token="t" * 5000), "token"),
    (_event(context={"a": "x"}), "context"),
    (_event(context={"a": True}), "context"),
    (_event(context={"a": 1e300}), "context"),
    (_event(context={f"k{i}": 0.0 for i in range(65)}), "context"),
    (_event(surprise=True), "surprise"),
    (_event(type="click"), "impression_id"),
    (_event(type="click", impression_id="i*"), "impression_id"),
    (_event(type="view"), "type"),
    (_event(type=_DROP), "type"),
    ("just a string", "event"),
    (None, "event"),
    ([1], "event"),
]


def test_each_bad_event_is_named_and_none_is_a_5xx(gateway):
    events = [event for event, _ in BAD_EVENTS]
    response = gateway.client.post("/v1/events", json={"events": events})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["accepted"] == 0
    reasons = {e["index"]: e["reason"] for e in body["errors"]}
    assert sorted(reasons) == list(range(len(BAD_EVENTS)))
    for index, (_, field) in enumerate(BAD_EVENTS):
        assert field in reasons[index], (index, reasons[index])
        assert not body["errors"][index]["retry"]


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"{nope", "body"),
        (b"[]", "events"),
        (b"{}", "events"),
        (b'{"events": {}}', "events"),
        (b'{"events": "x"}', "events"),
        (b"null", "events"),
        (b'{"events": [], "dry_run": true}', "dry_run"),
    ],
)
def test_bad_batches_are_422_naming_the_field(gateway, raw, field):
    response = gateway.client.post(
        "/v1/events", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith(field), response.text


BAD_RULES = [
    {"default": {"deweight_recency_s": "inf"}},
    {"default": {"deweight_recency_s": 1e306}},
    {"default": {"mmr_lambda": "nan"}},
    {"default": {"ramp_min_impressions": 10**20}},
    {"placements": {"search": {"exposure_min_impressions": 10**20}}},
    {"default": {"retire_margin": 1e300}},
    {"default": {"mmr_lambda": "0.5"}},
    {"placements": {"search": {"ramp_min_impressions": True}}},
    {"default": {"exposure_min_impressions": 100.0}},
]
BAD_SPLITS = [
    [{"name": "a", "policy": "random", "weight": "inf"}],
    [{"name": "a", "policy": "random", "weight": "1"}],
    [{"name": "a", "policy": "random", "weight": True}],
    [
        {"name": "a", "policy": "random", "weight": 1e308},
        {"name": "b", "policy": "thompson", "weight": 1e308},
    ],
]


@pytest.mark.parametrize("document", BAD_RULES)
def test_rules_the_gateway_cannot_apply_are_422(gateway, document):
    from tests.gateway.conftest import ADMIN

    before = gateway.client.get("/admin/rules", headers=ADMIN).json()["version"]
    response = gateway.client.put(
        "/admin/rules", json={"document": document}, headers=ADMIN
    )
    assert response.status_code == 422, response.text
    after = gateway.client.get("/admin/rules", headers=ADMIN).json()["version"]
    assert after == before


@pytest.mark.parametrize("variants", BAD_SPLITS)
def test_splits_that_cannot_be_stored_or_summed_are_422(gateway, variants):
    from tests.gateway.conftest import ADMIN

    response = gateway.client.put(
        "/admin/experiments", json={"document": {"variants": variants}}, headers=ADMIN
    )
    assert response.status_code == 422, response.text
    assert "weight" in response.text
    assert gateway.client.get("/admin/experiments", headers=ADMIN).status_code == 200


def test_signed_tokens_of_the_wrong_shape_are_per_event_errors(gateway):
    from tests.gateway.conftest import new_id, sign_token

    now_ms = int(time.time() * 1000)
    good = [1, "d-1", "u-1", "v-1", "p-1", "home_row", "thompson", "ts"]
    good += [1, 0.5, now_ms, 1, ""]

    def changed(index, value):
        fields = list(good)
        fields[index] = value
        return fields

    payloads = [
        [*good[:2], new_id("d"), *good[3:]],
        {str(i): value for i, value in enumerate(good)},
        changed(10, "x"),
        changed(9, "x"),
        changed(9, None),
        changed(8, "x"),
        changed(9, 1.5),
        changed(9, 0),
    ]
    events = [
        _event(event_id=new_id("i"), token=sign_token(fields)) for fields in payloads
    ]
    response = gateway.client.post("/v1/events", json={"events": events})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["accepted"] == 1
    reasons = {e["index"]: e["reason"] for e in body["errors"]}
    assert sorted(reasons) == list(range(1, len(payloads)))
    for index in range(1, 6):
        assert reasons[index] == "token: token payload is malformed", reasons
    assert "propensity 1.5 is not in (0, 1]" in reasons[6]
    assert "propensity 0 is not in (0, 1]" in reasons[7]
    assert not any(e["retry"] for e in body["errors"])


@pytest.mark.parametrize("path", ["/admin/rules", "/admin/experiments"])
@pytest.mark.parametrize(
    ("extra", "field"),
    [({"expected_verison": 0}, "expected_verison"), ({"x": 1}, "x")],
)
def test_unknown_fields_on_admin_updates_are_422_and_store_nothing(
    gateway, path, extra, field
):
    """A misspelt expected_version must not skip the conflict check."""
    from tests.gateway.conftest import ADMIN

    before = gateway.client.get(path, headers=ADMIN).json()["version"]
    response = gateway.client.put(path, json={"document": {}, **extra}, headers=ADMIN)
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith(f"{field}: "), response.text
    assert gateway.client.get(path, headers=ADMIN).json()["version"] == before


def test_a_misspelt_bulk_approve_filter_is_422(gateway):
    """Without the video_id filter, bulk-approve takes the best of every video."""
    from tests.gateway.conftest import ADMIN

    response = gateway.client.post(
        "/admin/review/bulk-approve",
        json={"reviewer": "bob", "videoid": "v-1"},
        headers=ADMIN,
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith("videoid: "), response.text


def _post_raw(gateway, path, raw, content_type="application/json"):
    from tests.gateway.conftest import ADMIN

    headers = {**ADMIN, **({"content-type": content_type} if content_type else {})}
    return gateway.client.request(
        "PUT" if path.startswith("/admin") else "POST",
        path,
        content=raw,
        headers=headers,
    )


BODY_PATHS = ["/v1/select", "/v1/events", "/admin/rules", "/admin/experiments"]

UNREADABLE_BODIES = {
    "empty": (b"", "application/json", "empty; expected a JSON object"),
    "invalid JSON": (
        b'{"user_id": "u-1", "events": [',
        "application/json",
        "invalid JSON at character 30: Expecting value",
    ),
    "text/plain": (
        b'{"events": []}',
        "text/plain",
        "expected Content-Type: application/json (got 'text/plain')",
    ),
    "no content type": (
        b'{"events": []}',
        None,
        "expected Content-Type: application/json (none was sent)",
    ),
    "not UTF-8": (
        b'{"events": "\xff"}',
        "application/json",
        "not UTF-8 (invalid start byte at byte 12)",
    ),
    "integer too long": (
        b'{"events": [' + b"7" * 5000 + b"]}",
        "application/json",
        "cannot be read: Exceeds the limit (4300 digits) for integer string "
        "conversion: value has 5000 digits",
    ),
    "nested too deeply": (
        b"[" * 50_000 + b"]" * 50_000,
        "application/json",
        "nested too deeply to read",
    ),
}


@pytest.mark.parametrize(
    ("path", "fault"),
    [
        (path, fault)
        for path in BODY_PATHS
        for fault in UNREADABLE_BODIES
        # the collector reads a text/plain body: browsers' beacons send that
        if (path, fault) != ("/v1/events", "text/plain")
    ],
)
def test_every_endpoint_answers_an_unreadable_body_alike(gateway, path, fault):
    raw, content_type, message = UNREADABLE_BODIES[fault]
    response = _post_raw(gateway, path, raw, content_type)
    assert response.status_code == 422, response.text
    assert response.json() == {
        "detail": f"body: {message}",
        "errors": [{"field": "body", "message": message}],
    }


def test_a_json_body_with_a_json_content_type_and_parameters_is_read(gateway):
    response = _post_raw(
        gateway, "/v1/events", b'{"events": []}', "application/json; charset=utf-8"
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("document", "detail"),
    [
        (
            {"placements": {"search": {"mmr_lambda": 2}}},
            "document.placements.search.mmr_lambda: Input should be less than",
        ),
        (
            {"default": {"mmr_lambda": 2}},
            "document.default.mmr_lambda: Input should be less than",
        ),
        (
            {
                "default": {"demote_at": 0.98},
                "placements": {"detail": {"retire_at": 0.97}},
            },
            "document.placements.detail: retire_at must be at least demote_at",
        ),
        (
            {"placements": {"moon": {}}},
            "document.placements.moon: unknown placement; known: home_row",
        ),
    ],
)
def test_a_bad_rule_is_named_where_it_is_in_the_document(gateway, document, detail):
    from tests.gateway.conftest import ADMIN

    response = gateway.client.put(
        "/admin/rules", json={"document": document}, headers=ADMIN
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith(detail), response.text


def test_a_boolean_is_not_an_expected_version(gateway):
    from tests.gateway.conftest import ADMIN

    before = gateway.client.get("/admin/rules", headers=ADMIN).json()["version"]
    response = gateway.client.put(
        "/admin/rules", json={"expected_version": True, "document": {}}, headers=ADMIN
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith("expected_version: ")
    assert gateway.client.get("/admin/rules", headers=ADMIN).json()["version"] == before


def test_rules_stored_with_loose_numbers_are_still_read(gateway):
    """A release before strict numbers stored "0.5" as sent; it still applies."""
    import orjson

    from tests.gateway.conftest import ADMIN

    key = gateway.keys.config("rules")
    version = int(gateway.redis.hget(key, "version") or 0) + 1
    document = {"default": {"mmr_lambda": "0.5"}, "placements": {}}
    gateway.redis.hset(
        key, mapping={"version": version, "data": orjson.dumps(document)}
    )
    try:
        answer = gateway.client.get("/admin/rules", headers=ADMIN)
        assert answer.status_code == 200, answer.text
        assert answer.json()["version"] == version
        assert answer.json()["effective"]["home_row"]["mmr_lambda"] == 0.5
    finally:
        gateway.client.put("/admin/rules", json={"document": {}}, headers=ADMIN)


def test_nan_and_out_of_range_literals_fail_their_event_not_the_batch(gateway):
    """Python's json, which reads /v1/select, reads the batch too: each event is
    judged on its own, as a NaN context value is one field's error in a select."""
    import json

    from tests.gateway.conftest import add_poster, new_id

    video = new_id("v")
    add_poster(gateway, video, new_id("p"))
    tokens = [
        gateway.select(new_id("u"), [video])["slots"][0]["token"] for _ in range(2)
    ]
    events = [
        _event(event_id=new_id("i"), token=tokens[0], context={"a": 0.5}),
        _event(event_id=new_id("i"), token=tokens[1], context={"a": float("nan")}),
        _event(event_id=new_id("i"), token=tokens[1], context={"a": float("inf")}),
        _event(event_id=new_id("i"), token=tokens[1], event_time=float("nan")),
        _event(event_id=new_id("i"), token=tokens[1], event_time=2**70),
    ]
    raw = json.dumps({"events": events}).replace("Infinity", "1e309", 1)
    assert "NaN" in raw and "1e309" in raw

    response = gateway.client.post(
        "/v1/events", content=raw, headers={"content-type": "application/json"}
    )

    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1
    reasons = {e["index"]: e["reason"] for e in response.json()["errors"]}
    assert list(reasons) == [1, 2, 3, 4]
    assert reasons[1] == "impression.context: context feature 'a' is not finite"
    assert reasons[2] == reasons[1]
    assert reasons[3].startswith(
        "impression.event_time: Input should be a valid integer"
    )
    assert reasons[4].startswith("event_time: in the future")

    select = dict(OK_SELECT, context={"a": float("nan")})
    answer = gateway.client.post(
        "/v1/select",
        content=json.dumps(select),
        headers={"content-type": "application/json"},
    )
    assert answer.status_code == 422
    assert answer.json()["detail"] == "context: context feature 'a' is not finite"


def test_review_numbers_are_finite_and_strict(gateway):
    import json

    from tests.gateway.conftest import ADMIN

    for body, detail in [
        (
            {"reviewer": "bob", "min_score": float("nan")},
            "min_score: Input should be a finite number",
        ),
        ({"reviewer": "bob", "limit": "5"}, "limit: Input should be a valid integer"),
    ]:
        response = gateway.client.post(
            "/admin/review/bulk-approve",
            content=json.dumps(body),
            headers={**ADMIN, "content-type": "application/json"},
        )
        assert response.status_code == 422, response.text
        assert response.json()["detail"] == detail


def _resolved(document, schema):
    """``schema`` with its ``$ref`` (``#/components/schemas/...``) followed."""
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = document["components"]["schemas"][name]
    return schema


def test_openapi_describes_the_refusals_the_gateway_sends(gateway):
    """Every operation documents its 422 as the body every refusal has:
    ``detail`` a string, ``errors`` a list of ``{field, message}``. A client
    built from /openapi.json (and schemathesis) otherwise expects FastAPI's
    ``detail`` list and fails on every refusal."""
    document = gateway.client.get("/openapi.json").json()
    operations = [
        (path, method, operation)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    ]
    documented = 0
    for path, method, operation in operations:
        refusal = operation.get("responses", {}).get("422")
        if refusal is None:
            continue
        documented += 1
        content = refusal.get("content", {}).get("application/json")
        assert content, (method, path, "422 without a schema")
        schema = _resolved(document, content["schema"])
        properties = schema["properties"]
        assert properties["detail"]["type"] == "string", (method, path)
        item = _resolved(document, properties["errors"]["items"])
        assert set(item["properties"]) == {"field", "message"}, (method, path)
        assert set(schema["required"]) == {"detail", "errors"}, (method, path)
    assert documented >= 6
    for path in ("/v1/select", "/v1/events", "/admin/rules", "/admin/experiments"):
        method = "post" if path.startswith("/v1") else "put"
        assert "422" in document["paths"][path][method]["responses"], path

    answer = gateway.client.put("/admin/rules", headers=ADMIN, json={"nope": 1})
    assert answer.status_code == 422
    assert isinstance(answer.json()["detail"], str)
    assert {"field", "message"} == set(answer.json()["errors"][0])


def test_a_batch_cut_off_by_its_client_is_no_server_error(gateway, caplog):
    """A client that goes away halfway through sending a batch (a page
    closed while its beacon was sent) costs no traceback: the collector
    notes it and reads nothing, as FastAPI does for the other routes."""
    import logging
    import socket

    caplog.set_level(logging.DEBUG, logger="gateway")
    host, port = gateway.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
            b'{"events": ['
        )
    deadline = time.monotonic() + 20

    def handled():
        return [
            r
            for r in caplog.records
            if "went away" in r.getMessage() or r.levelno >= logging.ERROR
        ]

    while not handled():
        assert time.monotonic() < deadline, "the gateway never saw the disconnect"
        time.sleep(0.05)
    assert [r.levelno for r in handled()] == [logging.DEBUG], [
        r.getMessage() for r in handled()
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [({"reviewer": "bob", "reason": " "}, "reason"), ({"reviewer": " "}, "reviewer")],
)
def test_review_refusals_name_the_field_as_every_refusal(gateway, body, field):
    """The review routes' own checks answer 422 in the body every other
    refusal has (``detail`` as ``field: message``, and ``errors``)."""
    from tests.gateway.conftest import ADMIN

    response = gateway.client.post(
        "/admin/review/candidates/p-1/reject", json=body, headers=ADMIN
    )
    assert response.status_code == 422, response.text
    answer = response.json()
    assert answer["detail"].startswith(f"{field}: "), answer
    assert [e["field"] for e in answer["errors"]] == [field], answer


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e999"])
def test_a_review_listing_score_that_is_no_number_is_422(gateway, value):
    """``min_score=nan`` matched no candidate and listed an empty page as if
    none were pending; the body's ``min_score`` of bulk-approve already
    refuses it."""
    from tests.gateway.conftest import ADMIN

    response = gateway.client.get(
        f"/admin/review/candidates?min_score={value}", headers=ADMIN
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith("query.min_score: "), response.text
