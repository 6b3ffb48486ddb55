"""A real ``keyart streams`` process through a Redis outage and a Redis data loss.

One private redis-server for the module (the session's Redis is shared):

1. it is SIGSTOPped for 8 s mid-stream: the learner waits, retries and ends
   with exactly the counts of the stream (no restart);
2. it is then killed and replaced by an empty one: the running learner
   refuses to write its partial changes over the empty Redis and stops, and
   a restarted learner rebuilds every arm and the poster catalog from Kafka,
   although Kafka's committed offsets are at the log end.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis

from keyart.keys import Keys
from keyart.stack import free_port, redis_server_binary
from producers.events import EventProducer
from tests.helpers import wait_for_redis
from tests.streams.test_workers import arms_of, log_end, poster, wait_caught_up
from tests.streams.workers import WorkerProcess, event_stream

pytestmark = pytest.mark.slow

IMPRESSIONS = 3000


class PrivateRedis:
    def __init__(self, port: int, directory: Path) -> None:
        self.port, self.directory = port, directory
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = redis_server_binary()
        assert binary is not None, "no redis-server"
        self.process = subprocess.Popen(
            [
                str(binary),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for_redis(self.url)

    def signal(self, sig: int) -> None:
        assert self.process is not None
        os.kill(self.process.pid, sig)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def readyz(worker):
    """Status and body of the worker's /readyz (its port is in its log)."""
    port = re.search(r"metrics on port (\d+)", worker.text()).group(1)
    try:
        with urllib.request.urlopen(  # noqa: S310 - http URL built here
            f"http://127.0.0.1:{port}/readyz", timeout=10
        ) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def all_time(arms):
    out = {}
    for video, fields in arms.items():
        for field, packed in fields.items():
            n, c, _, _ = (int(x) for x in packed.split(b","))
            if n or c:  # a published poster's arm starts at zero
                out[(video, field.decode())] = [n, c]
    return out


def expected_counts(expected):
    return {k: v for k, v in expected.items() if v[0]}


@pytest.fixture(scope="module")
def outage(make_settings, stack, tmp_path_factory):
    directory = tmp_path_factory.mktemp("private-redis")
    private = PrivateRedis(free_port(0), directory)
    private.start()
    base = make_settings(
        topics=True,
        redis_url=private.url,
        window_s=600.0,
        attribution_window_s=600.0,
        flush_interval_ms=200,
        streams_session_timeout_s=6.0,
        fm_sample_rate=0.2,
    )
    settings = base.model_copy(
        update={"streams_app_id": f"{base.topic_prefix}-outage", "metrics_port": 0}
    )
    logs = Path(tmp_path_factory.mktemp("outage-logs"))
    sends, expected = event_stream(seed=21, impressions=IMPRESSIONS, videos=12)
    producer = EventProducer(base)
    for p in (poster("p1", "v1"), poster("p2", "v1")):
        producer.send("poster_published", p)
    producer.flush()
    client = redis.Redis.from_url(private.url)
    workers: list[WorkerProcess] = []
    facts: dict[str, object] = {}
    try:
        first = WorkerProcess(settings, logs / "first.log")
        workers.append(first)
        first.wait_for_log("learner partitions assigned")

        def produce():
            steady = EventProducer(base)
            chunk = max(1, len(sends) // 30)
            for i in range(0, len(sends), chunk):
                for kind, record in sends[i : i + chunk]:
                    steady.send(kind, record)
                steady.flush()
                time.sleep(0.3)

        thread = threading.Thread(target=produce)
        thread.start()
        time.sleep(2.0)
        private.signal(signal.SIGSTOP)
        time.sleep(6.0)
        facts["readyz_during_stall"] = readyz(first)
        time.sleep(2.0)
        private.signal(signal.SIGCONT)
        thread.join()
        ends = log_end(base)
        wait_caught_up(client, settings, ends)
        time.sleep(0.5)
        facts["alive_after_stall"] = first.process.poll() is None
        facts["first_log"] = first.text()
        facts["arms_after_stall"] = arms_of(client, settings.redis_prefix)

        # Redis dies and comes back empty while the learner runs.
        private.stop()
        private.start()
        client = redis.Redis.from_url(private.url)
        deadline = time.monotonic() + 60
        while first.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.3)
        facts["first_exit"] = first.process.poll()
        facts["first_log"] = first.text()
        facts["arms_right_after_loss"] = arms_of(client, settings.redis_prefix)

        second = WorkerProcess(settings, logs / "second.log")
        workers.append(second)
        second.wait_for_log("learner partitions assigned")
        wait_caught_up(client, settings, ends)
        deadline = time.monotonic() + 30
        keys = Keys(settings.redis_prefix)
        while not client.exists(keys.poster("p2")) and time.monotonic() < deadline:
            time.sleep(0.3)
        facts["arms_rebuilt"] = arms_of(client, settings.redis_prefix)
        facts["catalog"] = client.smembers(keys.posters("v1"))
        facts["second_log"] = second.text()
        facts["expected"] = expected_counts(expected)
        yield facts
    finally:
        for worker in workers:
            worker.stop()
        client.close()
        private.stop()


def test_learner_rides_out_a_stalled_redis_and_ends_exact(outage):
    log = outage["first_log"]
    assert outage["alive_after_stall"], log[-3000:]
    assert "consumption paused" in log, log[-3000:]
    assert "consumption resumes" in log
    assert all_time(outage["arms_after_stall"]) == outage["expected"]
    status, body = outage["readyz_during_stall"]
    assert status == 503, body
    assert "redis_writes" in body and "KEYART_REDIS_URL" in body


def test_learner_stops_rather_than_write_over_an_emptied_redis(outage):
    assert outage["first_exit"] is not None, "the learner kept running"
    assert "lost the learner's state" in outage["first_log"]
    assert "KEYART_REDIS_URL" in outage["first_log"]
    # Nothing partial was written over the empty Redis.
    assert outage["arms_right_after_loss"] == {}


def test_restarted_learner_rebuilds_arms_and_catalog_from_kafka(outage):
    assert "rebuilding them from the earliest" in outage["second_log"]
    assert all_time(outage["arms_rebuilt"]) == outage["expected"]
    assert outage["catalog"] == {b"p1", b"p2"}
