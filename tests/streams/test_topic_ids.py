"""Topic ids read from the session's broker."""

from __future__ import annotations

import logging

from confluent_kafka import Uuid

from streams.topic_ids import TopicIds, id_text
from tests.streams.test_topic_reset import recreate_event_topics


async def test_ids_are_new_after_a_topic_is_recreated(make_settings):
    settings = make_settings(topics=True)
    topics = [settings.topic(kind) for kind in ("impressions", "clicks")]
    ids = TopicIds(settings.kafka_bootstrap)
    before = await ids.current([*topics, settings.topic_prefix + ".nothing"])
    assert sorted(before) == sorted(topics)
    assert await ids.current(topics) == before
    recreate_event_topics(settings)
    after = await ids.current(topics)
    assert sorted(after) == sorted(topics)
    assert all(after[topic] != before[topic] for topic in topics)
    assert ids.supported


def test_a_broker_without_ids_is_told_apart():
    assert id_text(None) is None
    assert id_text(Uuid(0, 0)) is None
    assert id_text(Uuid(1, 2)) == "AAAAAAAAAAEAAAAAAAAAAg"


async def test_without_ids_nothing_is_asked(caplog):
    ids = TopicIds("127.0.0.1:1")
    ids.supported = False
    with caplog.at_level(logging.WARNING, logger="streams"):
        assert await ids.current(["a"]) == {}
    assert not caplog.records
