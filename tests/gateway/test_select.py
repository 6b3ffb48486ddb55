"""The select API end to end: recall, tokens, propensities, decision log."""

from __future__ import annotations

import time

import orjson
import pytest

from bandits.state import ArmStats
from gateway.token import TokenSigner
from schemas.codec import get_codec
from tests.gateway.conftest import ADMIN, RULES_OFF, TOKEN_SECRET, add_poster, new_id
from tests.helpers import consume_raw


def test_row_gets_a_fitting_poster_a_verifiable_token_and_a_logged_decision(gateway):
    gateway.set_rules(**RULES_OFF)
    gateway.set_variants(("ts", "thompson", 1.0))
    a, b = new_id("v"), new_id("v")
    tall, wide = new_id("p"), new_id("p")
    add_poster(gateway, a, tall, aspect="2:3", stats=ArmStats(100, 5, 100, 5))
    add_poster(gateway, a, wide, aspect="16:9", stats=ArmStats(100, 50, 100, 50))
    add_poster(gateway, b, new_id("p"), placements=["search"])  # not for home_row
    user = new_id("u")

    answer = gateway.select(user, [a, b], context={"age": 0.3}, request_id="r1")

    first, second = answer["slots"]
    assert first["poster_id"] == tall  # the 16:9 poster cannot fill a 2:3 slot
    assert first["image_url"] == f"/posters/{a}/{tall}.jpg"
    assert first["propensity"] == 1.0  # the only candidate
    assert second["poster_id"] is None and second["reason"] == "no_candidates"
    token = TokenSigner(TOKEN_SECRET.encode()).verify(
        first["token"], int(time.time() * 1000), 60_000
    )
    assert (token.user_id, token.video_id, token.poster_id) == (user, a, tall)
    assert (token.policy, token.variant) == ("thompson", "ts")
    assert token.propensity == first["propensity"]

    messages = consume_raw(gateway.settings, gateway.settings.topic("decisions"), 2)
    decisions = [get_codec().decode("decision", m.value()) for m in messages]
    logged = next(d for d in decisions if d["video_id"] == a)
    assert logged["event_id"] == token.decision_id
    assert logged["request_id"] == "r1"
    assert logged["poster_id"] == tall and logged["candidates"] == [tall]
    assert logged["variant"] == "ts" and logged["policy"] == "thompson"
    assert logged["propensity"] == first["propensity"]
    assert logged["context"] == {"age": 0.3}
    assert messages[0].key() in (a.encode(), b.encode())
    empty = next(d for d in decisions if d["video_id"] == b)
    assert empty["poster_id"] == "" and "no_candidates" in empty["rules"]


def test_thompson_propensity_matches_the_observed_choice_frequency(gateway):
    gateway.set_rules(**RULES_OFF)
    gateway.set_variants(("ts", "thompson", 1.0))
    video = new_id("v")
    strong, weak = new_id("p"), new_id("p")
    add_poster(gateway, video, strong, stats=ArmStats(400, 40, 400, 40))
    add_poster(gateway, video, weak, stats=ArmStats(400, 32, 400, 32))

    picks, propensities = [], []
    for i in range(300):
        slot = gateway.select(f"u{i}", [video])["slots"][0]
        picks.append(slot["poster_id"] == strong)
        propensities.append(
            slot["propensity"]
            if slot["poster_id"] == strong
            else 1 - slot["propensity"]
        )
    observed = sum(picks) / len(picks)
    estimated = sum(propensities) / len(propensities)
    assert 0.55 < observed < 0.95  # a real contest, not a sure thing
    assert abs(observed - estimated) < 0.08


def test_retired_and_unapproved_posters_are_never_served(gateway):
    gateway.set_rules(**RULES_OFF)
    video = new_id("v")
    kept, retired, pending = new_id("p"), new_id("p"), new_id("p")
    add_poster(gateway, video, kept, stats=ArmStats(10, 0, 10, 0))
    add_poster(gateway, video, retired, stats=ArmStats(10, 9, 10, 9))
    add_poster(gateway, video, pending, stats=ArmStats(10, 9, 10, 9), status="retired")
    gateway.redis.sadd(gateway.keys.posters(video), pending)  # a stale set member
    gateway.redis.hset(gateway.keys.retired(video), retired, "by review")

    served = {
        gateway.select(f"u{i}", [video])["slots"][0]["poster_id"] for i in range(30)
    }
    assert served == {kept}


def test_openapi_documents_fields_and_examples(gateway):
    spec = gateway.client.get("/openapi.json").json()
    request = spec["components"]["schemas"]["SelectRequest"]
    assert "placement" in request["required"]
    assert request["properties"]["cues"]["description"]
    assert request["examples"][0]["placement"] == "home_row"
    assert "/v1/events" in spec["paths"] and "/admin/rules" in spec["paths"]


def test_the_docs_page_loads_everything_from_the_gateway(gateway):
    import re

    page = gateway.client.get("/docs")
    assert page.status_code == 200
    assert "http://" not in page.text and "https://" not in page.text
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets)
    for asset in assets:
        response = gateway.client.get(asset)
        assert response.status_code == 200 and response.content, asset


def test_linucb_serves_from_the_learners_model_in_redis(gateway):
    import numpy as np

    from bandits.features import FEATURE_DIM, cross_features
    from bandits.linucb import LinUCB

    gateway.set_rules(**RULES_OFF)
    gateway.set_variants(("lin", "linucb", 1.0))
    model = LinUCB(dim=FEATURE_DIM, alpha=0.1)
    dark = cross_features({"night": 1.0}, {"dark": 1.0})
    light = cross_features({"night": 1.0}, {"dark": 0.0})
    model.update_many(np.vstack([dark, light] * 200), np.array([1.0, 0.0] * 200))
    mapping = dict(model.to_mapping())
    mapping["updated_ms"] = 1_700_000_000_123
    gateway.redis.hset(gateway.keys.model("linucb"), mapping=mapping)
    gateway.client.get("/admin/rules", headers=ADMIN)  # refreshes models now

    video, dark_id, light_id = new_id("v"), new_id("p"), new_id("p")
    add_poster(gateway, video, dark_id, features={"dark": 1.0})
    add_poster(gateway, video, light_id, features={"dark": 0.0})
    slots = [
        gateway.select(new_id("u"), [video], context={"night": 1.0})["slots"][0]
        for _ in range(10)
    ]
    assert {s["poster_id"] for s in slots} == {dark_id}
    assert {s["propensity"] for s in slots} == {1.0}
    token = TokenSigner(TOKEN_SECRET.encode()).verify(
        slots[0]["token"], int(time.time() * 1000), 60_000
    )
    assert (token.policy, token.model_version) == ("linucb", 1_700_000_000_123)


@pytest.mark.parametrize(
    "policy", ["thompson", "thompson_alltime", "ucb1", "epsilon_greedy", "random"]
)
def test_every_count_based_policy_serves_with_a_valid_propensity(gateway, policy):
    gateway.set_rules(**{**RULES_OFF, "ramp_share": 0.2, "ramp_min_impressions": 50})
    gateway.set_variants(("only", policy, 1.0))
    video = new_id("v")
    for n, c in ((500, 40), (500, 20), (10, 1)):
        add_poster(gateway, video, new_id("p"), stats=ArmStats(n, c, n, c))
    for i in range(20):
        answer = gateway.select(f"u{i}", [video, new_id("v")])
        slot = answer["slots"][0]
        assert answer["policy"] == policy and slot["poster_id"]
        assert 0.0 < slot["propensity"] <= 1.0


def test_fm_serves_from_the_learners_export_with_softmax_propensities(gateway):
    from bandits.fm import OnlineFM, fm_features

    gateway.set_rules(**RULES_OFF)
    gateway.set_variants(("fm", "fm", 1.0))
    video, dark_id, light_id = new_id("v"), new_id("p"), new_id("p")
    fm = OnlineFM(n_factors=4, seed=3, learning_rate=0.05)
    for _ in range(300):
        fm.learn_one(
            fm_features({"night": 1.0}, {"dark": 1.0}, poster_id=dark_id), True
        )
        fm.learn_one(
            fm_features({"night": 1.0}, {"dark": 0.0}, poster_id=light_id), False
        )
    export = fm.export()
    gateway.redis.hset(
        gateway.keys.model("fm"),
        mapping={"data": orjson.dumps(export), "version": 1, "updated_ms": 4242},
    )
    gateway.client.get("/admin/rules", headers=ADMIN)  # refreshes models now
    add_poster(gateway, video, dark_id, features={"dark": 1.0})
    add_poster(gateway, video, light_id, features={"dark": 0.0})
    slots = [
        gateway.select(new_id("u"), [video], context={"night": 1.0})["slots"][0]
        for _ in range(30)
    ]
    dark = [s for s in slots if s["poster_id"] == dark_id]
    assert len(dark) >= 25
    assert all(s["propensity"] > 0.9 for s in dark)
    token = TokenSigner(TOKEN_SECRET.encode()).verify(
        slots[0]["token"], int(time.time() * 1000), 60_000
    )
    assert (token.policy, token.model_version) == ("fm", 4242)
