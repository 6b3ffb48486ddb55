"""The experiment split: deterministic, sticky, versioned, on every record."""

from __future__ import annotations

import time

from bandits.state import ArmStats
from gateway.config import ExperimentsDocument, Variant
from gateway.experiments import Assigner
from gateway.token import TokenSigner
from tests.gateway.conftest import (
    ADMIN,
    RULES_OFF,
    TOKEN_SECRET,
    add_poster,
    new_id,
    read_records,
    serve,
)


def test_assignment_follows_the_weights_and_the_salt():
    doc = ExperimentsDocument(
        salt="s1",
        variants=[
            Variant(name="control", policy="random", weight=1),
            Variant(name="ts", policy="thompson", weight=3),
            Variant(name="lin", policy="linucb", weight=6),
        ],
    )
    users = [f"user-{i}" for i in range(20_000)]
    names = [Assigner(doc).assign(u).name for u in users]
    shares = {v: names.count(v) / len(names) for v in ("control", "ts", "lin")}
    assert abs(shares["control"] - 0.1) < 0.01
    assert abs(shares["ts"] - 0.3) < 0.015
    assert abs(shares["lin"] - 0.6) < 0.015
    assert names == [Assigner(doc).assign(u).name for u in users]  # deterministic

    reshuffled = Assigner(doc.model_copy(update={"salt": "s2"}))
    moved = sum(
        a != reshuffled.assign(u).name for u, a in zip(users, names, strict=True)
    )
    assert moved > 0.3 * len(users)

    # Re-weighting to 1:3:16 moves the boundaries from 0.1 and 0.4 to 0.05 and
    # 0.2: only the users between the old and new boundaries move (25 %).
    grown = doc.model_copy(
        update={
            "variants": [
                *doc.variants[:2],
                doc.variants[2].model_copy(update={"weight": 16}),
            ]
        }
    )
    regrown = [Assigner(grown).assign(u).name for u in users]
    moved = sum(old != new for old, new in zip(names, regrown, strict=True)) / len(
        users
    )
    assert abs(moved - 0.25) < 0.02


def test_split_is_sticky_across_processes_and_versioned(gateway, make_settings):
    gateway.set_rules(**RULES_OFF)
    video = new_id("v")
    add_poster(gateway, video, new_id("p"), stats=ArmStats(10, 1, 10, 1))
    add_poster(gateway, video, new_id("p"), stats=ArmStats(10, 1, 10, 1))
    version = gateway.set_variants(
        ("control", "random", 1.0), ("ts", "thompson", 1.0), salt="sticky"
    )
    users = [f"u{i}" for i in range(60)]
    first = {u: gateway.select(u, [video]) for u in users}
    assert {a["variant"] for a in first.values()} == {"control", "ts"}
    assert all(a["experiment_version"] == version for a in first.values())
    for answer in first.values():
        assert (
            answer["policy"]
            == {"control": "random", "ts": "thompson"}[answer["variant"]]
        )

    # A second gateway process on the same Redis reads the same split.
    server, other = serve(gateway.settings)
    try:
        again = {u: other.select(u, [video]) for u in users}
    finally:
        other.client.close()
        server.stop()
    assert {u: a["variant"] for u, a in again.items()} == {
        u: a["variant"] for u, a in first.items()
    }

    signer = TokenSigner(TOKEN_SECRET.encode())
    now_ms = int(time.time() * 1000)
    for answer in first.values():
        token = signer.verify(answer["slots"][0]["token"], now_ms, 60_000)
        assert (token.variant, token.experiment_version) == (
            answer["variant"],
            version,
        )
    decisions = read_records(
        gateway.settings,
        "decisions",
        "decision",
        lambda rs: sum(r["video_id"] == video for r in rs) >= 120,
    )
    logged = [r for r in decisions if r["video_id"] == video]
    assert len(logged) >= 120
    by_user = {r["user_id"]: r["variant"] for r in logged}
    assert by_user == {u: a["variant"] for u, a in first.items()}
    assert {r["experiment_version"] for r in logged} == {version}


def test_experiment_updates_need_the_admin_token_and_the_current_version(gateway):
    body = {
        "expected_version": 0,
        "document": {
            "salt": "x",
            "variants": [{"name": "a", "policy": "thompson", "weight": 1}],
        },
    }
    assert gateway.client.put("/admin/experiments", json=body).status_code == 401
    current = gateway.client.get("/admin/experiments", headers=ADMIN).json()["version"]
    body["expected_version"] = current + 5
    conflict = gateway.client.put("/admin/experiments", json=body, headers=ADMIN)
    assert conflict.status_code == 409
    assert "expected_version" in conflict.json()["detail"]
    body["expected_version"] = current
    updated = gateway.client.put("/admin/experiments", json=body, headers=ADMIN)
    assert updated.status_code == 200 and updated.json()["version"] == current + 1

    bad = {"document": {"variants": [{"name": "a", "policy": "magic", "weight": 1}]}}
    refused = gateway.client.put("/admin/experiments", json=bad, headers=ADMIN)
    assert refused.status_code == 422 and "policy" in refused.json()["detail"]
