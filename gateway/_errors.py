"""What the gateway answers to a body it cannot use: the place and the fault.

FastAPI reports a request body's problems as a list of pydantic errors whose
location starts with ``body``. Three of them do not name a field: a body that
is not JSON comes as the character position where parsing stopped, an empty
body as a missing body, and a body sent without a JSON content type reaches
the model as bytes, so the model says it wanted an object. They are rewritten
here to say what is wrong. The collector reads its batches itself
(``gateway._batch``) and words the same faults with the same functions, so
every endpoint answers one fault alike.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BODY_FAULT_STATUS",
    "EMPTY_BODY",
    "body_errors",
    "content_type_fault",
    "error_message",
    "invalid_json",
    "parse_failure",
    "refusal",
]

# 422 for every body the gateway cannot use, on every endpoint, whether it is
# not JSON, not sent as JSON, not UTF-8 or a valid document with a bad field.
# That is what FastAPI itself answers to invalid JSON and to a body without a
# JSON content type, and the only client error its OpenAPI document declares
# for a route with a body, so a client built from /openapi.json or used to
# FastAPI handles one status. FastAPI's 400 for the rarer decode failures
# (bytes that are not UTF-8, nesting past the recursion limit) is turned into
# the same 422 by the application's handler.
BODY_FAULT_STATUS = 422

EMPTY_BODY = "empty; expected a JSON object"

_JSON_TYPES = ("application/json",)


def _is_json(content_type: str) -> bool:
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind in _JSON_TYPES or (
        kind.startswith("application/") and kind.endswith("+json")
    )


def content_type_fault(content_type: str | None) -> str | None:
    """Why a body sent with ``content_type`` is not read as JSON; None if it is.

    Examples
    --------
    >>> content_type_fault("application/json; charset=utf-8") is None
    True
    >>> content_type_fault("text/plain")
    "expected Content-Type: application/json (got 'text/plain')"
    """
    if content_type and _is_json(content_type):
        return None
    got = f"got {content_type!r}" if content_type else "none was sent"
    return f"expected Content-Type: application/json ({got})"


def invalid_json(position: int, reason: str) -> str:
    """The message for a JSON syntax error ``reason`` at character ``position``."""
    return f"invalid JSON at character {position}: {reason}"


def body_errors(
    errors: list[dict[str, Any]], content_type: str | None
) -> list[dict[str, str]]:
    """``{"field", "message"}`` per error of a request body, fields dotted.

    Parameters
    ----------
    errors
        ``RequestValidationError.errors()``.
    content_type
        The request's Content-Type header, None when it had none.

    Examples
    --------
    >>> body_errors([{"type": "json_invalid", "loc": ("body", 18),
    ...     "msg": "JSON decode error", "ctx": {"error": "Expecting value"}}],
    ...     "application/json")
    [{'field': 'body', 'message': 'invalid JSON at character 18: Expecting value'}]
    >>> body_errors([{"type": "greater_than_equal", "loc": ("body", "a", 0),
    ...     "msg": "Input should be greater than or equal to 0"}], None)[0]["field"]
    'a.0'
    """
    details = []
    for item in errors:
        loc = list(item["loc"])
        if loc[:1] == ["body"]:
            loc = loc[1:]
        if item["type"] == "json_invalid":
            reason = (item.get("ctx") or {}).get("error", item["msg"])
            message = invalid_json(loc[0], reason) if loc else f"invalid JSON: {reason}"
            loc = []
        elif not loc and item["type"] == "missing":
            message = EMPTY_BODY
        elif not loc and (fault := content_type_fault(content_type)):
            message = fault
        else:
            message = error_message(item)
        where = ".".join(str(part) for part in loc) or "body"
        details.append({"field": where, "message": message})
    return details


def refusal(details: list[dict[str, str]]) -> dict[str, Any]:
    """The answer body for refused input: the first fault as ``detail``, all
    of them as ``errors``.

    Examples
    --------
    >>> refusal([{"field": "events", "message": "expected a list"}])["detail"]
    'events: expected a list'
    """
    first = details[0] if details else {"field": "body", "message": "invalid"}
    return {"detail": f"{first['field']}: {first['message']}", "errors": details}


def error_message(item: dict[str, Any]) -> str:
    """A pydantic error's message, without the "Value error, " pydantic puts
    before the words of a keyart validator."""
    if item["type"] == "value_error":
        return str((item.get("ctx") or {}).get("error", item["msg"]))
    return str(item["msg"])


def parse_failure(cause: BaseException | None) -> str:
    """What is wrong with a body that could not be decoded for a reason beyond
    JSON syntax: bytes that are not UTF-8, an integer longer than Python
    converts (4300 digits), or nesting past Python's recursion limit."""
    if isinstance(cause, RecursionError):
        return "nested too deeply to read"
    if isinstance(cause, UnicodeDecodeError):
        return f"not UTF-8 ({cause.reason} at byte {cause.start})"
    if isinstance(cause, ValueError):
        return "cannot be read: " + str(cause).split(";", 1)[0]
    return "cannot be read"
