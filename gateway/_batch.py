"""Reading the body of a collector batch: ``{"events": [...]}`` and no more.

Only what makes the whole batch unusable is refused here, with
:class:`BatchError` naming the field; each event is judged on its own later,
so one bad event never costs the others.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from gateway._errors import parse_failure

__all__ = ["BatchError", "read_batch"]


class BatchError(ValueError):
    """The batch as a whole is unusable; the message names the field."""


def read_batch(body: bytes, max_events: int) -> list[Any]:
    """The batch's events, not yet validated.

    Raises
    ------
    BatchError
        When the body is not JSON, not ``{"events": [...]}``, has another
        top-level field, or holds more than ``max_events`` events
        (``max_events_per_batch``).
    """
    document = _load(body)
    if not isinstance(document, dict) or not isinstance(document.get("events"), list):
        raise BatchError('events: expected {"events": [...]}')
    unknown = sorted(set(document) - {"events"})
    if unknown:  # as every request body: a field the collector ignores is a bug
        raise BatchError(
            f'{unknown[0]}: unknown field, a batch is {{"events": [...]}} only'
        )
    events = document["events"]
    if len(events) > max_events:
        raise BatchError(
            f"events: {len(events)} events, at most {max_events} "
            "(KEYART_MAX_EVENTS_PER_BATCH)"
        )
    return events


def _load(body: bytes) -> Any:
    """The batch document, read as FastAPI reads /v1/select.

    orjson refuses NaN and Infinity literals and numbers beyond a float or 64
    bits, which Python's json, FastAPI's parser, reads. Reading them the same
    way here leaves each event to be judged on its own (a NaN context value is
    that event's error), instead of one event sinking its whole batch. The
    slower parser only runs on bodies orjson refused.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        syntax = error
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        raise BatchError(
            f"body: invalid JSON at character {syntax.pos}: {syntax.msg}"
        ) from None
    except (ValueError, RecursionError) as error:  # digits, encoding, depth
        raise BatchError(parse_failure(error)) from None
