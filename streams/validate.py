"""Checks an event must pass before the learner counts it.

A record that decodes but cannot be learnt from is rejected with a reason,
and the learner sends it to the dead-letter topic with its original bytes.
Nothing here raises on bad input. The checks, in order:

* every id of :data:`REQUIRED_IDS` is a non-empty string of at most
  :data:`MAX_ID_CHARS` characters;
* ``event_time`` is not negative and, when the caller gives its wall clock,
  not more than ``max_skew_ms`` after it (a client with a broken clock would
  otherwise move the partition clock years ahead, expiring the dedupe memory,
  the window and every pending impression at once);
* ``propensity`` (impressions) is finite and in ``(0, 1]``: off-policy
  evaluation divides by it;
* every feature map (``context``, ``poster_features``, ``features``) has at
  most :data:`MAX_FEATURE_KEYS` keys and every value is finite with
  ``|x| <= MAX_FEATURE_ABS``: LinUCB adds ``x x^T`` to a shared matrix, so one
  value of ``1e160`` would make the model infinite for everyone;
* impressions and clicks carry a Kafka key, and it is the video id. A record
  without one is refused although its value may be fine: the producer's
  partitioner put it on any partition, and an arm counted on two partitions
  has its Redis row overwritten by each partition's absolute counts in turn;
  its impression or click would also sit on another partition than its
  partner.

Examples
--------
>>> check_event("click", {"event_id": "c1", "event_time": 5, "impression_id": "",
...     "user_id": "u", "video_id": "v", "poster_id": "p"}, b"v")
'invalid click: empty impression_id'
>>> check_event("click", {"event_id": "c1", "event_time": 5, "impression_id": "i1",
...     "user_id": "u", "video_id": "v", "poster_id": "p"}, b"v") is None
True
>>> check_event("impression", {"event_id": "i1", "event_time": 5, "video_id": "v",
...     "poster_id": "p", "context": {"a": 1e160}}, b"v")
"invalid impression: context['a'] = 1e+160 is outside [-1000000.0, 1000000.0]"
"""

from __future__ import annotations

from collections.abc import Mapping
from math import isfinite
from typing import Any

__all__ = [
    "MAX_FEATURE_ABS",
    "MAX_FEATURE_KEYS",
    "MAX_ID_CHARS",
    "REQUIRED_IDS",
    "check_event",
]

REQUIRED_IDS: dict[str, tuple[str, ...]] = {
    "impression": ("event_id", "video_id", "poster_id"),
    "click": ("event_id", "impression_id", "video_id", "poster_id"),
    "poster_published": ("event_id", "video_id", "poster_id"),
}
"""Fields of each kind that must be non-empty strings."""

MAX_ID_CHARS = 1024
"""Longest id accepted: ids live in the dedupe memory and in Redis keys."""

MAX_FEATURE_ABS = 1e6
"""Largest absolute feature value accepted (the gateway's collector uses the
same bound for contexts)."""

MAX_FEATURE_KEYS = 256
"""Most keys of one feature map (a context or a poster's features)."""

_FEATURE_FIELDS = ("context", "poster_features", "features")
_EVENT_ID = ("event_id",)


def _feature_problem(kind: str, name: str, features: Mapping[str, float]) -> str | None:
    if len(features) > MAX_FEATURE_KEYS:
        return (
            f"invalid {kind}: {name} has {len(features)} keys, "
            f"more than {MAX_FEATURE_KEYS}"
        )
    # Every event passes here, so the common case is three C loops: a NaN or
    # an infinity makes the sum non-finite, and the bounds are the extremes.
    values = features.values()
    if (
        isfinite(sum(values))
        and max(values) <= MAX_FEATURE_ABS
        and min(values) >= -MAX_FEATURE_ABS
    ):
        return None
    for feature, value in features.items():  # name the first bad value
        if not isfinite(value):
            return f"invalid {kind}: {name}[{feature!r}] is not finite"
        if not -MAX_FEATURE_ABS <= value <= MAX_FEATURE_ABS:
            return (
                f"invalid {kind}: {name}[{feature!r}] = {value!r} is outside "
                f"[{-MAX_FEATURE_ABS}, {MAX_FEATURE_ABS}]"
            )
    return None


def check_event(
    kind: str,
    record: Mapping[str, Any],
    key: bytes | None,
    now_ms: int | None = None,
    max_skew_ms: int = 300_000,
) -> str | None:
    """Return why ``record`` cannot be learnt from, or ``None`` when it can.

    Parameters
    ----------
    kind
        Event kind (``impression``, ``click``, ``poster_published``).
    record
        The decoded record.
    key
        The Kafka message key; it must be the video id (``poster_published``
        records may have none), or the event would sit on another video's
        partition and miss its impression.
    now_ms
        The checker's wall clock; when given, events dated more than
        ``max_skew_ms`` after it are refused.
    max_skew_ms
        How far ahead of ``now_ms`` an event time may be (``max_clock_skew_s``).
    """
    get = record.get
    for name in REQUIRED_IDS.get(kind, _EVENT_ID):
        value = get(name)
        if not value:
            return f"invalid {kind}: empty {name}"
        if len(value) > MAX_ID_CHARS:
            return f"invalid {kind}: {name} longer than {MAX_ID_CHARS} characters"
    event_time = get("event_time", 0)
    if event_time < 0:
        return f"invalid {kind}: negative event_time {event_time}"
    if now_ms is not None and event_time > now_ms + max_skew_ms:
        return (
            f"invalid {kind}: event_time in the future ({event_time} is "
            f"{(event_time - now_ms) / 1000:.0f} s after the learner's clock, "
            f"more than max_clock_skew_s)"
        )
    if kind == "impression":
        propensity = get("propensity", 1.0)
        if not (isfinite(propensity) and 0.0 < propensity <= 1.0):
            return f"invalid {kind}: propensity {propensity!r} is not in (0, 1]"
    for name in _FEATURE_FIELDS:
        features = get(name)
        if features:
            problem = _feature_problem(kind, name, features)
            if problem is not None:
                return problem
    if kind != "poster_published":
        if key is None:
            return f"invalid {kind}: no key (events are keyed by their video id)"
        if key != record["video_id"].encode():
            return f"invalid {kind}: key {key[:64]!r} is not the video id"
    return None
