"""Bad requests get a 4xx naming the field; admin needs its token; keys escape."""

from __future__ import annotations

import orjson
import pytest

from bandits.state import ArmStats
from tests.gateway.conftest import ADMIN, TOKEN_SECRET, add_poster, new_id, serve


def _select(gateway, **body):
    request = {"user_id": "u1", "placement": "home_row", "video_ids": ["v1"]}
    request.update(body)
    return gateway.client.post("/v1/select", json=request)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user_id": "a b"}, "user_id"),
        ({"user_id": ""}, "user_id"),
        ({"user_id": "x" * 129}, "user_id"),
        ({"placement": "billboard"}, "placement"),
        ({"video_ids": []}, "video_ids"),
        ({"video_ids": ["v1", "v1"]}, "video_ids"),
        ({"video_ids": ["ok", "bad*id"]}, "video_ids.1"),
        ({"context": {"age": "old"}}, "context.age"),
        ({"segment": "a:b"}, "segment"),
        ({"cues": ["x" * 201]}, "cues.0"),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_invalid_select_requests_name_the_field(gateway, body, field):
    response = _select(gateway, **body)
    assert response.status_code == 422
    assert response.json()["detail"].startswith(field), response.json()


def test_row_length_and_body_size_are_bounded(gateway):
    limit = gateway.settings.max_row_length
    too_long = _select(gateway, video_ids=[f"v{i}" for i in range(limit + 1)])
    assert too_long.status_code == 422
    assert "KEYART_MAX_ROW_LENGTH" in too_long.json()["detail"]

    huge = b'{"user_id": "' + b"x" * gateway.settings.max_request_bytes + b'"}'
    refused = gateway.client.post(
        "/v1/select", content=huge, headers={"content-type": "application/json"}
    )
    assert refused.status_code == 413
    assert "KEYART_MAX_REQUEST_BYTES" in refused.json()["detail"]

    def chunks():
        for _ in range(gateway.settings.max_request_bytes // 65536 + 2):
            yield b"x" * 65536

    streamed = gateway.client.post("/v1/events", content=chunks())
    assert streamed.status_code == 413


def test_admin_requires_the_token_and_is_off_without_one(gateway, make_settings):
    assert gateway.client.get("/admin/rules").status_code == 401
    wrong = {"Authorization": "Bearer not-the-token"}
    assert gateway.client.get("/admin/rules", headers=wrong).status_code == 401
    assert gateway.client.get("/admin/rules", headers=ADMIN).status_code == 200
    assert gateway.client.get("/admin/review/candidates").status_code == 401
    assert (
        gateway.client.get("/admin/review/candidates", headers=wrong).status_code == 401
    )
    bad_rules = gateway.client.put(
        "/admin/rules",
        headers=ADMIN,
        json={"document": {"placements": {"search": {"ramp_share": 2}}}},
    )
    assert bad_rules.status_code == 422 and "ramp_share" in bad_rules.text

    server, closed = serve(make_settings(topics=True, token_secret=TOKEN_SECRET))
    try:
        off = closed.client.get("/admin/rules", headers=ADMIN)
        assert off.status_code == 403 and "KEYART_ADMIN_TOKEN" in off.json()["detail"]
    finally:
        closed.client.close()
        server.stop()


def test_ids_that_look_like_key_syntax_stay_inside_their_own_keys(gateway):
    video = "show:1/ep@2"
    poster = new_id("p")
    add_poster(gateway, video, poster, stats=ArmStats(3, 1, 3, 1))
    gateway.redis.set(f"{gateway.settings.redis_prefix}:arms:show", "not a hash")
    answer = gateway.select("user:1", [video])
    assert answer["slots"][0]["poster_id"] == poster
    assert gateway.keys.arms(video).endswith("show%3A1%2Fep%402")


def test_poster_urls_are_404_while_the_poster_store_does_not_exist(
    make_settings, tmp_path
):
    """A gateway whose poster folder is not created yet (no poster stored so
    far) answers the image URLs it hands out, and paths that climb out of
    the folder, with 404 rather than a 500 per request."""
    store = tmp_path / "posters-not-yet"
    settings = make_settings(topics=True, token_secret=TOKEN_SECRET, poster_store=store)
    server, served = serve(settings)
    try:
        video, poster = new_id("v"), new_id("p")
        add_poster(served, video, poster, stats=ArmStats(3, 1, 3, 1))
        url = served.select("u1", [video])["slots"][0]["image_url"]
        for path in (url, "/posters/../../etc/passwd", "/posters/%2e%2e/x.jpg"):
            response = served.client.get(path)
            assert response.status_code == 404, (path, response.text)

        (store / video).mkdir(parents=True)
        (store / video / f"{poster}.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
        response = served.client.get(url)
        assert response.status_code == 200
        assert response.content == b"\xff\xd8 not really a jpeg"
    finally:
        served.client.close()
        served.redis.close()
        server.stop()


@pytest.mark.parametrize(
    "head",
    [
        b"Content-Length: 200\r\n\r\n" + b'{"events": [',
        b"Transfer-Encoding: chunked\r\n\r\n" + b'c\r\n{"events": [\r\n',
    ],
    ids=["content-length", "chunked"],
)
def test_a_body_that_stops_arriving_is_answered_408(make_settings, head):
    """A client that sends the headers and part of a body, then nothing,
    gets a 408 once KEYART_REQUEST_BODY_TIMEOUT_S has passed, instead of
    holding its connection and the bytes it sent for as long as it likes."""
    import socket

    settings = make_settings(token_secret=TOKEN_SECRET, request_body_timeout_s=0.5)
    server, served = serve(settings)
    host, port = served.url.removeprefix("http://").split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(
                b"POST /v1/events HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\n" + head
            )
            answer = b""
            while chunk := sock.recv(4096):  # the gateway closes after answering
                answer += chunk
        status, _, body = answer.partition(b"\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 408"), answer
        assert "KEYART_REQUEST_BODY_TIMEOUT_S" in orjson.loads(body)["detail"]
        assert served.client.post("/v1/events", json={"events": []}).status_code == 200
    finally:
        served.client.close()
        served.redis.close()
        server.stop()
