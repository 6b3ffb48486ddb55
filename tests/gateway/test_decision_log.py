"""The decision log's child process, on the session's broker.

The gateway hands each row of decisions to a child (``gateway.decision_log``).
These tests run real children and check, by reading the topic back:

- records land on the partitions :meth:`GatewayProducer.log` gives them;
- records that cannot be encoded, queued or delivered are counted, once, and
  logged at most once an interval;
- a child that is killed is counted and replaced, and rows logged before its
  replacement runs, and after, land; a close before the replacement runs
  counts each loss once; a replacement that cannot start is tried again;
- a child that stops reading makes rows beyond the buffer count as dropped;
- a gateway that is killed without stopping leaves a child that still
  delivers what it had received, and then exits;
- a child that hears a SIGTERM keeps reading for the flush time, so a stop of
  the whole process group loses no row.
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from gateway._log_child import decision_records
from gateway.broker import GatewayProducer, producer_config
from gateway.decision_log import DecisionLog
from gateway.metrics import DECISION_LOG_FAILURES
from keyart.settings import Settings
from keyart.stack import free_port
from schemas.codec import get_codec
from tests.helpers import consume_raw

ROOT = Path(__file__).resolve().parents[2]


def _row(tag: str, videos: list[str], **changes: object) -> tuple[object, ...]:
    decisions = [
        (
            f"{tag}-{video}",
            video,
            f"{video}-p0",
            "thompson",
            changes.get("propensity", 0.5),
            7,
            [f"{video}-p0", f"{video}-p1"],
            [0.1, 0.2],
            ["mmr"],
            False,
        )
        for video in videos
    ]
    return (1_700_000_000_000, f"r-{tag}", "u1", "home_row", "ts", 3, {}, decisions)


def _failures(reason: str) -> float:
    return DECISION_LOG_FAILURES.labels(reason=reason)._value.get()


async def _until(check, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def _log(settings: Settings, **config: object) -> DecisionLog:
    return DecisionLog(
        {**producer_config(settings), **config}, settings.topic("decisions")
    )


def test_a_row_becomes_the_records_of_the_decision_schema():
    first, second = decision_records(_row("a", ["v1", "v2"]))
    codec = get_codec()
    # Every field of the schema is filled, with what the row carried.
    assert codec.decode("decision", codec.encode("decision", first)) == first
    assert first == {
        "event_id": "a-v1",
        "event_time": 1_700_000_000_000,
        "request_id": "r-a",
        "user_id": "u1",
        "video_id": "v1",
        "poster_id": "v1-p0",
        "placement": "home_row",
        "variant": "ts",
        "policy": "thompson",
        "propensity": 0.5,
        "model_version": 7,
        "experiment_version": 3,
        "candidates": ["v1-p0", "v1-p1"],
        "scores": [0.1, 0.2],
        "rules": ["mmr"],
        "fallback": False,
        "context": {},
    }
    assert second["video_id"] == "v2" and second["request_id"] == "r-a"


async def test_rows_land_where_one_by_one_logging_puts_them(make_settings):
    settings = make_settings(topics=True)
    videos = [f"video-{i}" for i in range(24)]
    producer = GatewayProducer(settings)
    producer.start(asyncio.get_running_loop())
    for video in videos:
        producer.log("decision", next(decision_records(_row("one", [video]))))
    log = _log(settings)
    await log.start()
    log.log(_row("many", videos[:12]))
    log.log(_row("many", videos[12:]))
    await log.close()
    producer.close()

    messages = consume_raw(settings, settings.topic("decisions"), 2 * len(videos))
    where: dict[str, dict[str, int]] = {"one": {}, "many": {}}
    for message in messages:
        record = get_codec().decode("decision", message.value())
        assert message.key() == record["video_id"].encode()
        how = record["event_id"].split("-", 1)[0]
        where[how][record["video_id"]] = message.partition()
    assert where["many"] == where["one"] and len(where["one"]) == len(videos)
    assert len(set(where["one"].values())) > 1  # the keys do spread
    assert log.settled == log.sent == len(videos)


async def test_records_it_cannot_encode_or_queue_are_counted_once(make_settings):
    settings = make_settings(topics=True)
    unreadable, full = _failures("encode"), _failures("queue_full")
    # A queue of three records whose batches wait a second: of five, two are
    # refused.
    log = _log(settings, **{"linger.ms": 1000, "queue.buffering.max.messages": 3})
    await log.start()
    log.log(_row("bad", ["v0"], propensity="not a number"))
    log.log(_row("ok", [f"v{i}" for i in range(5)]))
    await _until(lambda: _failures("queue_full") >= full + 2)
    await log.close()
    assert _failures("encode") == unreadable + 1
    assert _failures("queue_full") == full + 2
    assert log.settled == log.sent == 6


async def test_a_record_the_broker_never_takes_is_counted_once(make_settings):
    nowhere = make_settings(kafka_bootstrap=f"127.0.0.1:{free_port(0)}")
    before = _failures("broker")
    log = DecisionLog(
        producer_config(nowhere, timeout_s=1.0), nowhere.topic("decisions")
    )
    await log.start()
    log.log(_row("lost", ["v"]))
    await _until(lambda: _failures("broker") > before)
    await asyncio.sleep(0.8)  # a second report of the same record lands by now
    await log.close()
    assert _failures("broker") == before + 1
    assert log.settled == log.sent == 1


async def test_records_lost_by_the_thousand_cost_a_line_not_one_each(
    make_settings, capfd
):
    nowhere = make_settings(kafka_bootstrap=f"127.0.0.1:{free_port(0)}")
    before, unreadable = _failures("broker"), _failures("encode")
    log = DecisionLog(
        producer_config(nowhere, timeout_s=1.0), nowhere.topic("decisions")
    )
    await log.start()
    for i in range(3):
        log.log(_row(f"lost{i}", [f"v{j}" for j in range(20)]))
        log.log(_row(f"bad{i}", ["v"], propensity="not a number"))
    await _until(lambda: _failures("broker") == before + 60)
    await log.close()
    assert _failures("encode") == unreadable + 3
    # The child writes to the gateway's standard error.
    said = capfd.readouterr().err
    assert said.count("was not delivered") == 1, said
    assert said.count("cannot encode") == 1, said


async def test_a_killed_child_is_counted_and_replaced(make_settings):
    settings = make_settings(topics=True)
    exits, down = _failures("logger_exit"), _failures("logger_down")
    # linger of 10 s: what the first child holds is not delivered before it dies.
    log = _log(settings, **{"linger.ms": 10_000, "message.timeout.ms": 30_000})
    await log.start()
    first = log.pid
    log.log(_row("held", ["v1", "v2", "v3"]))
    log.flush()
    await _until(lambda: log.settled == 0 and _queued_in(first))
    os.kill(first, signal.SIGKILL)
    await _until(lambda: not log.running)
    log.log(_row("between", ["v6"]))  # no child: kept for the next one
    await asyncio.sleep(0.1)
    assert log.pending and log.pid == first
    await _until(lambda: log.running and log.pid != first)
    assert _failures("logger_exit") == exits + 3

    log.log(_row("after", ["v4", "v5"]))
    await log.close()
    records = [
        get_codec().decode("decision", m.value())
        for m in consume_raw(settings, settings.topic("decisions"), 3)
    ]
    assert sorted(r["event_id"] for r in records) == [
        "after-v4",
        "after-v5",
        "between-v6",
    ]
    assert _failures("logger_down") == down


async def test_a_killed_child_counts_as_lost_little_it_had_delivered(make_settings):
    settings = make_settings(topics=True)
    exits = _failures("logger_exit")
    log = _log(settings)
    await log.start()
    log.log(_row("first", ["v0"]))
    await _until(lambda: log.settled == 1)  # a report just came
    log.log(_row("next", [f"v{i}" for i in range(1, 20)]))
    # Delivered in a few milliseconds, and reported before the kill.
    await asyncio.sleep(0.3)
    os.kill(log.pid, signal.SIGKILL)
    await _until(lambda: not log.running)
    await log.close()
    assert len(consume_raw(settings, settings.topic("decisions"), 20)) == 20
    assert _failures("logger_exit") == exits


async def test_rows_kept_through_an_outage_reach_the_next_child_in_pieces(
    make_settings,
):
    settings = make_settings(topics=True)
    log = _log(settings)
    await log.start()
    first = log.pid
    os.kill(first, signal.SIGKILL)
    await _until(lambda: not log.running)
    for i in range(10_000):  # all the rows kept while no child runs
        log.log(_row(f"r{i}", [f"v{j}" for j in range(5)]))
    gaps = []

    async def tick() -> None:
        while not (log.running and log.pid != first and not log.pending):
            started = time.perf_counter()
            await asyncio.sleep(0.001)
            gaps.append(time.perf_counter() - started)

    await asyncio.wait_for(tick(), 15.0)
    # Pickled at once, they held every request up for a few hundred ms.
    assert max(gaps) < 0.1, max(gaps)
    await log.close()
    assert log.settled == log.sent == 50_000


async def test_a_close_while_no_child_runs_counts_each_loss_once(make_settings):
    settings = make_settings(topics=True)
    exits, down = _failures("logger_exit"), _failures("logger_down")
    # Rows wait 5 s before a write: no timer of the log's runs during the test.
    log = DecisionLog(
        {
            **producer_config(settings),
            "linger.ms": 10_000,
            "message.timeout.ms": 30_000,
        },
        settings.topic("decisions"),
        batch_s=5.0,
    )
    await log.start()
    first = log.pid
    log.log(_row("held", ["v1", "v2", "v3"]))
    log.flush()
    await _until(lambda: _queued_in(first))
    os.kill(first, signal.SIGKILL)
    await _until(lambda: _failures("logger_exit") == exits + 3)
    log.log(_row("between", ["v4"]))  # kept for a next child
    # The next child waits a second (the first died fast): the log closes first.
    await log.close()
    assert _failures("logger_exit") == exits + 3  # the dead child's, once
    assert _failures("logger_down") == down + 1 and not log.pending
    log.log(_row("late", ["v5", "v6"]))
    assert _failures("logger_down") == down + 3


async def test_a_child_that_cannot_start_for_a_while_is_started_later(
    make_settings, caplog
):
    settings = make_settings(topics=True)
    log = _log(settings)
    await log.start()
    first = log.pid
    os.kill(first, signal.SIGKILL)
    await _until(lambda: not log.running)
    await asyncio.sleep(0.3)  # the dead child's pipes are closed by now
    # The next start (in a second: the child died fast) finds no free file
    # descriptor for its pipes.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowest_free = os.dup(0)
    os.close(lowest_free)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))
    try:
        await _until(lambda: "cannot start" in caplog.text, timeout=5.0)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    log.log(_row("later", ["v1"]))  # waits for the child after
    await _until(lambda: log.running and log.pid != first, timeout=10.0)
    await log.close()
    [message] = consume_raw(settings, settings.topic("decisions"), 1)
    assert get_codec().decode("decision", message.value())["event_id"] == "later-v1"


async def test_a_sigterm_to_the_group_loses_no_row_the_gateway_wrote(make_settings):
    settings = make_settings(topics=True)
    before = {r: _failures(r) for r in ("logger_exit", "logger_down", "shutdown")}
    log = _log(settings)
    await log.start()
    first = log.pid
    await asyncio.sleep(0.5)  # the child has installed its handlers
    # systemd stops a service by a SIGTERM to each of its processes: the
    # child hears it first, and the gateway logs the rows of its last
    # requests before it closes the log.
    os.kill(first, signal.SIGTERM)
    for i in range(5):
        log.log(_row(f"last{i}", ["v1", "v2"]))
        await asyncio.sleep(0.05)
    await log.close()
    assert {r: _failures(r) for r in before} == before
    assert log.pid == first and log.settled == log.sent == 10
    assert len(consume_raw(settings, settings.topic("decisions"), 10)) == 10


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP], ids=["INT", "HUP"])
async def test_a_terminal_signal_to_the_group_leaves_the_child_to_the_gateway(
    make_settings, sig
):
    settings = make_settings(topics=True)
    exits = _failures("logger_exit")
    log = _log(settings)
    await log.start()
    first = log.pid
    await asyncio.sleep(0.5)  # the child has installed its handlers
    log.log(_row("before", ["v1"]))
    log.flush()
    # A Ctrl-C, or the terminal closing: the gateway stops, and closes the pipe.
    os.kill(first, sig)
    log.log(_row("after", ["v2"]))
    await asyncio.sleep(0.2)
    await log.close()
    assert log.pid == first and _failures("logger_exit") == exits
    assert len(consume_raw(settings, settings.topic("decisions"), 2)) == 2


async def test_a_child_told_alone_to_stop_stops_after_the_flush_time(make_settings):
    settings = make_settings(topics=True)
    log = DecisionLog(
        producer_config(settings), settings.topic("decisions"), flush_s=1.0
    )
    await log.start()
    first = log.pid
    await asyncio.sleep(0.5)
    os.kill(first, signal.SIGTERM)
    await asyncio.sleep(0.5)
    assert log.running and log.pid == first  # still reading
    await _until(lambda: log.pid != first and log.running, timeout=8.0)
    await log.close()


async def test_a_close_while_the_next_child_starts_leaves_no_child(make_settings):
    settings = make_settings(topics=True)
    log = _log(settings)
    await log.start()
    first, me = log.pid, os.getpid()
    ours = Path(f"/proc/{me}/task/{me}/children")  # forked by the loop's thread
    others = set(ours.read_text().split()) - {str(first)}
    os.kill(first, signal.SIGKILL)
    # Catch the next child between its fork and the end of its start.
    deadline = time.monotonic() + 10
    while not (new := set(ours.read_text().split()) - others - {str(first)}):
        assert time.monotonic() < deadline, "no next child"
        await asyncio.sleep(0)
    assert log.pid == first  # still starting
    await log.close()
    [child] = new
    deadline = time.monotonic() + 5
    while _alive(int(child)):
        assert time.monotonic() < deadline, "the child started during close runs on"
        await asyncio.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _queued_in(pid: int | None) -> bool:
    """Whether the child has read its frames (it sleeps on its pipe again)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rpartition(")")[2].split()[0] == "S"


async def test_a_child_that_stops_reading_costs_rows_not_the_loop(make_settings):
    settings = make_settings(topics=True)
    dropped = _failures("pipe_full")
    log = DecisionLog(
        producer_config(settings), settings.topic("decisions"), max_buffer_bytes=1
    )
    await log.start()
    os.kill(log.pid, signal.SIGSTOP)
    try:
        started = time.perf_counter()
        for i in range(200):  # far more than a pipe holds
            log.log(_row(f"r{i}", [f"v{j}" for j in range(20)]))
            log.flush()
        elapsed = time.perf_counter() - started
        assert _failures("pipe_full") > dropped
        sent, lost = log.sent, _failures("pipe_full") - dropped
        assert sent + lost == 200 * 20
        assert elapsed < 2.0  # not one write waited for the reader
    finally:
        os.kill(log.pid, signal.SIGCONT)
    await log.close()
    assert log.settled == sent
    messages = consume_raw(settings, settings.topic("decisions"), sent)
    assert len(messages) == sent


@pytest.mark.slow
def test_a_killed_gateway_leaves_a_child_that_delivers_and_exits(
    make_settings, tmp_path
):
    settings = make_settings(topics=True)
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import asyncio, os, signal, sys
            sys.path.insert(0, {str(ROOT)!r})
            from gateway.broker import producer_config
            from gateway.decision_log import DecisionLog
            from keyart.settings import load_settings
            from tests.gateway.test_decision_log import _row

            async def main():
                settings = load_settings(
                    kafka_bootstrap={settings.kafka_bootstrap!r},
                    topic_prefix={settings.topic_prefix!r},
                )
                config = {{**producer_config(settings), "linger.ms": 2000}}
                log = DecisionLog(config, settings.topic("decisions"))
                await log.start()
                log.log(_row("orphan", [f"v{{i}}" for i in range(20)]))
                await asyncio.sleep(0.3)  # the pipe is written
                print(log.pid, flush=True)
                os.kill(os.getpid(), signal.SIGKILL)

            asyncio.run(main())
            """
        )
    )
    parent = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60
    )
    assert parent.returncode == -signal.SIGKILL, parent.stderr
    child = int(parent.stdout.split()[0])
    messages = consume_raw(settings, settings.topic("decisions"), 20)
    assert len(messages) == 20
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists():
        status = Path(f"/proc/{child}/stat").read_text().rpartition(")")[2].split()
        if status[0] == "Z":  # exited; its parent is gone, init reaps it
            break
        assert time.monotonic() < deadline, "the orphaned child did not exit"
        time.sleep(0.1)


def test_the_gateway_reports_and_replaces_a_dead_log_child(gateway):
    from tests.gateway.conftest import add_poster, new_id

    video = new_id("v")
    add_poster(gateway, video, f"{video}-p0")
    log = gateway.app.state.gateway.decision_log

    def select() -> str:
        answer = gateway.client.post(
            "/v1/select",
            json={"user_id": "u-log", "placement": "home_row", "video_ids": [video]},
        )
        assert answer.status_code == 200, answer.text
        return answer.json()["request_id"]

    assert gateway.client.get("/readyz").json()["checks"]["decision_log"]["ok"]
    before = select()
    first = log.pid
    deadline = time.monotonic() + 10
    while not 0 < log.sent == log.settled:  # the first child settled the row
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(first, signal.SIGKILL)
    while log.pid in (None, first) or not log.running:
        assert time.monotonic() < deadline, "no new child"
        time.sleep(0.05)
    ready = gateway.client.get("/readyz").json()["checks"]["decision_log"]
    assert ready["ok"] and str(log.pid) in ready["detail"]
    after = select()

    from tests.gateway.conftest import read_records

    def both(records: list[dict]) -> bool:
        return {before, after} <= {r["request_id"] for r in records}

    records = read_records(gateway.settings, "decisions", "decision", both)
    assert {r["video_id"] for r in records if r["request_id"] == after} == {video}


def _nice(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[16])


async def test_the_child_runs_below_the_gateway_s_priority(make_settings):
    from gateway._orphan import CHILD_NICE

    settings = make_settings(topics=True)
    log = _log(settings)
    await log.start()
    try:
        await _until(lambda: _nice(log.pid) != _nice(os.getpid()), timeout=10)
        assert _nice(log.pid) == min(19, _nice(os.getpid()) + CHILD_NICE)
    finally:
        await log.close()


async def test_report_lines_it_cannot_read_are_skipped_not_fatal(make_settings):
    # A real process stands in for the child's output: an overlong line, a
    # count that is not a number, then a report that is applied.
    settings = make_settings(topics=True)
    log = _log(settings)
    lines = [
        '{"settled": 3, "failed": {"broker": "many"}}',
        '{"settled": 5, "failed": {"broker": 2}}',
    ]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        f"print('x' * 200_000); print({chr(10).join(lines)!r})",
        stdout=asyncio.subprocess.PIPE,
    )
    broker = _failures("broker")
    await asyncio.wait_for(log._read_reports(process), 10)
    await process.wait()
    assert log.settled == 5 and _failures("broker") == broker + 2
