"""`keyart lag` against the real broker, checked by an independent client.

The figures of `keyart lag` (confluent-kafka: OffsetFetch through the admin
client, watermarks of its own fetches) are compared with aiokafka's: the group
coordinator's committed offsets and the high watermark of a fetch response.
Partition 0 holds single-record batches and partitions 1 and 3 batched ones, on
which the broker's ListOffsets under-reports the log end. A third group has
committed past the log end, as a group does once its topic is recreated.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from keyart.cli import app
from keyart.lag import check_caught_up, measure_lag

NOW_MS = int(time.time() * 1000)
SINGLE, BATCHED, STAMPED = 5, 50, 30
# Partition 3's records carry known timestamps: record i is (100 - i) s old.
STAMPS_MS = [NOW_MS - (100 - i) * 1000 for i in range(STAMPED)]
COMMITS = {0: 2, 1: 10, 3: 12}  # group A; partition 2 stays empty
PAST_END = 1000  # group C's commit on partition 0, far past its SINGLE records


class World:
    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.topic = settings.topic("impressions")
        self.group_a = "lag-a-" + uuid.uuid4().hex[:6]
        self.group_b = "lag-b-" + uuid.uuid4().hex[:6]
        self.group_c = "lag-c-" + uuid.uuid4().hex[:6]


def _commit(bootstrap: str, group: str, topic: str, offsets: dict[int, int]) -> None:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    try:
        tps = [TopicPartition(topic, p, o) for p, o in offsets.items()]
        consumer.commit(offsets=tps, asynchronous=False)
    finally:
        consumer.close()


@pytest.fixture(scope="module")
def world(make_settings) -> World:
    w = World(make_settings(topics=True))
    bootstrap = w.settings.kafka_bootstrap
    single = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    for i in range(SINGLE):
        single.produce(w.topic, b"s%d" % i, key=b"v", partition=0)
        single.flush(10)
    batched = Producer({"bootstrap.servers": bootstrap, "linger.ms": 200})
    for i in range(BATCHED):
        batched.produce(w.topic, b"b%d" % i, key=b"v", partition=1)
    for i, stamp in enumerate(STAMPS_MS):
        batched.produce(w.topic, b"t%d" % i, key=b"v", partition=3, timestamp=stamp)
    assert batched.flush(10) == 0
    _commit(bootstrap, w.group_a, w.topic, COMMITS)
    _commit(bootstrap, w.group_b, w.topic, {0: SINGLE, 1: BATCHED, 3: STAMPED})
    _commit(bootstrap, w.group_c, w.topic, {0: PAST_END, 1: BATCHED})
    return w


async def _independent(bootstrap: str, group: str, topic: str) -> dict:
    """Committed offsets from the coordinator and log ends from fetch responses."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition as TP

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [TP(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        committed = {tp.partition: await consumer.committed(tp) for tp in tps}
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, committed[tp.partition] or 0)
        first: dict[int, int] = {}
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for tp, records in batch.items():
                first.setdefault(tp.partition, records[0].timestamp)
                consumer.pause(tp)
            if all(consumer.highwater(tp) is not None for tp in tps):
                if all(
                    tp.partition in first
                    or consumer.highwater(tp) <= (committed[tp.partition] or 0)
                    for tp in tps
                ):
                    break
        return {
            tp.partition: {
                "committed": committed[tp.partition],
                "log_end": consumer.highwater(tp),
                "first_ms": first.get(tp.partition),
            }
            for tp in tps
        }
    finally:
        await consumer.stop()


def run_cli(world: World, *args: str) -> Any:
    env = {
        "KEYART_KAFKA_BOOTSTRAP": world.settings.kafka_bootstrap,
        "KEYART_STATE_DIR": str(world.settings.state_dir),
    }
    result = CliRunner().invoke(app, ["lag", *args], env=env)
    assert result.exit_code == 0, result.output
    return result


def test_lag_json_equals_an_independent_computation(world: World) -> None:
    result = run_cli(world, "-g", world.group_a, "-g", world.group_b, "--json")
    report = json.loads(result.stdout)
    rows = {(r["group"], r["partition"]): r for r in report["partitions"]}
    partitions = world.settings.topic_partitions
    assert {r["topic"] for r in report["partitions"]} == {world.topic}
    assert len(rows) == 2 * partitions

    for group in (world.group_a, world.group_b):
        truth = asyncio.run(
            _independent(world.settings.kafka_bootstrap, group, world.topic)
        )
        for partition, expected in truth.items():
            row = rows[(group, partition)]
            assert row["committed"] == expected["committed"], (group, partition)
            assert row["log_end"] == expected["log_end"], (group, partition)
            start = expected["committed"] or 0
            assert row["lag_messages"] == expected["log_end"] - start
            if row["lag_messages"]:
                # Age of the oldest unprocessed event, at the reported time.
                age = report["measured_at"] - expected["first_ms"] / 1000
                assert row["lag_seconds"] == pytest.approx(age, abs=2e-3)
            else:
                assert row["lag_seconds"] == 0.0

    # The figures also equal what was produced and committed.
    a = world.group_a
    assert [rows[(a, p)]["log_end"] for p in range(4)] == [SINGLE, BATCHED, 0, STAMPED]
    assert [rows[(a, p)]["lag_messages"] for p in range(4)] == [3, 40, 0, 18]
    assert rows[(a, 2)]["committed"] is None
    oldest = report["measured_at"] - STAMPS_MS[COMMITS[3]] / 1000
    assert rows[(a, 3)]["lag_seconds"] == pytest.approx(oldest, abs=2e-3)
    assert all(rows[(world.group_b, p)]["lag_messages"] == 0 for p in range(partitions))


def test_list_offsets_would_under_report_the_batched_partition(world: World) -> None:
    """Why lag reads fetch watermarks: ListOffsets falls short on batches."""
    consumer = Consumer(
        {"bootstrap.servers": world.settings.kafka_bootstrap, "group.id": "probe"}
    )
    try:
        _, listed_end = consumer.get_watermark_offsets(
            TopicPartition(world.topic, 1), timeout=10
        )
    finally:
        consumer.close()
    measured = {
        r.partition: r.log_end
        for r in measure_lag(world.settings.kafka_bootstrap, [world.group_a])
    }
    assert measured[1] == BATCHED
    assert listed_end <= BATCHED  # equal on a broker without the deviation


def test_table_and_topic_filter(world: World) -> None:
    table = run_cli(world, "-g", world.group_a).stdout
    assert world.group_a in table
    assert re.search(rf"{world.topic}\s*│\s*1\s*│\s*10\s*│\s*50\s*│\s*40", table)
    empty = run_cli(world, "-g", world.group_a, "-t", "nothing.", "--json").stdout
    assert json.loads(empty)["partitions"] == []


def test_unreachable_broker_names_the_setting(world: World) -> None:
    from keyart.stack import free_port

    env = {
        "KEYART_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port(0)}",
        "KEYART_STATE_DIR": str(world.settings.state_dir),
    }
    result = CliRunner().invoke(app, ["lag", "--timeout", "1"], env=env)
    assert result.exit_code == 1
    assert "KEYART_KAFKA_BOOTSTRAP" in result.output


def test_caught_up_check(world: World) -> None:
    bootstrap = world.settings.kafka_bootstrap
    ok, detail = check_caught_up(bootstrap, world.group_b, bound_s=5)()
    assert ok, detail
    ok, detail = check_caught_up(bootstrap, world.group_a, bound_s=60)()
    assert not ok
    assert f"{world.topic}[3]" in detail


def test_a_commit_past_the_log_end_is_flagged_not_shown_as_caught_up(
    world: World,
) -> None:
    report = json.loads(run_cli(world, "-g", world.group_c, "--json").stdout)
    rows = {r["partition"]: r for r in report["partitions"]}
    past = rows[0]
    assert past["committed"] == PAST_END and past["log_end"] == SINGLE
    assert past["past_log_end"] is True
    assert past["lag_messages"] == SINGLE - PAST_END
    assert past["lag_seconds"] is None
    assert rows[1]["past_log_end"] is False and rows[1]["lag_messages"] == 0

    table = run_cli(world, "-g", world.group_c).stdout
    assert re.search(rf"{world.topic}\s*│\s*0\s*│\s*{PAST_END}\s*│\s*{SINGLE}", table)
    assert f"{SINGLE - PAST_END} (past end)" in table
    assert "recreated or truncated" in " ".join(table.split())

    ok, detail = check_caught_up(world.settings.kafka_bootstrap, world.group_c, 60)()
    assert not ok
    assert f"{world.topic}[0]" in detail and "past the log end" in detail


@pytest.fixture
def exporter(world: World) -> Iterator[tuple[subprocess.Popen[str], str]]:
    env = {
        **os.environ,
        "KEYART_KAFKA_BOOTSTRAP": world.settings.kafka_bootstrap,
        "KEYART_STATE_DIR": str(world.settings.state_dir),
        "KEYART_METRICS_PORT": "0",
    }
    argv = [sys.executable, "-m", "keyart.cli", "lag", "--serve", "-g", world.group_a]
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline() if process.stdout else ""
        found = re.search(r"(http://\S+)/metrics", line)
        assert found, f"exporter said {line!r}"
        yield process, found.group(1)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)


def test_exporter_serves_the_same_figures(world: World, exporter) -> None:
    process, url = exporter
    body = urllib.request.urlopen(url + "/metrics", timeout=30).read().decode()  # noqa: S310
    samples = {
        (s.name, s.labels.get("partition")): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
        if s.labels.get("group") == world.group_a or s.name == "keyart_lag_up"
    }
    assert samples[("keyart_lag_up", None)] == 1.0
    assert samples[("keyart_consumer_log_end_offset", "1")] == BATCHED
    assert samples[("keyart_consumer_committed_offset", "1")] == COMMITS[1]
    assert samples[("keyart_consumer_lag_messages", "3")] == STAMPED - COMMITS[3]
    assert samples[("keyart_consumer_lag_seconds", "3")] > 100 - COMMITS[3]
    assert ("keyart_consumer_committed_offset", "2") not in samples
    ends = {
        s.labels["partition"]: s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
        if s.name == "keyart_topic_log_end_offset"
        and s.labels["topic"] == world.settings.topic("impressions")
    }
    assert [ends[str(p)] for p in range(4)] == [SINGLE, BATCHED, 0, STAMPED]
    deadletter = world.settings.topic("deadletter")
    assert any(f'topic="{deadletter}"' in line for line in body.splitlines())
    ready = urllib.request.urlopen(url + "/readyz", timeout=10)  # noqa: S310
    assert json.loads(ready.read())["checks"]["broker"]["ok"] is True
    process.send_signal(signal.SIGTERM)
    assert process.wait(10) == 0


def test_watch_json_prints_one_object_per_refresh(world: World) -> None:
    env = {
        **os.environ,
        "KEYART_KAFKA_BOOTSTRAP": world.settings.kafka_bootstrap,
        "KEYART_STATE_DIR": str(world.settings.state_dir),
    }
    argv = [sys.executable, "-m", "keyart.cli", "lag", "-g", world.group_b]
    argv += ["--json", "--watch", "0.3"]
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        lines = [json.loads(process.stdout.readline()) for _ in range(2)]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)
    assert lines[1]["measured_at"] > lines[0]["measured_at"]
    assert all(len(line["partitions"]) == 8 for line in lines)


def test_watch_piped_prints_a_table_per_refresh(world: World) -> None:
    env = {
        **os.environ,
        "KEYART_KAFKA_BOOTSTRAP": world.settings.kafka_bootstrap,
        "KEYART_STATE_DIR": str(world.settings.state_dir),
    }
    argv = [sys.executable, "-m", "keyart.cli", "lag", "-g", world.group_b]
    argv += ["--watch", "0.3"]
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while sum("Ctrl-C stops" in line for line in seen) < 2:
            seen.append(lines.get(timeout=max(0.1, deadline - time.monotonic())))
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    text = "".join(seen)
    assert text.count(f"consumer lag at {world.settings.kafka_bootstrap}") == 2
    assert text.count(world.group_b) >= 2 * 8  # every partition, each time
    assert "\x1b[" not in text  # plain lines: no cursor movement or colour
