"""Reading the body of a collector batch: ``{"events": [...]}`` and no more.

Only what makes the whole batch unusable is refused here, with
:class:`BatchError` naming the field; each event is judged on its own later,
so one bad event never costs the others. The faults of the body itself
(empty, not sent as JSON, not JSON) are worded as FastAPI's are on the other
routes (``gateway._errors``).
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from gateway._errors import EMPTY_BODY, content_type_fault, invalid_json, parse_failure

__all__ = ["BatchError", "is_beacon", "read_batch"]


def is_beacon(content_type: str | None) -> bool:
    """Whether the body came as ``text/plain``, as a browser's beacon sends it.

    ``navigator.sendBeacon(url, text)`` sends ``text/plain;charset=UTF-8``,
    and a beacon cannot send ``application/json`` to another origin (that
    needs a CORS preflight, which beacons never make). Web clients report the
    impressions of a page being closed that way, so the collector reads such a
    body as JSON; the other routes want ``application/json``.

    >>> is_beacon("text/plain;charset=UTF-8"), is_beacon("text/html")
    (True, False)
    """
    if not content_type:
        return False
    return content_type.split(";", 1)[0].strip().lower() == "text/plain"


class BatchError(ValueError):
    """The batch as a whole is unusable: ``field`` and what is wrong there."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def read_batch(body: bytes, content_type: str | None, max_events: int) -> list[Any]:
    """The batch's events, not yet validated.

    Parameters
    ----------
    body
        The request body.
    content_type
        The request's Content-Type header, None when it had none.
    max_events
        The most events a batch may hold (``max_events_per_batch``).

    Raises
    ------
    BatchError
        When the body is empty, sent without a JSON content type (or
        ``text/plain``, see :func:`is_beacon`), not JSON,
        not ``{"events": [...]}``, has another top-level field, or holds more
        than ``max_events`` events.
    """
    if not body:
        raise BatchError("body", EMPTY_BODY)
    fault = None if is_beacon(content_type) else content_type_fault(content_type)
    if fault:
        raise BatchError("body", fault)
    document = _load(body)
    if not isinstance(document, dict) or not isinstance(document.get("events"), list):
        raise BatchError("events", 'expected {"events": [...]}')
    unknown = sorted(set(document) - {"events"})
    if unknown:  # as every request body: a field the collector ignores is a bug
        raise BatchError(unknown[0], 'unknown field, a batch is {"events": [...]} only')
    events = document["events"]
    if len(events) > max_events:
        raise BatchError(
            "events",
            f"{len(events)} events, at most {max_events} (KEYART_MAX_EVENTS_PER_BATCH)",
        )
    return events


def _load(body: bytes) -> Any:
    """The batch document, read as FastAPI reads /v1/select.

    orjson refuses NaN and Infinity literals and numbers beyond a float or 64
    bits, which Python's json, FastAPI's parser, reads. Reading them the same
    way here leaves each event to be judged on its own (a NaN context value is
    that event's error), instead of one event sinking its whole batch. The
    slower parser only runs on bodies orjson refused, and its words for a
    syntax error are the ones FastAPI gives on the other routes.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body)
    except json.JSONDecodeError as error:
        raise BatchError("body", invalid_json(error.pos, error.msg)) from None
    except (ValueError, RecursionError) as error:  # digits, encoding, depth
        raise BatchError("body", parse_failure(error)) from None
