"""Checks an event must pass before the learner counts it.

A record that decodes but cannot be learnt from (an empty id, a negative or
non-finite time, a non-finite feature, a key that does not match its video)
is rejected with a reason, and the learner sends it to the dead-letter topic
with its original bytes. Nothing here raises on bad input.

Examples
--------
>>> check_event("click", {"event_id": "c1", "event_time": 5, "impression_id": "",
...     "user_id": "u", "video_id": "v", "poster_id": "p"}, b"v")
'invalid click: empty impression_id'
>>> check_event("click", {"event_id": "c1", "event_time": 5, "impression_id": "i1",
...     "user_id": "u", "video_id": "v", "poster_id": "p"}, b"v") is None
True
"""

from __future__ import annotations

from collections.abc import Mapping
from math import isfinite
from typing import Any

__all__ = ["REQUIRED_IDS", "check_event"]

REQUIRED_IDS: dict[str, tuple[str, ...]] = {
    "impression": ("event_id", "video_id", "poster_id"),
    "click": ("event_id", "impression_id", "video_id", "poster_id"),
    "poster_published": ("event_id", "video_id", "poster_id"),
}
"""Fields of each kind that must be non-empty strings."""

_FEATURE_FIELDS = ("context", "poster_features", "features")
_EVENT_ID = ("event_id",)


def _feature_problem(kind: str, name: str, features: Mapping[str, float]) -> str:
    for feature, value in features.items():
        if not isfinite(value):
            return f"invalid {kind}: {name}[{feature!r}] is not finite"
    return f"invalid {kind}: {name} values are too large to sum"


def check_event(kind: str, record: Mapping[str, Any], key: bytes | None) -> str | None:
    """Return why ``record`` cannot be learnt from, or ``None`` when it can.

    Parameters
    ----------
    kind
        Event kind (``impression``, ``click``, ``poster_published``).
    record
        The decoded record.
    key
        The Kafka message key; when present it must be the video id, or the
        event would sit on another video's partition and miss its impression.
    """
    get = record.get
    for name in REQUIRED_IDS.get(kind, _EVENT_ID):
        if not get(name):
            return f"invalid {kind}: empty {name}"
    event_time = get("event_time", 0)
    if event_time < 0:
        return f"invalid {kind}: negative event_time {event_time}"
    for name in _FEATURE_FIELDS:
        features = get(name)
        # sum() is NaN or infinite exactly when some value is (the fast path).
        if features and not isfinite(sum(features.values())):
            return _feature_problem(kind, name, features)
    if key is not None and kind != "poster_published":
        if key != record["video_id"].encode():
            return f"invalid {kind}: key {key[:64]!r} is not the video id"
    return None
