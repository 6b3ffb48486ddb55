"""Approved posters become arms: the catalog the gateway reads in Redis.

A ``poster_published`` event writes the poster's hash and adds it to its
video's set; a retired one is marked ``retired``, leaves the set and is noted
in the video's retired hash. Its arm starts from the prior: the arm field is
created with zero counts (``HSETNX``, so counts already learnt are kept), and
the gateway adds ``prior_alpha`` / ``prior_beta`` to whatever it reads.
Every write is idempotent, so a replayed event changes nothing.

Examples
--------
>>> catalog_fields({"video_id": "v", "image_url": "u", "aspect": "2:3",
...     "placements": ["row"], "features": {}, "tags": [], "embedding": [],
...     "retired": False, "event_time": 5})["status"]
'approved'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson

from keyart.keys import Keys, arm_field
from keyart.settings import Settings

__all__ = ["catalog_fields", "queue_poster"]


def catalog_fields(event: Mapping[str, Any]) -> dict[str, Any]:
    """The ``{p}:poster:{poster}`` hash of a ``poster_published`` event."""
    return {
        "video_id": event["video_id"],
        "image_url": event["image_url"],
        "aspect": event["aspect"],
        "placements": orjson.dumps(list(event["placements"])),
        "features": orjson.dumps(dict(event["features"])),
        "tags": orjson.dumps(list(event["tags"])),
        "embedding": np.asarray(event["embedding"], dtype="<f4").tobytes(),
        "status": "retired" if event["retired"] else "approved",
        "created_ms": int(event["event_time"]),
    }


def queue_poster(
    pipe: Any, keys: Keys, settings: Settings, event: Mapping[str, Any]
) -> None:
    """Queue the catalog writes of one ``poster_published`` event on ``pipe``."""
    video, poster = event["video_id"], event["poster_id"]
    pipe.hset(keys.poster(poster), mapping=catalog_fields(event))
    if event["retired"]:
        pipe.srem(keys.posters(video), poster)
        pipe.hset(keys.retired(video), poster, "retired by review")
        return
    pipe.sadd(keys.posters(video), poster)
    pipe.hdel(keys.retired(video), poster)
    fields = [arm_field(poster)]
    if settings.split_by_placement and not settings.split_by_segment:
        fields = [arm_field(poster, p) for p in event["placements"]] or fields
    for field in fields:
        pipe.hsetnx(keys.arms(video), field, b"0,0,0,0")
