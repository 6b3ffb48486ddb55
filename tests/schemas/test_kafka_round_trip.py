"""Every event kind travels through the real broker and comes back equal."""

from __future__ import annotations

from producers.events import EventProducer
from schemas.codec import SCHEMA_NAMES, get_codec
from tests.helpers import consume_raw
from tests.schemas.test_codec import SAMPLES


def test_every_schema_through_the_broker(settings) -> None:
    producer = EventProducer(settings)
    for name in SCHEMA_NAMES:
        producer.send(name, SAMPLES[name])
    producer.flush()
    codec = get_codec()
    for name in SCHEMA_NAMES:
        topic = producer.topic_for(name)
        (message,) = consume_raw(settings, topic, 1)
        record = codec.decode(name, message.value())
        assert record["event_id"] == SAMPLES[name]["event_id"]
        if "video_id" in SAMPLES[name]:
            assert message.key() == SAMPLES[name]["video_id"].encode()
