"""Consumer lag per group, topic and partition, in messages and in seconds.

For each consumer group the broker knows (or the ones asked for):

1. the committed offsets come from the group coordinator (an OffsetFetch
   through confluent-kafka's admin client);
2. the log end of each partition is the high watermark of a Fetch response.
   ListOffsets "latest" is never taken as the log end: the local tansu broker
   answers the base offset of the last record batch plus one there, which
   under-reports the end by up to a batch when producers batch. It only says
   where a cheap fetch may start;
3. the lag in seconds is the age of the oldest unprocessed event: the time since
   the Kafka timestamp of the record at the committed offset. A partition that
   is caught up has lag 0 s.

A partition of a topic the group commits to, but for which it has no committed
offset yet, counts from the partition's first offset (what a consumer with
``auto.offset.reset=earliest`` would read).

A committed offset past the log end (the topic was recreated or truncated
after the group committed; the local broker loses every topic when it
restarts) is not shown as caught up: its row has ``past_log_end`` set and a
negative ``lag_messages`` (log end minus committed). A consumer resuming there
would skip every record until the log grows past it.

Examples
--------
>>> rows = measure_lag("127.0.0.1:9092", groups=["keyart-learner"])  # doctest: +SKIP
>>> rows[0].lag_messages  # doctest: +SKIP
0
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "LagCollector",
    "LagError",
    "PartitionLag",
    "check_caught_up",
    "committed_offsets",
    "high_watermarks",
    "log_ends",
    "measure_lag",
]

logger = logging.getLogger("keyart")

# librdkafka's "no offset" marker (OFFSET_INVALID).
_NO_OFFSET = -1001


class LagError(RuntimeError):
    """The broker could not be asked for lag; the message names the setting."""


@dataclass(frozen=True)
class PartitionLag:
    """The lag of one consumer group on one partition."""

    group: str
    topic: str
    partition: int
    committed: int | None
    """Next offset the group will read; None when it never committed here."""
    log_end: int
    """Offset the next produced record will get (the high watermark)."""
    lag_messages: int
    """Records after the committed offset; negative when ``past_log_end``."""
    lag_seconds: float | None
    """Age of the oldest unprocessed event; None when it could not be read."""
    past_log_end: bool = False
    """The committed offset is beyond the log end (the topic was recreated or
    truncated since the commit)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _admin(bootstrap: str) -> Any:
    from confluent_kafka.admin import AdminClient

    # Connection failures reach the caller as LagError naming the setting;
    # librdkafka's own log lines about them would only repeat it.
    config: dict[str, Any] = {"bootstrap.servers": bootstrap}
    config.update({"socket.timeout.ms": 5000, "log_level": 2})
    return AdminClient(config)


def committed_offsets(
    bootstrap: str,
    groups: Sequence[str] | None = None,
    timeout: float = 10.0,
    admin: Any = None,
) -> dict[str, dict[tuple[str, int], int | None]]:
    """Committed offsets per group, from the group coordinator.

    ``groups`` None means every group the broker lists.
    """
    from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException

    admin = admin or _admin(bootstrap)
    try:
        if groups is None:
            listed = admin.list_consumer_groups(request_timeout=timeout).result()
            groups = sorted(g.group_id for g in listed.valid)
        out: dict[str, dict[tuple[str, int], int | None]] = {}
        for group in groups:
            # confluent-kafka answers one group per request.
            request = [ConsumerGroupTopicPartitions(group)]
            futures = admin.list_consumer_group_offsets(
                request, request_timeout=timeout
            )
            answer = futures[group].result(timeout=timeout)
            out[group] = {
                (tp.topic, tp.partition): (tp.offset if tp.offset >= 0 else None)
                for tp in answer.topic_partitions or []
            }
    except KafkaException as error:
        raise LagError(
            f"cannot read consumer groups from the broker at {bootstrap} "
            f"(KEYART_KAFKA_BOOTSTRAP): {error}"
        ) from None
    return out


def _list_offsets(
    admin: Any, keys: Iterable[tuple[str, int]], latest: bool, timeout: float
) -> dict[tuple[str, int], int]:
    """ListOffsets "earliest" or "latest" for many partitions in one request.

    On the local tansu broker "latest" may fall inside the last record batch;
    callers only use it as a place to start a fetch, never as the log end.
    """
    from confluent_kafka import KafkaException, TopicPartition
    from confluent_kafka.admin import OffsetSpec

    spec = OffsetSpec.latest() if latest else OffsetSpec.earliest()
    request = {TopicPartition(t, p): spec for t, p in keys}
    if not request:
        return {}
    try:
        futures = admin.list_offsets(request, request_timeout=timeout)
        return {
            (tp.topic, tp.partition): max(0, future.result().offset)
            for tp, future in futures.items()
        }
    except KafkaException as error:
        raise LagError(
            f"ListOffsets failed (KEYART_KAFKA_BOOTSTRAP): {error}"
        ) from None


def _probe(
    bootstrap: str,
    starts: dict[tuple[str, int], int],
    timeout: float,
    want_first: bool = True,
) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], int]]:
    """Fetch once from each partition at its start offset.

    Returns the high watermark each partition's Fetch response carried and, with
    ``want_first``, the timestamp (ms) of the first record at or after each
    start. The probe assigns partitions at explicit offsets (a logical offset
    would cost librdkafka a ListOffsets round per partition): it joins no group
    and commits nothing.
    """
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "keyart-lag-probe-" + uuid.uuid4().hex[:8],
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            # A start below the log start (records deleted): read what is left.
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 100,
            "fetch.max.bytes": 1 << 20,
            "max.partition.fetch.bytes": 64 << 10,
            "log_level": 2,
        }
    )
    tps = {key: TopicPartition(key[0], key[1], s) for key, s in starts.items()}
    high_of: dict[tuple[str, int], int] = {}
    first_ms: dict[tuple[str, int], int] = {}
    try:
        consumer.assign(list(tps.values()))
        deadline = time.monotonic() + timeout
        waiting = set(tps)
        while waiting and time.monotonic() < deadline:
            message = consumer.poll(0.02)
            if message is not None and not message.error():
                key = (str(message.topic()), int(message.partition() or 0))
                if key not in first_ms:
                    kind, stamp = message.timestamp()
                    first_ms[key] = stamp if kind and stamp >= 0 else -1
                    consumer.pause([tps[key]])
            for key in list(waiting):
                _, high = consumer.get_watermark_offsets(tps[key], cached=True)
                if high < 0:
                    continue
                if not want_first or high <= starts[key] or key in first_ms:
                    # Read the watermark again: the fetch that brought the first
                    # record may be newer than the one seen before it.
                    high_of[key] = high
                    waiting.discard(key)
    finally:
        consumer.close()
    if len(high_of) < len(tps):
        missing = sorted(set(tps) - set(high_of))
        raise LagError(
            f"no fetch answer within {timeout:g} s from the broker at {bootstrap} "
            f"for {', '.join(f'{t}[{p}]' for t, p in missing[:5])}"
        )
    return high_of, first_ms


def measure_lag(
    bootstrap: str,
    groups: Sequence[str] | None = None,
    topic_prefixes: Sequence[str] = (),
    timeout: float = 10.0,
    now: float | None = None,
) -> list[PartitionLag]:
    """Measure the lag of ``groups`` (all groups when None), sorted.

    Parameters
    ----------
    bootstrap
        Kafka bootstrap servers.
    groups
        Consumer groups to report; None lists every group on the broker.
    topic_prefixes
        Keep only topics starting with one of these (all topics when empty).
    timeout
        Seconds each step may take before :class:`LagError`.
    now
        Wall-clock time (seconds) the ages are measured against; the current
        time when None.
    """
    from confluent_kafka import KafkaException

    admin = _admin(bootstrap)
    group_to_offsets = committed_offsets(bootstrap, groups, timeout, admin)
    try:
        topics = admin.list_topics(timeout=timeout).topics
    except KafkaException as error:
        raise LagError(
            f"cannot list topics on the broker at {bootstrap} "
            f"(KEYART_KAFKA_BOOTSTRAP): {error}"
        ) from None

    # Step 1: what each group has committed, widened to every partition of the
    # topics it commits to.
    wanted: dict[str, dict[tuple[str, int], int | None]] = {}
    for group, offsets in group_to_offsets.items():
        names = {
            t
            for t, _ in offsets
            if not topic_prefixes or t.startswith(tuple(topic_prefixes))
        }
        rows: dict[tuple[str, int], int | None] = {}
        for topic in names:
            partitions = topics[topic].partitions if topic in topics else {}
            for partition in sorted(
                set(partitions) | {p for t, p in offsets if t == topic}
            ):
                rows[(topic, partition)] = offsets.get((topic, partition))
        if rows:
            wanted[group] = rows

    # Steps 2 and 3: one probe per group, since groups may stand at different
    # offsets of the same partition; no commit yet means the partition's start.
    uncommitted = {k for rows in wanted.values() for k, c in rows.items() if c is None}
    first_offset = _list_offsets(admin, uncommitted, latest=False, timeout=timeout)
    stamp = time.time() if now is None else now
    out = []
    for group, committed_of in sorted(wanted.items()):
        starts = {
            key: first_offset[key] if committed is None else committed
            for key, committed in committed_of.items()
        }
        high_of, first_ms = _probe(bootstrap, starts, timeout)
        for (topic, partition), committed in sorted(committed_of.items()):
            high = high_of[(topic, partition)]
            past_end = committed is not None and committed > high
            seconds: float | None = 0.0
            if past_end:
                # Not caught up: what was produced since the reset is unread,
                # and how old it is cannot be told from here.
                lag, seconds = high - committed, None
            else:
                lag = max(0, high - starts[(topic, partition)])
            if lag > 0:
                ms = first_ms.get((topic, partition), -1)
                seconds = max(0.0, stamp - ms / 1000.0) if ms >= 0 else None
            out.append(
                PartitionLag(
                    group, topic, partition, committed, high, lag, seconds, past_end
                )
            )
    return out


def high_watermarks(
    bootstrap: str, keys: Iterable[tuple[str, int]], timeout: float = 10.0
) -> dict[tuple[str, int], int]:
    """The log end (fetch high watermark) of each ``(topic, partition)``.

    ListOffsets "latest" is at the log end or inside the last batch, so a
    fetch from there is cheap and its high watermark is the true end.

    Raises
    ------
    LagError
        When the broker does not answer within ``timeout`` seconds.
    """
    keys = list(keys)
    if not keys:
        return {}
    admin = _admin(bootstrap)
    near_end = _list_offsets(admin, keys, latest=True, timeout=timeout)
    high_of, _ = _probe(bootstrap, near_end, timeout, want_first=False)
    return dict(sorted(high_of.items()))


def log_ends(
    bootstrap: str, topic_prefixes: Sequence[str] = (), timeout: float = 10.0
) -> dict[tuple[str, int], int]:
    """The log end (fetch high watermark) of every partition of the topics that
    start with one of ``topic_prefixes`` (every topic but the broker's internal
    ones when empty)."""
    from confluent_kafka import KafkaException

    admin = _admin(bootstrap)
    try:
        topics = admin.list_topics(timeout=timeout).topics
    except KafkaException as error:
        raise LagError(
            f"cannot list topics on the broker at {bootstrap} "
            f"(KEYART_KAFKA_BOOTSTRAP): {error}"
        ) from None
    keys = [
        (name, partition)
        for name, meta in topics.items()
        if not name.startswith("__")
        and (not topic_prefixes or name.startswith(tuple(topic_prefixes)))
        for partition in meta.partitions
    ]
    return high_watermarks(bootstrap, keys, timeout)


def check_caught_up(
    bootstrap: str, group: str, bound_s: float, topic_prefixes: Sequence[str] = ()
) -> Any:
    """A readiness check (see :mod:`keyart.health`): ``group`` lags at most
    ``bound_s`` seconds on every partition."""

    def caught_up() -> tuple[bool, str]:
        rows = measure_lag(bootstrap, [group], topic_prefixes, timeout=1.5)
        if not rows:
            return True, f"group {group} has committed nothing yet"
        past = [r for r in rows if r.past_log_end]
        if past:
            where = ", ".join(f"{r.topic}[{r.partition}]" for r in past[:5])
            return False, (
                f"group {group}: committed offset past the log end at {where} "
                "(topic recreated or truncated)"
            )
        worst = max(rows, key=lambda r: r.lag_seconds or 0.0)
        seconds = worst.lag_seconds or 0.0
        where = f"{worst.topic}[{worst.partition}]"
        ok = seconds <= bound_s
        return ok, f"group {group}: worst lag {seconds:.1f} s at {where}"

    return caught_up


class LagCollector:
    """A Prometheus collector that measures lag on every scrape.

    Gauges, each labelled ``group``, ``topic``, ``partition``:
    ``keyart_consumer_lag_messages``, ``keyart_consumer_lag_seconds``,
    ``keyart_consumer_committed_offset``, ``keyart_consumer_log_end_offset``;
    ``keyart_consumer_offset_past_log_end`` (1 when the committed offset is
    beyond the log end; ``lag_messages`` is then negative);
    ``keyart_topic_log_end_offset`` (``topic``, ``partition``) for every topic
    the prefixes select, consumed or not (the dead-letter topic); and
    ``keyart_lag_up`` (1 when the last measurement worked).
    """

    def __init__(
        self,
        bootstrap: str,
        groups: Sequence[str] | None = None,
        topic_prefixes: Sequence[str] = (),
        timeout: float = 10.0,
    ) -> None:
        self.bootstrap = bootstrap
        self.groups = groups
        self.topic_prefixes = tuple(topic_prefixes)
        self.timeout = timeout

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        labels = ["group", "topic", "partition"]
        families = {
            "lag_messages": GaugeMetricFamily(
                "keyart_consumer_lag_messages",
                "Records after the group's committed offset.",
                labels=labels,
            ),
            "lag_seconds": GaugeMetricFamily(
                "keyart_consumer_lag_seconds",
                "Age of the oldest record the group has not processed.",
                labels=labels,
            ),
            "committed": GaugeMetricFamily(
                "keyart_consumer_committed_offset",
                "Next offset the group will read (its committed offset).",
                labels=labels,
            ),
            "log_end": GaugeMetricFamily(
                "keyart_consumer_log_end_offset",
                "Offset the next record on the partition will get.",
                labels=labels,
            ),
            "past_log_end": GaugeMetricFamily(
                "keyart_consumer_offset_past_log_end",
                "1 when the committed offset is beyond the log end (topic "
                "recreated or truncated).",
                labels=labels,
            ),
        }
        up = GaugeMetricFamily(
            "keyart_lag_up", "1 when the last lag measurement reached the broker."
        )
        topic_end = GaugeMetricFamily(
            "keyart_topic_log_end_offset",
            "Offset the next record on the partition will get, for every topic "
            "(dead letters, ingest rate).",
            labels=["topic", "partition"],
        )
        try:
            rows: Iterable[PartitionLag] = measure_lag(
                self.bootstrap, self.groups, self.topic_prefixes, self.timeout
            )
            ends = log_ends(self.bootstrap, self.topic_prefixes, self.timeout)
            up.add_metric([], 1.0)
        except LagError as error:
            logger.warning("lag measurement failed: %s", error)
            rows, ends = [], {}
            up.add_metric([], 0.0)
        for (topic, partition), end in ends.items():
            topic_end.add_metric([topic, str(partition)], end)
        for row in rows:
            values = [row.group, row.topic, str(row.partition)]
            families["lag_messages"].add_metric(values, row.lag_messages)
            families["log_end"].add_metric(values, row.log_end)
            families["past_log_end"].add_metric(values, float(row.past_log_end))
            if row.committed is not None:
                families["committed"].add_metric(values, row.committed)
            if row.lag_seconds is not None:
                families["lag_seconds"].add_metric(values, row.lag_seconds)
        yield from families.values()
        yield topic_end
        yield up
