"""Stored offsets that the broker's log no longer reaches.

The learner resumes each partition from the offset stored in Redis with its
state, and skips records below it as already applied. When the topic has been
recreated or truncated since (the local broker loses every topic when it
restarts; ``keyart up`` recreates them empty), that offset lies past the new
log's end, and every new record would sit below it and be skipped. So at
assignment keyart compares each stored offset with the partition's log end;
one past it is reset to the start of the new log, as Kafka's
``auto.offset.reset`` treats an out-of-range offset. The arm state stays: the
new log's records are new events.

The log end is the fetch high watermark. Finding it takes two steps:

1. ListOffsets "latest" through the learner's own consumer. It is never above
   the log end, so a stored offset at or below it is in range, which settles
   the usual case without another client;
2. for the rest, the high watermark of a fetch (:func:`keyart.lag.high_watermarks`):
   the local broker's ListOffsets answers inside the last record batch, and a
   learner that applied the whole batch stores an offset past that answer.
   Resetting such a partition would apply its records twice.

Examples
--------
>>> bootstrap = "127.0.0.1:9092"
>>> await stored_past_log_end(consumer, bootstrap, stored)  # doctest: +SKIP
{TP(topic='keyart.impressions', partition=3): 80}
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from keyart.lag import high_watermarks

__all__ = ["stored_past_log_end"]

PROBE_TIMEOUT_S = 10.0
"""How long the fetch high-watermark probe may take at an assignment."""


async def stored_past_log_end(
    consumer: Any,
    bootstrap: str,
    stored: Mapping[Any, int],
    timeout: float = PROBE_TIMEOUT_S,
) -> dict[Any, int]:
    """The partitions of ``stored`` whose offset is past the log end.

    Parameters
    ----------
    consumer
        The Faust consumer (its ``highwaters`` sends ListOffsets "latest").
    bootstrap
        Kafka bootstrap servers, for the fetch probe.
    stored
        Topic-partition to the next offset the learner would apply.
    timeout
        Seconds the fetch probe may take.

    Returns
    -------
    dict
        Topic-partition to its log end, for each stored offset beyond it.

    Raises
    ------
    keyart.lag.LagError
        When the broker does not answer the probe.
    """
    if not stored:
        return {}
    # Step 1
    listed = await consumer.highwaters(*stored)
    suspects = {
        tp: offset
        for tp, offset in stored.items()
        if listed.get(tp) is not None and offset > listed[tp]
    }
    if not suspects:
        return {}
    # Step 2
    keys = [(tp.topic, tp.partition) for tp in suspects]
    ends = await asyncio.to_thread(high_watermarks, bootstrap, keys, timeout)
    return {
        tp: ends[(tp.topic, tp.partition)]
        for tp, offset in suspects.items()
        if offset > ends[(tp.topic, tp.partition)]
    }
