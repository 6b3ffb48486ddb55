"""A real ``keyart streams`` process told to stop while its broker is down.

The learner here gets a private broker it can freeze and kill:

1. a first learner, flushing only once a minute, applies a stream; the broker
   is SIGSTOPped and the learner gets SIGTERM. It must exit promptly, and its
   final flush must have put every event and its offsets in Redis, although
   the Kafka commit that follows cannot reach the broker;
2. the broker resumes and a second learner starts: it resumes from the
   offsets in Redis and applies nothing twice;
3. the broker is killed and the second learner gets SIGTERM: it too exits
   promptly, saying what it could not do instead of printing tracebacks.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis

from keyart.stack import _wait_for_broker, broker_argv, free_port
from producers.events import EventProducer
from tests.streams.test_outage import all_time, expected_counts
from tests.streams.test_topic_reset import metric
from tests.streams.test_workers import arms_of
from tests.streams.workers import WorkerProcess, event_stream

pytestmark = pytest.mark.slow

STOP_BOUND_S = 20.0
"""How long a learner told to stop may take with the broker unreachable."""


class PrivateBroker:
    """A Tansu broker of this module's own, to freeze and kill."""

    def __init__(self, log: Path) -> None:
        self.port = free_port(0)
        self.bootstrap = f"127.0.0.1:{self.port}"
        self._log = open(log, "ab")  # noqa: SIM115 - closed in kill()
        self.process = subprocess.Popen(
            broker_argv(self.port),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _wait_for_broker(self.bootstrap, self.process, timeout=30)

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(10)
        self._log.close()


def metrics_port(worker: WorkerProcess) -> int:
    return int(re.search(r"metrics on port (\d+)", worker.text()).group(1))


def wait_applied(worker, settings, impressions, timeout=60.0):
    """Block until the worker has applied every impression and its click count
    has stopped moving (nothing is flushed yet, so ask its metrics)."""
    port = metrics_port(worker)
    name = "keyart_streams_events_total"
    last, steady_since = None, time.monotonic()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = (
            metric(port, name, topic=settings.topic("impressions")),
            metric(port, name, topic=settings.topic("clicks")),
        )
        if now != last:
            last, steady_since = now, time.monotonic()
        elif now[0] >= impressions and time.monotonic() - steady_since > 1.5:
            return
        time.sleep(0.3)
    raise AssertionError(f"not applied in {timeout} s: {last}\n{worker.text()[-3000:]}")


def sigterm_and_time(worker: WorkerProcess) -> tuple[int | None, float]:
    """SIGTERM the worker; its exit code (None: still running) and the wait."""
    started = time.monotonic()
    worker.process.send_signal(signal.SIGTERM)
    try:
        code = worker.process.wait(STOP_BOUND_S + 10)
    except subprocess.TimeoutExpired:
        code = None
    return code, time.monotonic() - started


@pytest.fixture(scope="module")
def broker_down(make_settings, stack, tmp_path_factory):
    logs = Path(tmp_path_factory.mktemp("broker-down-logs"))
    broker = PrivateBroker(logs / "broker.log")
    workers: list[WorkerProcess] = []
    facts: dict[str, object] = {}
    client = redis.Redis.from_url(stack.redis_url)
    try:
        base = make_settings(
            topics=True,
            kafka_bootstrap=broker.bootstrap,
            window_s=600.0,
            attribution_window_s=600.0,
            # No timed flush during the test: whatever reaches Redis before
            # the first stop was written by the final flush.
            flush_interval_ms=60_000,
            streams_session_timeout_s=6.0,
        )
        settings = base.model_copy(
            update={"streams_app_id": f"{base.topic_prefix}-down", "metrics_port": 0}
        )
        sends, expected = event_stream(seed=31, impressions=400, videos=6)
        facts["expected"] = expected_counts(expected)
        producer = EventProducer(base)
        for kind, record in sends:
            producer.send(kind, record)
        producer.flush()
        del producer  # its client would log every reconnect once the broker dies

        first = WorkerProcess(settings, logs / "first.log")
        workers.append(first)
        first.wait_for_log("learner partitions assigned")
        wait_applied(first, settings, impressions=400)
        facts["arms_before_stop"] = arms_of(client, settings.redis_prefix)
        broker.signal(signal.SIGSTOP)
        time.sleep(1.0)
        facts["first_exit"] = sigterm_and_time(first)
        facts["arms_after_first"] = arms_of(client, settings.redis_prefix)
        facts["first_log"] = first.text()

        broker.signal(signal.SIGCONT)
        again = settings.model_copy(update={"flush_interval_ms": 200})
        second = WorkerProcess(again, logs / "second.log")
        workers.append(second)
        second.wait_for_log("learner partitions assigned")
        time.sleep(2.0)  # several flushes of whatever it applied
        facts["arms_after_restart"] = arms_of(client, settings.redis_prefix)

        broker.kill()
        time.sleep(2.0)  # its fetches and heartbeats now fail and back off
        facts["second_exit"] = sigterm_and_time(second)
        facts["second_log"] = second.text()
        facts["arms_after_second"] = arms_of(client, settings.redis_prefix)
        yield facts
    finally:
        for worker in workers:
            if worker.process.poll() is None:
                worker.kill()
            else:
                worker.stop()
        broker.kill()
        client.close()


def test_stop_with_a_frozen_broker_is_prompt_and_flushes_to_redis(broker_down):
    code, seconds = broker_down["first_exit"]
    log = broker_down["first_log"]
    assert code == 0 and seconds < STOP_BOUND_S, (code, seconds, log[-3000:])
    # Nothing was flushed while it ran; the final flush wrote every event.
    assert all_time(broker_down["arms_before_stop"]) == {}
    assert all_time(broker_down["arms_after_first"]) == broker_down["expected"]
    assert "could not commit offsets to the broker at shutdown" in log, log[-3000:]
    assert "Traceback" not in log, log[-5000:]


def test_restart_after_the_frozen_stop_applies_nothing_twice(broker_down):
    assert all_time(broker_down["arms_after_restart"]) == broker_down["expected"]


def test_stop_with_a_killed_broker_is_prompt_and_says_why(broker_down):
    code, seconds = broker_down["second_exit"]
    log = broker_down["second_log"]
    assert code == 0 and seconds < STOP_BOUND_S, (code, seconds, log[-3000:])
    assert "Traceback" not in log, log[-5000:]
    assert all_time(broker_down["arms_after_second"]) == broker_down["expected"]
