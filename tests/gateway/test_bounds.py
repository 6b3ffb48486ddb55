"""The work one request may cause is bounded; only reads are open without a token."""

from __future__ import annotations

import time

import orjson

from bandits.state import ArmStats
from keyart.keys import arm_field
from tests.gateway.conftest import RULES_OFF, add_poster, new_id

OPEN_WRITES = {"/v1/select", "/v1/events", "/v1/ping"}


def _seed(gateway, video: str, posters: list[str], stats: dict[str, ArmStats]):
    """Many approved posters at once, written the way the learner writes them."""
    keys = gateway.keys
    with gateway.redis.pipeline(transaction=False) as pipe:
        for poster in posters:
            pipe.hset(
                keys.poster(poster),
                mapping={
                    "video_id": video,
                    "image_url": f"{video}/{poster}.jpg",
                    "aspect": "2:3",
                    "placements": b"[]",
                    "features": orjson.dumps({"brightness": 0.5}),
                    "tags": b"[]",
                    "status": "approved",
                    "created_ms": int(time.time() * 1000),
                },
            )
            pipe.sadd(keys.posters(video), poster)
        for poster, s in stats.items():
            pipe.hset(keys.arms(video), arm_field(poster), s.pack())
        pipe.hset(keys.arms(video), "_updated_ms", int(time.time() * 1000))
        pipe.execute()


def _fetched(gateway, posters: list[str]) -> set[str]:
    cache = gateway.app.state.gateway.posters
    now = time.monotonic()
    return {p for p in posters if cache.get(p, now)[0]}


def test_a_row_considers_at_most_the_candidate_caps(gateway):
    gateway.set_rules(**RULES_OFF)
    per_video = gateway.settings.max_candidates_per_video
    per_row = gateway.settings.max_candidates_per_row
    assert (per_video, per_row) == (50, 1000)

    # One title with 80 posters: the 30 with proven low click rates are dropped.
    video = new_id("v")
    fresh = [f"{video}-new{i:02d}" for i in range(50)]
    weak = [f"{video}-weak{i:02d}" for i in range(30)]
    _seed(gateway, video, fresh + weak, {p: ArmStats(1000, 2, 1000, 2) for p in weak})
    slot = gateway.select(new_id("u"), [video])["slots"][0]
    assert slot["poster_id"] in fresh
    assert _fetched(gateway, fresh) == set(fresh)
    assert _fetched(gateway, weak) == set()

    # A full row of 100 titles with 50 posters each: 10 per title, 1000 in all,
    # the best by posterior click rate.
    row = [new_id("row") for _ in range(100)]
    best, rest = [], []
    for title in row:
        posters = [f"{title}-p{i:02d}" for i in range(50)]
        stats = {
            p: ArmStats(100, 40 if i < 10 else 1, 100, 1) for i, p in enumerate(posters)
        }
        _seed(gateway, title, posters, stats)
        best += posters[:10]
        rest += posters[10:]
    answer = gateway.select(new_id("u"), row)
    assert len(answer["slots"]) == 100
    assert all(s["poster_id"] in set(best) for s in answer["slots"])
    assert _fetched(gateway, best) == set(best)
    assert _fetched(gateway, rest) == set()


def test_dashboard_reads_are_open_but_one_video_answer_is_bounded(gateway):
    from gateway.dashboard import MAX_POSTERS_SHOWN

    video = new_id("v")
    posters = [f"{video}-p{i:03d}" for i in range(MAX_POSTERS_SHOWN + 60)]
    busiest = posters[-5:]
    _seed(gateway, video, posters, {p: ArmStats(500, 5, 100, 1) for p in busiest})
    response = gateway.client.get(f"/dashboard/api/videos/{video}")
    assert response.status_code == 200
    body = response.json()
    assert body["posters_total"] == len(posters)
    shown = [p["poster_id"] for p in body["posters"]]
    assert len(shown) == MAX_POSTERS_SHOWN
    assert set(busiest) <= set(shown)
    assert gateway.client.get("/dashboard/api/videos").status_code == 200


def test_every_route_that_changes_something_wants_the_admin_token(gateway):
    from gateway.dashboard import router as dashboard

    # The dashboard is left out of the OpenAPI document: it only reads.
    assert all(set(r.methods) <= {"GET", "HEAD"} for r in dashboard.routes)
    checked = []
    for path, operations in gateway.app.openapi()["paths"].items():
        url = path.replace("{", "").replace("}", "")  # any value for parameters
        for method in set(operations) - {"get", "head"}:
            if path in OPEN_WRITES:
                continue
            response = gateway.client.request(method.upper(), url, json={})
            assert response.status_code == 401, (method, path, response.text)
            checked.append((method, path))
    assert ("put", "/admin/rules") in checked
    assert any(path.startswith("/admin/review") for _, path in checked)


def test_a_single_poster_video_still_answers_after_the_caps(gateway):
    video, poster = new_id("v"), new_id("p")
    add_poster(gateway, video, poster, stats=ArmStats(10, 1, 10, 1))
    assert gateway.select(new_id("u"), [video])["slots"][0]["poster_id"] == poster
