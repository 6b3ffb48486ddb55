"""A running learner whose topics are recreated and refilled before it looks.

The offsets alone cannot show this one: the learner applies a first stream
and three posters, and runs on, caught up. Then, while its process is frozen
(SIGSTOP, shorter than the session timeout, so no rebalance follows), the
impression, click and posters topics are deleted and created again and a
third stream and four posters are produced, more records on every partition
than it held before: each new log already ends at or past the stored
offset when the learner next runs. Only the topic ids tell the new logs from
the old ones. The learner must reset every partition, say so, and count
each event of the new logs exactly once, those it applied from the old
offset on before it noticed included; ``keyart lag`` must be truthful.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest
import redis

from keyart.keys import Keys
from keyart.lag import measure_lag
from producers.events import EventProducer
from streams.resume import LOG_END_CHECK_S
from streams.state_keys import StreamKeys
from tests.streams.test_outage import all_time
from tests.streams.test_running_reset import (
    assert_lag_at,
    catalog_offsets,
    poll,
    resets,
    stored_offsets,
    summed,
)
from tests.streams.test_topic_reset import (
    SHIFT_MS,
    event_log_ends,
    learner_settings,
    metric,
    recreate_event_topics,
    second_stream,
)
from tests.streams.test_workers import arms_of, poster, wait_caught_up
from tests.streams.workers import WorkerProcess, event_stream

pytestmark = pytest.mark.slow

BOUND_S = 15.0
"""How long after the learner runs again the new events must be in Redis."""

SESSION_TIMEOUT_S = 30.0
"""Long enough that the frozen learner keeps its partitions."""

KINDS = ("impressions", "clicks", "posters")
ASSIGNED = "learner partitions assigned"
RECREATED = "was recreated (topic id"


def broker_ids(settings):
    from confluent_kafka import TopicCollection
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    names = [settings.topic(kind) for kind in KINDS]
    futures = admin.describe_topics(TopicCollection(names), request_timeout=10)
    return {name: str(future.result(10).topic_id) for name, future in futures.items()}


def stored_ids(client, settings):
    """``topic:partition`` to the topic id stored with its offsets."""
    keys = StreamKeys(settings.redis_prefix)
    out = {}
    for p in range(settings.topic_partitions):
        for field, value in client.hgetall(keys.learner(p)).items():
            if field.startswith(b"topic_id:"):
                out[f"{field[9:].decode()}:{p}"] = value.decode()
    # The key as the README names it (so this runs against older code too).
    catalog = f"{settings.redis_prefix}:catalog:topic_ids"
    for field, value in client.hgetall(catalog).items():
        out[field.decode()] = value.decode()
    return out


def impression_repeats(*streams):
    """Impressions whose id came before in the same stream (dedupe hits)."""
    repeats = 0
    for sends in streams:
        seen = set()
        for kind, record in sends:
            if kind == "impression":
                repeats += record["event_id"] in seen
                seen.add(record["event_id"])
    return repeats


@pytest.fixture(scope="module")
def refilled(make_settings, stack, tmp_path_factory):
    base, settings = learner_settings(make_settings, "ids")
    settings = settings.model_copy(
        update={"streams_session_timeout_s": SESSION_TIMEOUT_S}
    )
    logs = Path(tmp_path_factory.mktemp("topic-id-logs"))
    first_sends, first_expected = event_stream(seed=61, impressions=160, videos=6)
    # The first stream three times over, under new ids: on every partition
    # the new logs end at three times the stored offsets.
    thirds = [
        second_stream(seed=61, impressions=160, tag=f"new{i}", shift_ms=SHIFT_MS)
        for i in range(3)
    ]
    third_sends = [send for sends, _ in thirds for send in sends]
    client = redis.Redis.from_url(stack.redis_url)
    facts: dict[str, object] = {"settings": settings}
    worker = None
    try:
        # Step 1: a healthy learner, caught up.
        producer = EventProducer(base)
        for kind, record in first_sends:
            producer.send(kind, record)
        for name in ("q1", "q2", "q3"):
            producer.send("poster_published", poster(name, "v1"))
        producer.flush()
        worker = WorkerProcess(settings, logs / "learner.log")
        wait_caught_up(client, settings, event_log_ends(base))
        poll(
            lambda: catalog_offsets(client, settings),
            lambda c: 3 in c.values(),
            timeout=30,
        )
        time.sleep(3 * LOG_END_CHECK_S)
        facts["first_ids"] = broker_ids(base)
        facts["healthy_ids"] = stored_ids(client, settings)
        facts["healthy_resets"] = resets(settings)
        facts["healthy_arms"] = all_time(arms_of(client, settings.redis_prefix))
        facts["first_expected"] = summed(first_expected)
        facts["stored"] = stored_offsets(client, settings)
        facts["catalog"] = catalog_offsets(client, settings)
        facts["healthy_log"] = worker.text()

        # Step 2: recreate and refill while the learner cannot look.
        os.killpg(worker.process.pid, signal.SIGSTOP)
        frozen = time.monotonic()
        try:
            recreate_event_topics(base, KINDS)
            producer = EventProducer(base)
            for kind, record in third_sends:
                producer.send(kind, record)
            for name in ("q4", "q5", "q6", "q7"):
                producer.send("poster_published", poster(name, "v1"))
            producer.flush()
            facts["second_ends"] = event_log_ends(base)
        finally:
            os.killpg(worker.process.pid, signal.SIGCONT)
        facts["frozen_s"] = time.monotonic() - frozen
        facts["second_ids"] = broker_ids(base)

        # Step 3
        facts["expected"] = summed(first_expected, *(e for _, e in thirds))
        q7 = Keys(settings.redis_prefix).poster("q7")
        facts["seconds"], (facts["arms"], facts["poster_q7"]) = poll(
            lambda: (
                all_time(arms_of(client, settings.redis_prefix)),
                client.hgetall(q7),
            ),
            lambda seen: seen[0] == facts["expected"] and seen[1],
            timeout=3 * BOUND_S,
        )
        time.sleep(3 * LOG_END_CHECK_S)
        facts["arms_later"] = all_time(arms_of(client, settings.redis_prefix))
        facts["resets"] = resets(settings)
        facts["stored_later"] = stored_offsets(client, settings)
        facts["catalog_later"] = catalog_offsets(client, settings)
        facts["ids_later"] = stored_ids(client, settings)
        facts["dedupe_hits"] = metric(
            settings.metrics_port, "keyart_streams_dedupe_hits_total", kind="impression"
        )
        facts["repeats"] = impression_repeats(first_sends, *(s for s, _ in thirds))
        facts["lag"] = measure_lag(
            base.kafka_bootstrap, [settings.streams_app_id], [base.topic_prefix]
        )
        facts["log"] = worker.text()
        yield facts
    finally:
        if worker is not None:
            worker.stop()
        client.close()


def test_a_healthy_learner_stores_the_ids_and_resets_nothing(refilled):
    ids, stored = refilled["first_ids"], refilled["healthy_ids"]
    assert refilled["healthy_resets"] == dict.fromkeys(KINDS, 0)
    assert refilled["healthy_arms"] == refilled["first_expected"]
    assert RECREATED not in refilled["healthy_log"]
    assert "past the log end" not in refilled["healthy_log"]
    owned = [tp for tp, o in refilled["stored"].items() if o]
    owned += list(refilled["catalog"])
    assert owned
    for tp in owned:
        assert stored[tp] == ids[tp.rsplit(":", 1)[0]], (tp, stored, ids)


def test_the_new_logs_reach_the_stored_offsets_before_the_learner_looks(refilled):
    ends = refilled["second_ends"]
    stored = {tp: o for tp, o in refilled["stored"].items() if o}
    assert stored and all(ends[tp] >= offset for tp, offset in stored.items())
    assert refilled["frozen_s"] < SESSION_TIMEOUT_S / 2
    old, new = refilled["first_ids"], refilled["second_ids"]
    assert all(old[topic] != new[topic] for topic in old)


def test_each_event_of_the_new_logs_is_counted_once(refilled):
    log = refilled["log"]
    assert refilled["arms"] == refilled["expected"], log[-3000:]
    assert refilled["seconds"] < BOUND_S, (refilled["seconds"], log[-3000:])
    assert refilled["arms_later"] == refilled["expected"]
    assert refilled["poster_q7"][b"video_id"] == b"v1"
    assert log.count(ASSIGNED) == 1, log[-3000:]


def test_the_reset_is_logged_and_counted_once_per_partition(refilled):
    settings, log = refilled["settings"], refilled["log"]
    old, new = refilled["first_ids"], refilled["second_ids"]
    reset = [tp for tp, o in refilled["stored"].items() if o]
    reset += list(refilled["catalog"])
    for tp in reset:
        topic, partition = tp.rsplit(":", 1)
        line = (
            f"topic {topic} was recreated (topic id {old[topic]}, now {new[topic]}): "
            f"{topic}[{partition}] resumes from offset 0"
        )
        assert log.count(line) == 1, (line, log[-3000:])
    assert log.count(RECREATED) == len(reset)
    assert "past the log end" not in log
    for kind in KINDS:
        used = [tp for tp in reset if tp.startswith(settings.topic(kind) + ":")]
        assert refilled["resets"][kind] == len(used)


def test_the_stored_offsets_and_ids_are_the_new_logs(refilled):
    ends, ids = refilled["second_ends"], refilled["second_ids"]
    stored = {tp: o for tp, o in refilled["stored_later"].items() if o}
    assert stored == {tp: end for tp, end in ends.items() if end}
    assert list(refilled["catalog_later"].values()) == [4]
    for tp in [*stored, *refilled["catalog_later"]]:
        assert refilled["ids_later"][tp] == ids[tp.rsplit(":", 1)[0]]


def test_records_applied_before_the_reset_are_dropped_when_fetched_again(refilled):
    # Dedupe hits beyond the streams' own repeated ids are records of the new
    # logs applied from the old offsets on before the check found the new ids,
    # fetched again after the reset. On waking, the learner's fetch (its answer
    # already waiting in the socket) comes before the check's describe.
    again = refilled["dedupe_hits"] - refilled["repeats"]
    assert again > 0, refilled["log"][-3000:]
    assert refilled["arms_later"] == refilled["expected"]


def test_lag_sees_the_group_at_the_new_log_ends(refilled):
    assert_lag_at(refilled["lag"], refilled["settings"], refilled["second_ends"])


def test_the_log_names_old_and_new_ids(refilled):
    found = re.findall(r"topic id (\S+), now (\S+)\)", refilled["log"])
    assert found
    assert {old for old, _ in found} <= set(refilled["first_ids"].values())
    assert {new for _, new in found} <= set(refilled["second_ids"].values())
