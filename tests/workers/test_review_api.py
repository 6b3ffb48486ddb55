"""The review router over HTTP, with a real catalog and the real broker."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from keyart.stack import free_port
from workers.catalog import Catalog
from workers.review import ReviewService
from workers.runner import JobRunner, video_event

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(make_settings, media, pipeline):
    settings = make_settings(topics=True)
    runner = JobRunner(settings, pipeline=pipeline)
    outcome = runner.run(video_event(media("franz-kafka.jpg"), "kafka"), "test")
    assert outcome.status == "done"
    app = FastAPI()
    from workers.review_api import router

    app.include_router(router, prefix="/admin/review")
    app.state.settings = settings
    port = free_port(0)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        http.app = app  # the tests look at the app's review service
        yield http
    server.should_exit = True
    thread.join(10)
    app.state.review_service.catalog.close()


def test_list_pending_with_thumbnails_and_features(client):
    answer = client.get("/admin/review/candidates", params={"video_id": "kafka"})
    assert answer.status_code == 200
    body = answer.json()
    assert body["total"] == 6 and len(body["candidates"]) == 6
    first = body["candidates"][0]
    assert first["thumbnail_url"].endswith(".thumb.jpg")
    assert first["image_url"].startswith("/posters/kafka/")
    assert first["features"]["face_count"] == 1
    assert "embedding" not in first
    one = client.get(f"/admin/review/candidates/{first['poster_id']}").json()
    assert len(one["embedding"]) == 1024


def test_approve_reject_and_errors(client):
    ids = [
        c["poster_id"]
        for c in client.get("/admin/review/candidates").json()["candidates"]
    ]
    ok = client.post(
        f"/admin/review/candidates/{ids[0]}/approve", json={"reviewer": "ana"}
    )
    assert ok.status_code == 200 and ok.json()["status"] == "approved"
    no_reason = client.post(
        f"/admin/review/candidates/{ids[1]}/reject", json={"reviewer": "ana"}
    )
    assert no_reason.status_code == 422
    assert "reason" in no_reason.json()["detail"]
    rejected = client.post(
        f"/admin/review/candidates/{ids[1]}/reject",
        json={"reviewer": "ana", "reason": "eyes closed"},
    )
    assert rejected.json()["status"] == "rejected"
    again = client.post(
        f"/admin/review/candidates/{ids[1]}/approve", json={"reviewer": "ana"}
    )
    assert again.status_code == 409
    missing = client.post(
        "/admin/review/candidates/nope/approve", json={"reviewer": "ana"}
    )
    assert missing.status_code == 404
    empty = client.post(
        f"/admin/review/candidates/{ids[2]}/approve", json={"reviewer": ""}
    )
    assert empty.status_code == 422


def test_bulk_approve(client):
    answer = client.post(
        "/admin/review/bulk-approve",
        json={"reviewer": "bob", "video_id": "kafka", "min_score": 0.0, "limit": 2},
    )
    assert answer.status_code == 200 and answer.json()["approved"] == 2
    approved = client.get(
        "/admin/review/candidates", params={"status": "approved"}
    ).json()
    assert approved["total"] == 3
    bad = client.get("/admin/review/candidates", params={"status": "maybe"})
    assert bad.status_code == 422


def test_empty_id_list_and_absurd_offset_are_422_and_approve_nothing(client):
    def pending() -> int:
        return client.get("/admin/review/candidates").json()["total"]

    before = pending()
    empty = client.post(
        "/admin/review/bulk-approve",
        json={"reviewer": "bob", "poster_ids": [], "limit": 2},
    )
    assert empty.status_code == 422 and "poster_ids" in empty.text
    assert pending() == before > 0
    far = client.get("/admin/review/candidates", params={"offset": 10**20})
    assert far.status_code == 422 and "offset" in far.text


def test_service_is_shared_with_the_cli(client):
    service = client.app.state.review_service
    assert isinstance(service, ReviewService)
    assert isinstance(service.catalog, Catalog)


async def test_the_gateway_mounts_review_behind_the_admin_token(
    make_settings, media, pipeline
):
    from gateway.app import create_app

    settings = make_settings(topics=True, admin_token="s3cret")
    runner = JobRunner(settings, pipeline=pipeline)
    assert (
        runner.run(video_event(media("astronaut.png"), "astro"), "t").status == "done"
    )
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
        path = "/admin/review/candidates"
        assert (await http.get(path)).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert (await http.get(path, headers=wrong)).status_code == 401
        good = {"Authorization": "Bearer s3cret"}
        answer = await http.get(path, headers=good)
        assert answer.status_code == 200 and answer.json()["total"] == 6
        image = answer.json()["candidates"][0]["image_url"]
        served = await http.get(image)
        assert served.status_code == 200
        assert served.headers["content-type"] == "image/jpeg"
    app.state.review_service.catalog.close()
    runner.catalog.close()


def test_approval_limited_to_placements_of_the_aspect(client):
    from schemas.codec import get_codec
    from tests.workers.topics import read_all

    aspect_to_placement = {"2:3": "home_row", "16:9": "search", "1:1": "continue"}
    pending = client.get("/admin/review/candidates").json()["candidates"]
    portrait = pending[0]
    right = aspect_to_placement[portrait["aspect"]]
    other = next(p for a, p in aspect_to_placement.items() if a != portrait["aspect"])
    url = f"/admin/review/candidates/{portrait['poster_id']}/approve"
    wrong = client.post(url, json={"reviewer": "ana", "placements": [other]})
    assert wrong.status_code == 422 and "shows" in wrong.json()["detail"]
    unknown = client.post(url, json={"reviewer": "ana", "placements": ["moon"]})
    assert (
        unknown.status_code == 422 and "unknown placement" in unknown.json()["detail"]
    )
    assert (
        client.get(f"/admin/review/candidates/{portrait['poster_id']}").json()["status"]
        == "pending_review"
    )
    ok = client.post(url, json={"reviewer": "ana", "placements": [right]})
    assert ok.status_code == 200 and ok.json()["placements"] == [right]
    settings = client.app.state.settings
    published = [
        get_codec().decode("poster_published", m.value())
        for m in read_all(settings, "posters")
    ]
    event = next(p for p in published if p["poster_id"] == portrait["poster_id"])
    assert event["placements"] == [right]
