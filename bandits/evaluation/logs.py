"""Logged decisions, impressions and clicks as DataFrames, from Kafka or files.

keyart's own logs are the Avro events on the decisions, impressions and clicks
topics. :func:`read_topic` reads one topic from its first offset up to the end
it had when the read began, by direct assignment of every partition (no
consumer-group join, nothing committed). The end of a partition is the high
watermark of the broker's fetch responses: some brokers answer ListOffsets
with the start of the last record batch, which would miss up to a batch.

:func:`join_clicks` credits each click to its impression within the
attribution window (duplicated event ids count once), giving one row per
impression with a 0/1 ``clicked``. :func:`load_obd` turns the Open Bandit
Dataset sample into the same shape.

Examples
--------
>>> import pandas as pd
>>> imps = pd.DataFrame({"event_id": ["i1", "i1", "i2"], "event_time": [0, 0, 0]})
>>> clicks = pd.DataFrame({"event_id": ["c1", "c1"], "impression_id": ["i1", "i1"],
...                        "event_time": [1000, 1000]})
>>> join_clicks(imps, clicks, attribution_window_s=60)["clicked"].tolist()
[1, 0]
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from keyart.settings import Settings, shown_url

__all__ = [
    "EventLogs",
    "LogReadError",
    "join_clicks",
    "load_kafka_logs",
    "configured_split",
    "load_obd",
    "read_topic",
    "time_filter",
]

logger = logging.getLogger("bandits")

KIND_TO_SHORT_TOPIC = {
    "decision": "decisions",
    "impression": "impressions",
    "click": "clicks",
}
IMPRESSION_COLUMNS = [
    "event_id",
    "event_time",
    "user_id",
    "video_id",
    "poster_id",
    "placement",
    "variant",
    "policy",
    "propensity",
    "decision_id",
    "segment",
]


class LogReadError(RuntimeError):
    """A topic could not be read to its end; the message names the topic."""


@dataclass
class EventLogs:
    """Decoded logs: one DataFrame per event kind, and what could not be read.

    ``impressions`` carries ``clicked`` (0/1) and ``click_time`` once clicks
    are joined; ``undecodable`` counts records per kind that were not valid
    events (they are left out and reported, never silently dropped).
    """

    decisions: pd.DataFrame
    impressions: pd.DataFrame
    clicks: pd.DataFrame
    undecodable: dict[str, int] = field(default_factory=dict)
    source: str = "kafka"


def read_topic(
    settings: Settings,
    kind: str,
    timeout: float = 60.0,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """Decode every record of the topic of ``kind`` present when the call began.

    Returns the decoded records and the number of records that could not be
    decoded (each is logged at WARNING with its partition and offset).

    Raises
    ------
    LogReadError
        When the topic does not exist or its end is not reached in ``timeout``
        seconds (``KEYART_KAFKA_BOOTSTRAP`` names the broker).
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    from schemas.codec import DecodeError, get_codec

    topic = settings.topic(KIND_TO_SHORT_TOPIC[kind])
    codec = get_codec()
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": "keyart-report-" + uuid.uuid4().hex[:8],
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        found = metadata.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            raise LogReadError(
                f"topic {topic!r} not found at KEYART_KAFKA_BOOTSTRAP="
                f"{settings.kafka_bootstrap} (KEYART_TOPIC_PREFIX="
                f"{settings.topic_prefix!r})"
            )
        partitions = sorted(found.partitions)
        consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions]
        )
        # Step: the end of each partition is the fetch high watermark seen first.
        end: dict[int, int] = {}
        done: set[int] = set()
        records: list[dict[str, Any]] = []
        bad = 0
        deadline = time.monotonic() + timeout
        while len(done) < len(partitions):
            if time.monotonic() > deadline:
                raise LogReadError(
                    f"topic {topic!r}: {len(partitions) - len(done)} partitions not"
                    f" read to their end within {timeout:.0f} s"
                )
            message = consumer.poll(0.5)
            if message is None:
                continue
            partition = int(message.partition() or 0)
            offset = int(message.offset() or 0)
            if partition in done:
                continue
            if partition not in end:
                _, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), cached=True
                )
                end[partition] = high if high >= 0 else offset + 1
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    done.add(partition)
                    continue
                raise LogReadError(f"topic {topic!r}: {error}")
            if offset >= end[partition]:
                done.add(partition)
                continue
            try:
                records.append(codec.decode(kind, message.value() or b""))
            except DecodeError as decode_error:
                bad += 1
                logger.warning(
                    "undecodable %s record at %s[%s]@%s: %s",
                    kind,
                    topic,
                    partition,
                    offset,
                    decode_error,
                    extra={"topic": topic, "offset": offset},
                )
            if offset + 1 >= end[partition]:
                done.add(partition)
            if on_progress is not None:
                on_progress(1)
    finally:
        consumer.close()
    logger.info("read %s %s records from %s", len(records), kind, topic)
    return records, bad


def configured_split(settings: Settings) -> dict[str, float] | None:
    """The experiment's variant weights as stored in Redis, or ``None``.

    Reads the gateway's versioned experiments document
    (``{KEYART_REDIS_PREFIX}:config:experiments``); ``None`` when none is
    stored, in which case the gateway serves its built-in default split.
    """
    import json

    import redis

    from keyart.keys import Keys

    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5)
    try:
        raw = client.hget(Keys(settings.redis_prefix).config("experiments"), "data")
    except redis.RedisError as error:
        raise LogReadError(
            f"cannot read the experiment split at KEYART_REDIS_URL="
            f"{shown_url(settings.redis_url)}: {error}"
        ) from None
    finally:
        client.close()
    if raw is None:
        return None
    document = json.loads(raw)
    return {str(v["name"]): float(v["weight"]) for v in document.get("variants", [])}


def time_filter(
    frame: pd.DataFrame, since_ms: int | None = None, until_ms: int | None = None
) -> pd.DataFrame:
    """Rows with ``since_ms <= event_time < until_ms`` (either end may be open)."""
    mask = np.ones(len(frame), dtype=bool)
    if since_ms is not None:
        mask &= frame["event_time"].to_numpy() >= since_ms
    if until_ms is not None:
        mask &= frame["event_time"].to_numpy() < until_ms
    return frame.loc[mask].reset_index(drop=True)


def join_clicks(
    impressions: pd.DataFrame,
    clicks: pd.DataFrame,
    attribution_window_s: float,
) -> pd.DataFrame:
    """One row per distinct impression, with ``clicked`` and ``click_time``.

    Repeated impression or click event ids count once. A click counts when it
    names the impression and arrives within ``attribution_window_s`` after it
    (clock skew up to the window before it is tolerated too); further clicks
    on the same impression do not add to ``clicked``.
    """
    imps = impressions.drop_duplicates("event_id", keep="first").reset_index(drop=True)
    if len(clicks):
        unique = clicks.drop_duplicates("event_id", keep="first")
        joined = unique.merge(
            imps[["event_id", "event_time"]].rename(
                columns={"event_id": "impression_id", "event_time": "shown_at"}
            ),
            on="impression_id",
            how="inner",
        )
        lag = joined["event_time"] - joined["shown_at"]
        window_ms = attribution_window_s * 1000.0
        credited = joined.loc[lag.abs() <= window_ms]
        first = credited.groupby("impression_id")["event_time"].min()
    else:
        first = pd.Series(dtype="int64")
    imps["click_time"] = imps["event_id"].map(first)
    imps["clicked"] = imps["click_time"].notna().astype(int)
    return imps


def _frame(records: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    if not records:
        return pd.DataFrame(columns=columns)
    return pd.DataFrame.from_records(records)


def load_kafka_logs(
    settings: Settings,
    since_ms: int | None = None,
    until_ms: int | None = None,
    timeout: float = 60.0,
    on_progress: Callable[[int], None] | None = None,
) -> EventLogs:
    """Read decisions, impressions and clicks and join clicks to impressions.

    The time range applies to the impressions' and decisions' ``event_time``;
    clicks are read whole so that a click just after ``until_ms`` still counts
    for an impression before it.
    """
    undecodable: dict[str, int] = {}
    frames: dict[str, pd.DataFrame] = {}
    for kind in ("decision", "impression", "click"):
        records, bad = read_topic(settings, kind, timeout, on_progress)
        undecodable[kind] = bad
        frames[kind] = _frame(records, IMPRESSION_COLUMNS + ["impression_id"])
    impressions = time_filter(frames["impression"], since_ms, until_ms)
    decisions = time_filter(frames["decision"], since_ms, until_ms)
    joined = join_clicks(impressions, frames["click"], settings.attribution_window_s)
    return EventLogs(decisions, joined, frames["click"], undecodable, "kafka")


def load_obd(path: Path | str, name: str = "obd") -> pd.DataFrame:
    """The Open Bandit Dataset sample as impressions with ``clicked``.

    Each row is one impression: ``poster_id`` is the item, ``placement`` the
    slot position, ``variant`` and ``policy`` the file's logging policy name.
    The sample has no user ids, so every impression is its own user and UCTR
    equals CTR. Context columns (``user_feature_*``, ``user-item_affinity_*``)
    are kept.
    """
    raw = pd.read_csv(path, index_col=0)
    missing = {"timestamp", "item_id", "position", "click", "propensity_score"} - set(
        raw.columns
    )
    if missing:
        raise ValueError(f"{path}: not an Open Bandit file, lacks {sorted(missing)}")
    stamps = pd.to_datetime(raw["timestamp"], utc=True)
    event_time = (stamps - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)
    ids = [f"{name}-{i}" for i in range(len(raw))]
    out = pd.DataFrame(
        {
            "event_id": ids,
            "event_time": event_time.to_numpy(dtype=np.int64),
            "user_id": ids,
            "video_id": name,
            "poster_id": raw["item_id"].astype(str).to_numpy(),
            "placement": ("position-" + raw["position"].astype(str)).to_numpy(),
            "variant": name,
            "policy": name,
            "propensity": raw["propensity_score"].to_numpy(dtype=float),
            "decision_id": ids,
            "segment": "",
            "clicked": raw["click"].to_numpy(dtype=int),
        }
    )
    context = [c for c in raw.columns if c.startswith(("user_feature", "user-item"))]
    return pd.concat([out, raw[context].reset_index(drop=True)], axis=1)
