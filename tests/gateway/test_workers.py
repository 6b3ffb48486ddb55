"""`keyart gateway --workers 2` as users run it: one /metrics for all workers.

Each test starts the command as a subprocess on the session's broker and
Redis, spreads select requests over fresh connections until both workers have
answered some (read from each worker's own metric file), then checks that
every scrape, whichever worker answers it, counts all the decisions.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from bandits.state import ArmStats
from gateway import metrics
from keyart.keys import Keys
from keyart.stack import free_port
from tests.gateway.conftest import TOKEN_SECRET, Served, add_poster, new_id
from tests.helpers import settings_env

ROW = 2  # videos per select
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"


class Workers:
    """A `keyart gateway --workers 2` subprocess and where its output goes."""

    def __init__(self, settings, tmp_path: Path, **env: str) -> None:
        self.port = free_port(0)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / "gateway.log"
        self.temp = tmp_path / "tmp"
        self.temp.mkdir()
        child_env = settings_env(settings)
        child_env.pop(MULTIPROC_DIR, None)
        # tempfile in the parent makes its folder here, where the test sees it.
        child_env.update(TMPDIR=str(self.temp), KEYART_LOG_JSON="1", **env)
        self.multiproc_dir = env.get(MULTIPROC_DIR)
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "keyart.cli", "gateway"]
                + ["--port", str(self.port), "--workers", "2"],
                env=child_env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.worker_pids: set[int] = set()
        self.output = ""

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert self.process.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, "the gateway did not start"
            time.sleep(0.1)
        if self.multiproc_dir is None:
            (made,) = glob.glob(str(self.temp / "keyart-gateway-metrics-*"))
            self.multiproc_dir = made

    def pid_to_decisions(self) -> dict[int, float]:
        """Each worker's own decision count, read from its file in the folder."""
        out = {}
        for path in glob.glob(os.path.join(self.multiproc_dir, "counter_*.db")):
            pid = int(Path(path).stem.split("_")[1])
            self.worker_pids.add(pid)
            out[pid] = sum(
                sample.value
                for family in MultiProcessCollector.merge([path])
                if family.name == "keyart_gateway_decisions"
                for sample in family.samples
                if sample.name == "keyart_gateway_decisions_total"
            )
        return out

    def stop(self) -> str:
        """SIGTERM the command (as Ctrl-C or docker stop do); return its output."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
                # Workers outlive a killed command: end the running ones by pid.
                for pid in metrics.live_workers(self.multiproc_dir or str(self.temp)):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        return self.log.read_text()


def _seed(settings, videos: list[str]) -> None:
    client = redis.Redis.from_url(settings.redis_url)
    keys = Keys(settings.redis_prefix)
    served = Served("", settings, keys, client, client=None, app=None)
    for video in videos:
        for _ in range(2):
            add_poster(served, video, new_id("p"), stats=ArmStats(9, 1, 9, 1))
    client.close()


def _select(url: str, videos: list[str]) -> int:
    """Decisions of one select: its slots that got a poster."""
    body = {"user_id": new_id("u"), "placement": "home_row", "video_ids": videos}
    # A fresh connection per request, so the kernel hands them to either worker.
    response = httpx.post(f"{url}/v1/select", json=body, timeout=10)
    assert response.status_code == 200, response.text
    return sum(slot["poster_id"] is not None for slot in response.json()["slots"])


def _select_until_both_answered(
    workers: Workers, videos: list[str], least: int
) -> tuple[int, int]:
    """Send selects 8 at a time until both workers made some decisions.

    Returns the number of selects and of decisions made.
    """
    selects = decided = 0
    deadline = time.monotonic() + 60
    with ThreadPoolExecutor(8) as pool:
        while True:
            decided += sum(pool.map(lambda _: _select(workers.url, videos), range(8)))
            selects += 8
            counts = workers.pid_to_decisions()
            if decided >= least and sum(c > 0 for c in counts.values()) == 2:
                return selects, decided
            assert time.monotonic() < deadline, f"one worker took it all: {counts}"


@contextlib.contextmanager
def _both_answering(
    settings, tmp_path: Path, least: int, **env: str
) -> Iterator[tuple[Workers, list[str], int, int]]:
    """The command on freshly seeded videos, once both workers made decisions.

    Yields the command, its videos and the number of selects and decisions
    made (at least ``least``); stops the command on leaving, which keeps its
    output in ``output``.
    """
    videos = [new_id("v") for _ in range(ROW)]
    _seed(settings, videos)
    workers = Workers(settings, tmp_path, **env)
    try:
        workers.wait_ready()
        selects, decided = _select_until_both_answered(workers, videos, least)
        yield workers, videos, selects, decided
    finally:
        workers.output = workers.stop()


def _scrape(url: str) -> dict[str, list]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def _total(samples: list, name: str) -> float:
    return sum(s.value for s in samples if s.name == name)


@pytest.fixture
def workers_settings(make_settings):
    # A generous Redis budget: a worker's first rows, under 8 concurrent
    # requests, must not fall back (a fallback without live state has no poster).
    return make_settings(topics=True, token_secret=TOKEN_SECRET, redis_budget_ms=2000.0)


@pytest.mark.slow
def test_every_scrape_counts_the_decisions_of_both_workers(workers_settings, tmp_path):
    with _both_answering(workers_settings, tmp_path, least=48) as run:
        workers, _, selects, decided = run
        assert sum(workers.pid_to_decisions().values()) == decided

        for _ in range(6):  # fresh connections: the scrapes reach both workers
            scrape = _scrape(workers.url)
            decisions = scrape["keyart_gateway_decisions"]
            assert _total(decisions, "keyart_gateway_decisions_total") == decided
            rows = _total(
                scrape["keyart_gateway_decision_seconds"],
                "keyart_gateway_decision_seconds_count",
            )
            assert rows == selects
            (circuit,) = scrape["keyart_gateway_redis_circuit_open"]
            assert circuit.labels == {} and circuit.value == 0
            memory = scrape["process_resident_memory_bytes"]
            assert {int(s.labels["pid"]) for s in memory} == workers.worker_pids
        # The command itself writes no metrics: only its workers have files.
        assert workers.process.pid not in workers.worker_pids
        made = workers.multiproc_dir

    assert not os.path.exists(made), "the private metrics folder was left behind"
    # KEYART_LOG_JSON=1: every line of every process is a JSON record.
    lines = workers.output.splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    started = {
        r["message"]
        for r in records
        if r["message"].startswith("Started server process")
    }
    assert started == {f"Started server process [{p}]" for p in workers.worker_pids}
    adds = [r for r in records if r["message"].startswith("gateway worker")]
    assert {r["pid"] for r in adds} == workers.worker_pids
    assert all(r["logger"] == "gateway" and r["level"] == "INFO" for r in adds)


@pytest.mark.slow
def test_the_dashboard_counts_the_decisions_of_both_workers(workers_settings, tmp_path):
    from urllib.parse import quote

    with _both_answering(workers_settings, tmp_path, least=16) as run:
        workers, videos, _, decided = run
        counts = workers.pid_to_decisions()
        assert sorted(counts.values())[0] < decided  # neither worker made all
        page = f"{workers.url}/dashboard/api/videos/{quote(videos[0])}"
        for _ in range(6):  # fresh connections: the answers come from both workers
            answer = httpx.get(page, timeout=30)
            assert answer.status_code == 200, answer.text
            variants = answer.json()["variants"]
            assert sum(v["decisions"] for v in variants) == decided


@pytest.mark.slow
def test_a_users_metrics_folder_is_kept_and_counts_a_killed_worker(
    workers_settings, tmp_path
):
    mine = tmp_path / "mine"
    mine.mkdir()
    env = {MULTIPROC_DIR: str(mine)}
    with _both_answering(workers_settings, tmp_path, least=8, **env) as run:
        workers, _, _, decided = run
        assert not glob.glob(str(workers.temp / "keyart-gateway-metrics-*"))
        assert set(metrics.live_workers(str(mine))) == workers.worker_pids

        # A worker killed outright runs no shutdown; uvicorn starts another,
        # which drops the dead one's gauges. Its decisions stay counted.
        killed = min(workers.worker_pids)
        os.kill(killed, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while True:
            live = set(metrics.live_workers(str(mine)))
            if killed not in live and len(live) == 2:
                break
            assert time.monotonic() < deadline, f"no worker replaced {killed}: {live}"
            time.sleep(0.1)
        scrape = _scrape(workers.url)
        decisions = scrape["keyart_gateway_decisions"]
        assert _total(decisions, "keyart_gateway_decisions_total") == decided
        memory = scrape["process_resident_memory_bytes"]
        assert {int(s.labels["pid"]) for s in memory} == live

    # Both workers dropped their live gauges as they stopped; counts remain.
    assert metrics.live_workers(str(mine)) == []
    assert sum(workers.pid_to_decisions().values()) == decided
    lines = workers.output.splitlines()
    warned = [json.loads(line) for line in lines if "ended" in line]
    assert [(r["level"], r["pid"]) for r in warned] == [("WARNING", killed)]


@pytest.mark.slow
def test_a_killed_command_leaves_no_worker_serving(workers_settings, tmp_path):
    # Killed outright, `keyart gateway --workers 2` left both workers serving
    # its port, unsupervised, for good.
    with _both_answering(workers_settings, tmp_path, least=8) as run:
        workers = run[0]
        pids = sorted(workers.worker_pids)
        workers.process.kill()
        workers.process.wait(timeout=10)
        deadline = time.monotonic() + 15
        try:
            while alive := [pid for pid in pids if _running(pid)]:
                assert time.monotonic() < deadline, f"workers left running: {alive}"
                time.sleep(0.1)
        finally:
            for pid in filter(_running, pids):
                os.kill(pid, signal.SIGKILL)


def _running(pid: int) -> bool:
    """Whether ``pid`` is a process that has not ended (a zombie has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"
