"""The retirement child never outlives its gateway, and a stuck one is replaced.

The gateway evaluates the retirement rule in one spawned child per process
(``gateway.retirement.EVALUATOR``). These tests stop and kill real children
and real ``keyart gateway`` processes on the session's broker and Redis:

- a child that stops answering (SIGSTOP) is killed and replaced, so the rule
  goes on judging videos;
- a gateway killed with SIGKILL leaves no child behind, and neither does one
  stopped with SIGTERM while its child is frozen (uvicorn ends a SIGTERM by
  re-raising it, whose default action skips the interpreter's exit handlers).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis

from bandits.state import ArmStats
from gateway import retirement
from gateway.retirement import EVALUATOR
from keyart.keys import Keys
from keyart.stack import free_port
from tests.gateway.conftest import (
    ADMIN_TOKEN,
    RULES_OFF,
    TOKEN_SECRET,
    Served,
    add_poster,
    new_id,
)
from tests.helpers import settings_env


def _state(pid: int) -> str | None:
    """The process's state letter (``T`` stopped, ``Z`` zombie), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rpartition(")")[2].split()[0]


def _children(pid: int) -> list[int]:
    """Live processes whose parent is ``pid``."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(entry.name))
    return out


def _seed_retirable(client, keys: Keys) -> tuple[str, str]:
    """A video whose second poster the rule retires at its first look."""
    served = Served("", None, keys, client, client=None, app=None)  # type: ignore[arg-type]
    video, good, poor = new_id("v"), new_id("p"), new_id("p")
    add_poster(served, video, good, stats=ArmStats(20000, 2000, 20000, 2000))
    add_poster(served, video, poor, stats=ArmStats(20000, 600, 20000, 600))
    return video, poor


def _select_until_retired(url: str, client, keys: Keys, timeout: float) -> bool:
    video, poor = _seed_retirable(client, keys)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = {"user_id": new_id("u"), "placement": "home_row", "video_ids": [video]}
        response = httpx.post(f"{url}/v1/select", json=body, timeout=10)
        assert response.status_code == 200, response.text
        if client.hexists(keys.retired(video), poor):
            return True
        time.sleep(0.05)
    return False


def test_a_stopped_child_is_killed_and_replaced(gateway, monkeypatch):
    # A child that never answers held the rule up for good: no video was
    # judged again for as long as the gateway ran.
    monkeypatch.setattr(retirement, "EVALUATION_TIMEOUT_S", 2.0, raising=False)
    gateway.set_variants(("control", "random", 1.0))
    gateway.set_rules(**{**RULES_OFF, "retire_min_impressions": 1000})
    assert _select_until_retired(gateway.url, gateway.redis, gateway.keys, 30)
    (stopped,) = EVALUATOR.child_pids()
    os.kill(stopped, signal.SIGSTOP)
    try:
        assert _select_until_retired(gateway.url, gateway.redis, gateway.keys, 20), (
            "the rule stalled behind a stopped child"
        )
        assert stopped not in EVALUATOR.child_pids()
        deadline = time.monotonic() + 10
        while _state(stopped) not in (None, "Z"):
            assert time.monotonic() < deadline, "the stopped child was left running"
            time.sleep(0.05)
    finally:
        if _state(stopped) == "T":
            os.kill(stopped, signal.SIGKILL)


@pytest.fixture
def command(make_settings, tmp_path):
    """A ``keyart gateway`` subprocess with retirement on, and its Redis."""
    settings = make_settings(
        topics=True,
        token_secret=TOKEN_SECRET,
        admin_token=ADMIN_TOKEN,
        redis_budget_ms=200.0,
    )
    port = free_port(0)
    env = settings_env(settings)
    log = tmp_path / "gateway.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "keyart.cli", "gateway", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    client = redis.Redis.from_url(settings.redis_url)
    url = f"http://127.0.0.1:{port}"
    left: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the gateway did not start"
            time.sleep(0.1)
        keys = Keys(settings.redis_prefix)
        assert _select_until_retired(url, client, keys, 30), log.read_text()
        left.extend(_children(process.pid))
        assert left, "the gateway started no retirement child"
        yield process, left
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        for pid in left:  # whatever the test left behind, by pid
            if _state(pid) not in (None, "Z"):
                os.kill(pid, signal.SIGKILL)
        client.close()


def _gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        alive = [pid for pid in pids if _state(pid) not in (None, "Z")]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def test_a_killed_gateway_leaves_no_child(command):
    # The child waited on a pipe it held both ends of: it ran on for good.
    process, children = command
    process.kill()
    process.wait(timeout=10)
    assert _gone(children, 10) == []


def test_a_terminated_gateway_leaves_no_child_even_a_frozen_one(command):
    process, children = command
    for pid in children:
        if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGSTOP)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=20)
    assert _gone(children, 10) == []


def _missing_in_the_child(parent: int) -> None:
    """An initializer the child cannot find, as when the code on disk changed
    under a running gateway: every child dies as it starts."""


def test_a_child_that_dies_at_start_leaves_the_rule_to_a_thread(
    gateway, monkeypatch, caplog
):
    # Each death was followed by another child a second later, for good, and
    # no video was ever judged.
    name = "_not_in_the_module_on_disk"
    _missing_in_the_child.__module__ = retirement.__name__
    _missing_in_the_child.__qualname__ = name
    monkeypatch.setattr(retirement, name, _missing_in_the_child, raising=False)
    monkeypatch.setattr(retirement, "_start_child", _missing_in_the_child)
    EVALUATOR.close()
    gateway.set_variants(("control", "random", 1.0))
    gateway.set_rules(**{**RULES_OFF, "retire_min_impressions": 1000})
    caplog.set_level("WARNING", logger="gateway")
    try:
        assert _select_until_retired(gateway.url, gateway.redis, gateway.keys, 30)
        assert EVALUATOR.child_pids() == []
    finally:
        EVALUATOR.close()  # the next test's gateway starts a child again
    messages = [r.message for r in caplog.records]
    deaths = [m for m in messages if "retirement process died" in m]
    assert len(deaths) == retirement.MAX_FAILED_STARTS - 1, messages
    assert any("evaluating in a thread" in m for m in messages), messages
