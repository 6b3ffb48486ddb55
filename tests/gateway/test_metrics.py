"""Metrics and health endpoints after real traffic."""

from __future__ import annotations

import re

from bandits.state import ArmStats
from tests.gateway.conftest import RULES_OFF, add_poster, new_id


def _value(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.match(rf"{name}(?:\{{(.*)\}})? (\S+)$", line)
        if match and ",".join(sorted((match.group(1) or "").split(","))) == wanted:
            return float(match.group(2))
    return 0.0


def test_decisions_rules_and_events_are_counted(gateway):
    gateway.set_variants(("det", "ucb1", 1.0))
    gateway.set_rules(**{**RULES_OFF, "scene_boost": 2.0})
    video = new_id("v")
    add_poster(gateway, video, new_id("p"), stats=ArmStats(9, 1, 9, 1), tags=["hero"])
    add_poster(gateway, video, new_id("p"), stats=ArmStats(9, 1, 9, 1))
    before = gateway.client.get("/metrics").text

    slots = [
        gateway.select(new_id("u"), [video], cues=["hero"])["slots"][0]
        for _ in range(5)
    ]
    gateway.client.post(
        "/v1/events",
        json={"events": [{"type": "impression", "event_id": "x", "token": "bad"}]},
    )
    after = gateway.client.get("/metrics").text

    def grew(name, **labels):
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert grew("keyart_gateway_decisions_total", variant="det", policy="ucb1") == 5
    assert grew("keyart_gateway_rule_hits_total", rule="scene_match") == 5
    assert grew("keyart_gateway_decision_seconds_count") == 5
    assert (
        grew("keyart_collector_events_total", kind="impression", outcome="invalid") == 1
    )
    assert all(s["poster_id"] for s in slots)


def test_health_and_readiness(gateway):
    assert gateway.client.get("/healthz").json()["alive"] is True
    ready = gateway.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert set(ready.json()["checks"]) == {"redis", "broker", "decision_log"}
