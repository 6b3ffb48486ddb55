"""A real ``keyart streams`` process after its topics were recreated empty.

What a restart of the local broker does (it loses every topic, ``keyart up``
recreates them): the learner applies a first stream and stops; the impression
and click topics are deleted and created again, so their offsets start at 0
while Redis still holds the old, larger ones; a second, shorter stream is
produced; a restarted learner must notice that its stored offsets are past
the new log ends, say so, and apply the second stream on top of the first
stream's arms instead of skipping it as already applied.
"""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path

import pytest
import redis

from keyart.keys import Keys
from keyart.lag import log_ends
from keyart.stack import create_topics, free_port
from producers.events import EventProducer
from schemas.codec import get_codec
from tests.helpers import consume_raw
from tests.streams.test_outage import all_time
from tests.streams.test_workers import arms_of, wait_caught_up
from tests.streams.workers import WorkerProcess, event_stream

pytestmark = pytest.mark.slow

SHIFT_MS = 3_600_000
"""The second stream happens an hour after the first (its own event times)."""


def second_stream(seed=42, impressions=150, tag="b", shift_ms=SHIFT_MS):
    """A shorter stream with its own ids (``tag-`` before each), ``shift_ms``
    after the first."""
    sends, expected = event_stream(seed=seed, impressions=impressions, videos=6)
    shifted = []
    for kind, record in sends:
        record = {**record, "event_id": f"{tag}-{record['event_id']}"}
        record["event_time"] += shift_ms
        if kind == "click":
            record["impression_id"] = f"{tag}-{record['impression_id']}"
        shifted.append((kind, record))
    return shifted, expected


def recreate_event_topics(settings, kinds=("impressions", "clicks")):
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    names = [settings.topic(kind) for kind in kinds]
    for future in admin.delete_topics(names, operation_timeout=10).values():
        future.result(timeout=15)
    deadline = time.monotonic() + 15
    while set(names) & set(admin.list_topics(timeout=10).topics):
        assert time.monotonic() < deadline, "topics not deleted"
        time.sleep(0.2)
    assert sorted(create_topics(settings)) == sorted(names)


def event_log_ends(settings):
    """``topic:partition`` to the fetch high watermark (the true log end; the
    local broker's ListOffsets falls short of it on batched partitions)."""
    names = (settings.topic("impressions"), settings.topic("clicks"))
    return {
        f"{topic}:{partition}": end
        for (topic, partition), end in log_ends(settings.kafka_bootstrap).items()
        if topic in names
    }


def metric(port, name, **labels):
    body = urllib.request.urlopen(  # noqa: S310 - http URL built here
        f"http://127.0.0.1:{port}/metrics", timeout=10
    ).read()
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    found = re.search(rf"^{name}\{{{wanted}\}} (\S+)$", body.decode(), re.M)
    return float(found.group(1)) if found else 0.0


def learner_settings(make_settings, name):
    """Topics of their own, and the settings of a learner whose group is
    ``name``d after them, with its metrics on a free port."""
    base = make_settings(
        topics=True,
        window_s=600.0,
        attribution_window_s=600.0,
        flush_interval_ms=200,
        streams_session_timeout_s=6.0,
        fm_sample_rate=0.2,
    )
    settings = base.model_copy(
        update={
            "streams_app_id": f"{base.topic_prefix}-{name}",
            "metrics_port": free_port(0),
        }
    )
    return base, settings


@pytest.fixture(scope="module")
def reset(make_settings, stack, tmp_path_factory):
    base, settings = learner_settings(make_settings, "reset")
    logs = Path(tmp_path_factory.mktemp("reset-logs"))
    first_sends, first_expected = event_stream(seed=41, impressions=900, videos=6)
    second_sends, second_expected = second_stream()
    client = redis.Redis.from_url(stack.redis_url)
    workers: list[WorkerProcess] = []
    facts: dict[str, object] = {"settings": settings}
    try:
        producer = EventProducer(base)
        for kind, record in first_sends:
            producer.send(kind, record)
        producer.flush()
        first_ends = event_log_ends(base)
        first = WorkerProcess(settings, logs / "first.log")
        workers.append(first)
        wait_caught_up(client, settings, first_ends)
        first.stop()
        offsets = client.hgetall(
            Keys(settings.redis_prefix).offsets(settings.streams_app_id)
        )
        facts["stored"] = {k.decode(): int(v) for k, v in offsets.items()}
        facts["arms_first"] = all_time(arms_of(client, settings.redis_prefix))

        recreate_event_topics(base)
        producer = EventProducer(base)
        for kind, record in second_sends:
            producer.send(kind, record)
        # A valid impression without a key: dead-lettered, never counted.
        first_impression = next(r for k, r in second_sends if k == "impression")
        keyless = {**first_impression, "event_id": "b-keyless"}
        facts["keyless"] = get_codec().encode("impression", keyless)
        producer.send_raw(base.topic("impressions"), facts["keyless"], None)
        producer.flush()
        facts["first_ends"], facts["second_ends"] = first_ends, event_log_ends(base)

        expected = {k: list(v) for k, v in first_expected.items() if v[0]}
        for arm, (n, c) in second_expected.items():
            counts = expected.setdefault(arm, [0, 0])
            counts[0] += n
            counts[1] += c
        facts["expected"] = {k: v for k, v in expected.items() if v[0]}

        second = WorkerProcess(settings, logs / "second.log")
        workers.append(second)
        second.wait_for_log("learner partitions assigned")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            arms = all_time(arms_of(client, settings.redis_prefix))
            if arms == facts["expected"]:
                break
            time.sleep(0.5)
        facts["arms_second"] = arms
        facts["resets"] = metric(
            settings.metrics_port,
            "keyart_streams_offset_resets_total",
            topic=base.topic("impressions"),
        )
        facts["second_log"] = second.text()
        facts["dead"] = consume_raw(base, base.topic("deadletter"), 1, timeout=20)
        yield facts
    finally:
        for worker in workers:
            worker.stop()
        client.close()


def test_the_new_logs_are_shorter_than_what_was_applied(reset):
    # The premise: every partition the learner had applied records of now
    # ends below its stored offset. (The keyless record may land on any.)
    first, second = reset["first_ends"], reset["second_ends"]
    used = [tp for tp, end in first.items() if end]
    assert used and all(second[tp] < first[tp] for tp in used)


def test_events_of_the_recreated_topics_are_applied_on_the_old_arms(reset):
    assert reset["arms_first"] != reset["expected"]
    assert reset["arms_second"] == reset["expected"], reset["second_log"][-3000:]


def test_the_reset_is_logged_and_counted(reset):
    settings = reset["settings"]
    log = reset["second_log"]
    topic = settings.topic("impressions")
    assert {tp: o for tp, o in reset["stored"].items() if o} == {
        tp: end for tp, end in reset["first_ends"].items() if end
    }
    applied = {
        tp: stored
        for tp, stored in reset["stored"].items()
        if stored and tp.startswith(f"{topic}:")
    }
    for tp, stored in applied.items():
        partition = int(tp.rsplit(":", 1)[1])
        end = reset["second_ends"][tp]
        assert (
            f"stored offset {stored} of {topic}[{partition}] is past the log end "
            f"{end}" in log
        ), log[-3000:]
    assert "ERROR" in log
    # A partition whose stored offset the new log already reached (the one
    # the keyless record went to, say) is reset by its topic id instead;
    # each partition is reset once, by one check or the other.
    by_id = re.findall(
        rf"topic {re.escape(topic)} was recreated \(topic id \S+, now \S+\): "
        rf"{re.escape(topic)}\[(\d+)\] resumes",
        log,
    )
    assert not {f"{topic}:{p}" for p in by_id} & set(applied), log[-3000:]
    assert len(by_id) == len(set(by_id)), log[-3000:]
    assert reset["resets"] == len(applied) + len(by_id), log[-3000:]


def test_a_record_without_a_key_is_dead_lettered(reset):
    [message] = reset["dead"]
    letter = get_codec().decode("dead_letter", message.value())
    assert letter["payload"] == reset["keyless"]
    assert letter["key"] is None
    assert "no key (events are keyed by their video id)" in letter["reason"]
