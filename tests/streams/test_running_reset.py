"""A ``keyart streams`` process that keeps running while its topics are recreated.

One learner runs through the whole module, on the session's broker:

1. it applies a first stream and three posters of one video, then keeps
   running, caught up, with a second stream applied live. Its stored offsets
   are then above what the local broker's ListOffsets answers (it falls
   short of the log end on batched partitions), yet it must reset nothing;
2. the impression, click and posters topics are deleted and created again
   under it, which brings no rebalance, and a third stream and a fourth
   poster are produced. Within :data:`BOUND_S` the learner must notice that
   the topics are new (by their ids, or because its offsets are past the new
   log ends), say so, and count the third stream on top of the arms, exactly
   once, without a new assignment (``test_recreated_topic_ids`` has new logs
   that reach the stored offsets first);
3. a few checks later nothing has moved: no second reset, nothing applied
   twice, and ``keyart lag`` sees the group at the new log ends.
"""

from __future__ import annotations

import re
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
from tests.streams.test_topic_reset import (
    SHIFT_MS,
    event_log_ends,
    learner_settings,
    metric,
    recreate_event_topics,
    second_stream,
)
from tests.streams.test_workers import arms_of, log_end, poster, wait_caught_up
from tests.streams.workers import WorkerProcess, event_stream

pytestmark = pytest.mark.slow

BOUND_S = 15.0
"""How long after the third stream and the fourth poster are produced they
must be in Redis: a check every LOG_END_CHECK_S, its confirming probe, a
flush, with room for a loaded machine."""

RESETS = "keyart_streams_offset_resets_total"
ASSIGNED = "learner partitions assigned"


def summed(*streams):
    """Add up the expected ``(video, poster) -> [impressions, clicks]`` counts."""
    out: dict = {}
    for expected in streams:
        for arm, (n, c) in expected.items():
            counts = out.setdefault(arm, [0, 0])
            counts[0] += n
            counts[1] += c
    return {arm: counts for arm, counts in out.items() if counts[0]}


def poll(read, done, timeout):
    """Seconds until ``done(read())`` (or ``timeout``), and the last value read."""
    started = time.monotonic()
    while True:
        value = read()
        if done(value) or time.monotonic() - started > timeout:
            return time.monotonic() - started, value
        time.sleep(0.2)


def resets(settings):
    port = settings.metrics_port
    kinds = ("impressions", "clicks", "posters")
    return {kind: metric(port, RESETS, topic=settings.topic(kind)) for kind in kinds}


def stored_offsets(client, settings):
    key = Keys(settings.redis_prefix).offsets(settings.streams_app_id)
    return {k.decode(): int(v) for k, v in client.hgetall(key).items()}


def catalog_offsets(client, settings):
    key = StreamKeys(settings.redis_prefix).catalog_offsets()
    return {k.decode(): int(v) for k, v in client.hgetall(key).items()}


@pytest.fixture(scope="module")
def running(make_settings, stack, tmp_path_factory):
    base, settings = learner_settings(make_settings, "live")
    logs = Path(tmp_path_factory.mktemp("running-reset-logs"))
    first_sends, first_expected = event_stream(seed=51, impressions=900, videos=6)
    live_sends, live_expected = second_stream(seed=52, tag="live", shift_ms=SHIFT_MS)
    third_sends, third_expected = second_stream(seed=53, shift_ms=2 * SHIFT_MS)
    client = redis.Redis.from_url(stack.redis_url)
    facts: dict[str, object] = {"settings": settings}
    worker = None
    try:
        # Step 1
        producer = EventProducer(base)
        for kind, record in first_sends:
            producer.send(kind, record)
        for name in ("q1", "q2", "q3"):  # one video: one posters partition
            producer.send("poster_published", poster(name, "v1"))
        producer.flush()
        worker = WorkerProcess(settings, logs / "learner.log")
        wait_caught_up(client, settings, event_log_ends(base))
        _, catalog = poll(
            lambda: catalog_offsets(client, settings),
            lambda c: 3 in c.values(),
            timeout=30,
        )
        assert list(catalog.values()) == [3], catalog
        for kind, record in live_sends:
            producer.send(kind, record)
        producer.flush()
        facts["first_ends"] = event_log_ends(base)
        facts["listed_ends"] = log_end(base)
        wait_caught_up(client, settings, facts["first_ends"])
        time.sleep(3 * LOG_END_CHECK_S)
        facts["healthy_resets"] = resets(settings)
        facts["healthy_arms"] = all_time(arms_of(client, settings.redis_prefix))
        facts["healthy_expected"] = summed(first_expected, live_expected)
        facts["stored"] = stored_offsets(client, settings)
        facts["catalog"] = catalog_offsets(client, settings)
        facts["healthy_log"] = worker.text()

        # Step 2
        recreate_event_topics(base, ("impressions", "clicks", "posters"))
        producer = EventProducer(base)
        for kind, record in third_sends:
            producer.send(kind, record)
        producer.send("poster_published", poster("q4", "v1"))
        producer.flush()
        facts["expected"] = summed(first_expected, live_expected, third_expected)
        q4 = Keys(settings.redis_prefix).poster("q4")
        facts["seconds"], (facts["arms"], facts["poster_q4"]) = poll(
            lambda: (
                all_time(arms_of(client, settings.redis_prefix)),
                client.hgetall(q4),
            ),
            lambda seen: seen[0] == facts["expected"] and seen[1],
            timeout=3 * BOUND_S,
        )
        facts["second_ends"] = event_log_ends(base)

        # Step 3
        time.sleep(3 * LOG_END_CHECK_S)
        facts["arms_later"] = all_time(arms_of(client, settings.redis_prefix))
        facts["resets"] = resets(settings)
        facts["stored_later"] = stored_offsets(client, settings)
        facts["catalog_later"] = catalog_offsets(client, settings)
        facts["lag"] = measure_lag(
            base.kafka_bootstrap, [settings.streams_app_id], [base.topic_prefix]
        )
        facts["log"] = worker.text()
        yield facts
    finally:
        if worker is not None:
            worker.stop()
        client.close()


def test_a_healthy_running_learner_resets_nothing(running):
    stored = {tp: offset for tp, offset in running["stored"].items() if offset}
    assert stored == {tp: end for tp, end in running["first_ends"].items() if end}
    # ListOffsets alone would have taken some of them for past the end.
    assert any(running["listed_ends"][tp] < offset for tp, offset in stored.items())
    assert running["healthy_resets"] == {"impressions": 0, "clicks": 0, "posters": 0}
    assert running["healthy_arms"] == running["healthy_expected"]
    assert "past the log end" not in running["healthy_log"]
    assert "was recreated" not in running["healthy_log"]


def test_the_new_logs_end_below_the_stored_offsets(running):
    stored, ends = running["stored"], running["second_ends"]
    assert stored and all(ends[tp] < offset for tp, offset in stored.items() if offset)
    [(partition, offset)] = running["catalog"].items()
    assert offset == 3


def test_events_of_recreated_topics_are_counted_within_the_bound(running):
    log = running["log"]
    assert running["arms"] == running["expected"], log[-3000:]
    assert running["seconds"] < BOUND_S, (running["seconds"], log[-3000:])
    assert running["poster_q4"][b"video_id"] == b"v1"
    # Found by the running learner, not at a new assignment.
    assert log.count(ASSIGNED) == 1, log[-3000:]


def logged_end(log, tp, stored):
    """The log end the reset of ``tp`` from ``stored`` names (None: no reset)."""
    topic, partition = tp.rsplit(":", 1)
    found = re.search(
        rf"stored offset {stored} of {re.escape(topic)}\[{partition}\] is past "
        r"the log end (\d+)",
        log,
    )
    return int(found.group(1)) if found else None


def logged_recreated(log, tp, stored):
    """Whether the reset of ``tp`` from ``stored`` was for a new topic id."""
    topic, partition = tp.rsplit(":", 1)
    return (
        re.search(
            rf"topic {re.escape(topic)} was recreated \(topic id \S+, now \S+\): "
            rf"{re.escape(topic)}\[{partition}\] resumes from offset 0 of the new "
            rf"log instead of the stored offset {stored} ",
            log,
        )
        is not None
    )


def resets_logged(log):
    return log.count("past the log end") + log.count("was recreated (topic id")


def test_the_reset_is_logged_and_counted_once(running):
    settings = running["settings"]
    log = running["log"]
    reset = {tp: o for tp, o in running["stored"].items() if o}
    # The topic ids show the new logs at the first check; the offsets would,
    # and a check may come while the new stream is still being produced.
    for tp, stored in reset.items():
        if logged_recreated(log, tp, stored):
            continue
        end = logged_end(log, tp, stored)
        assert end is not None and end <= running["second_ends"][tp], log[-3000:]
    [(posters_tp, stored)] = running["catalog"].items()
    assert logged_recreated(log, posters_tp, stored) or logged_end(
        log, posters_tp, stored
    ) in (0, 1), log[-3000:]
    assert resets_logged(log) == len(reset) + 1
    for kind in ("impressions", "clicks"):
        used = [tp for tp in reset if tp.startswith(settings.topic(kind) + ":")]
        assert running["resets"][kind] == len(used)
    assert running["resets"]["posters"] == 1


def test_nothing_moves_after_the_reset(running):
    assert running["arms_later"] == running["expected"]
    assert {tp: o for tp, o in running["stored_later"].items() if o} == {
        tp: end for tp, end in running["second_ends"].items() if end
    }
    assert list(running["catalog_later"].values()) == [1]


def assert_lag_at(lag, settings, ends):
    """``keyart lag`` sees the group of ``settings`` at the log ``ends``."""
    learner_topics = (settings.topic("impressions"), settings.topic("clicks"))
    rows = [row for row in lag if row.topic in learner_topics]
    assert rows
    assert not [row for row in rows if row.past_log_end or row.lag_messages]
    assert {f"{r.topic}:{r.partition}": r.committed for r in rows if r.committed} == {
        tp: end for tp, end in ends.items() if end
    }


def test_lag_sees_the_group_at_the_new_log_ends(running):
    assert_lag_at(running["lag"], running["settings"], running["second_ends"])
