"""Topic ids: how the learner tells a recreated topic from the one it read.

The broker gives each topic an id (a UUID) when it creates it, and a new one
when the topic is deleted and created again under the same name. Offsets
alone cannot tell the two logs apart once the new one has grown past the
offset the learner stored, so the learner stores, with each partition's
offsets, the id of the topic those offsets belong to, and compares it with
the broker's (:mod:`streams.resume`).

aiokafka 0.14 does not expose topic ids, so they come from confluent-kafka's
admin client (DescribeTopics), one request for all of the learner's topics,
in a thread and bounded by a timeout, so the event loop never waits on it. A
broker that answers without ids (all zeros) gets one warning, and the
learner falls back to comparing offsets with the log ends.

Examples
--------
>>> from confluent_kafka import Uuid
>>> id_text(Uuid(0, 0)) is None
True
>>> id_text(Uuid(1, 2))
'AAAAAAAAAAEAAAAAAAAAAg'
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

__all__ = ["DESCRIBE_TIMEOUT_S", "TopicIds", "id_text"]

logger = logging.getLogger("streams")

DESCRIBE_TIMEOUT_S = 5.0
"""How long one DescribeTopics request for the learner's topics may take."""


def id_text(topic_id: Any) -> str | None:
    """The id as text; None when the broker gave none (missing, or all zeros)."""
    if topic_id is None:
        return None
    bits = topic_id.get_most_significant_bits(), topic_id.get_least_significant_bits()
    if bits == (0, 0):
        return None
    return str(topic_id)


class TopicIds:
    """The broker's current ids of a few topics.

    Parameters
    ----------
    bootstrap
        Kafka bootstrap servers (``KEYART_KAFKA_BOOTSTRAP``).
    timeout
        Seconds one describe may take.

    Attributes
    ----------
    supported
        False once the broker answered without ids: callers then rely on the
        offset check alone.
    """

    def __init__(self, bootstrap: str, timeout: float = DESCRIBE_TIMEOUT_S) -> None:
        self.bootstrap = bootstrap
        self.timeout = timeout
        self.supported = True
        self._admin: Any = None

    async def current(self, topics: Sequence[str]) -> dict[str, str]:
        """Topic to its current id, for each of ``topics`` that has one.

        A topic the broker does not know (deleted, not created again yet) is
        left out. Empty when the broker gives no ids at all.

        Raises
        ------
        TimeoutError
            When the broker does not answer within the timeout.
        confluent_kafka.KafkaException
            When the request fails as a whole.
        """
        if not self.supported or not topics:
            return {}
        async with asyncio.timeout(self.timeout + 1.0):
            described = await asyncio.to_thread(self._describe, sorted(set(topics)))
        topic_to_id = {}
        for topic, raw in described.items():
            text = id_text(raw)
            if text is not None:
                topic_to_id[topic] = text
        if described and not topic_to_id:
            self.supported = False
            logger.warning(
                "the broker at %s (KEYART_KAFKA_BOOTSTRAP) returns no topic ids; "
                "a recreated topic is found only when its log ends before the "
                "stored offset",
                self.bootstrap,
            )
        return topic_to_id

    def _describe(self, topics: list[str]) -> dict[str, Any]:
        from confluent_kafka import KafkaError, KafkaException, TopicCollection
        from confluent_kafka.admin import AdminClient

        if self._admin is None:
            # librdkafka's own log lines about a broker away would only repeat
            # the caller's warning.
            self._admin = AdminClient(
                {"bootstrap.servers": self.bootstrap, "log_level": 2}
            )
        futures = self._admin.describe_topics(
            TopicCollection(topics), request_timeout=self.timeout
        )
        out = {}
        for topic, future in futures.items():
            try:
                out[topic] = future.result(timeout=self.timeout).topic_id
            except KafkaException as error:
                code = error.args[0].code() if error.args else None
                if code != KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise
        return out
