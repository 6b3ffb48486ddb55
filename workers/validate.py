"""Checks a video-published event must pass before it touches the catalog.

Every bound matches where the value goes, so an event that passes here can be
stored by SQLite and PostgreSQL alike, and its posters can be served:

- ``video_id``: 1 to 128 characters of ``A-Z a-z 0-9 . _ : @ / + = ~ -``, the
  ids the gateway's ``/v1/select`` accepts (so every poster made can be
  asked for), well inside the catalog's ``VARCHAR(200)``;
- ``event_id``: 1 to 200 characters (``jobs.event_id``), no control character;
- ``title``: at most 500 characters (``videos.title``), no control character;
- ``uri``: 1 to 4096 characters, no control character;
- ``cast`` and ``tags``: at most 100 entries of 1 to 200 characters each, no
  control character;
- ``event_time``: not negative.

Control characters (Unicode category Cc: NUL, line breaks, escapes) are
refused everywhere: PostgreSQL cannot store NUL in text at all, and the
others have no business in a title or an id. Nothing here raises on bad
input; the worker sends a refused event to the dead-letter topic with the
reason.

Examples
--------
>>> good = {"event_id": "e1", "event_time": 5, "video_id": "v-1", "title": "T",
...     "uri": "/videos/v-1.mp4", "kind": "other", "cast": [], "tags": ["drama"]}
>>> check_video_event(good) is None
True
>>> check_video_event({**good, "video_id": ""})
'invalid video_published: video_id is empty'
>>> check_video_event({**good, "title": "a\\x00b"})
'invalid video_published: title has control character U+0000 at 1'
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any

__all__ = [
    "MAX_EVENT_ID",
    "MAX_LIST_ITEMS",
    "MAX_TITLE",
    "MAX_URI",
    "MAX_VIDEO_ID",
    "check_video_event",
]

MAX_VIDEO_ID = 128
MAX_EVENT_ID = 200
MAX_TITLE = 500
MAX_URI = 4096
MAX_LIST_ITEMS = 100
MAX_LIST_ITEM = 200

VIDEO_ID = re.compile(r"[A-Za-z0-9._:@/+=~-]+")


def _control(value: str) -> int | None:
    """Index of the first control character of ``value``, or None."""
    for index, char in enumerate(value):
        if unicodedata.category(char) == "Cc":
            return index
    return None


def _text_problem(name: str, value: object, least: int, most: int) -> str | None:
    if not isinstance(value, str):
        return f"{name} is not a string"
    if len(value) < least:
        return f"{name} is empty"
    if len(value) > most:
        return f"{name} has {len(value)} characters, at most {most}"
    index = _control(value)
    if index is not None:
        return f"{name} has control character U+{ord(value[index]):04X} at {index}"
    return None


def _video_id_problem(value: object) -> str | None:
    problem = _text_problem("video_id", value, 1, MAX_VIDEO_ID)
    if problem is None and not VIDEO_ID.fullmatch(str(value)):
        bad = next(c for c in str(value) if not VIDEO_ID.fullmatch(c))
        problem = (
            f"video_id has {bad!r}; use letters, digits and . _ : @ / + = ~ - only"
        )
    return problem


def _list_problem(name: str, values: object) -> str | None:
    if not isinstance(values, list | tuple):
        return f"{name} is not a list"
    if len(values) > MAX_LIST_ITEMS:
        return f"{name} has {len(values)} entries, at most {MAX_LIST_ITEMS}"
    for index, value in enumerate(values):
        problem = _text_problem(f"{name}[{index}]", value, 1, MAX_LIST_ITEM)
        if problem:
            return problem
    return None


def check_video_event(event: Mapping[str, Any]) -> str | None:
    """Return why ``event`` cannot become a poster job, or None when it can."""
    problem = (
        _video_id_problem(event.get("video_id"))
        or _text_problem("event_id", event.get("event_id"), 1, MAX_EVENT_ID)
        or _text_problem("title", event.get("title", ""), 0, MAX_TITLE)
        or _text_problem("uri", event.get("uri"), 1, MAX_URI)
        or _list_problem("cast", event.get("cast", []))
        or _list_problem("tags", event.get("tags", []))
    )
    if problem is None and int(event.get("event_time", 0)) < 0:
        problem = f"event_time {event.get('event_time')} is negative"
    return None if problem is None else f"invalid video_published: {problem}"
