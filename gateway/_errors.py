"""What the gateway answers to a body it cannot use: the place and the fault.

FastAPI reports a request body's problems as a list of pydantic errors whose
location starts with ``body``. Two of them do not name a field: a body that
is not JSON comes as the character position where parsing stopped, and a body
sent without a JSON content type reaches the model as bytes, so the model
says it wanted an object. Both are rewritten here to say what is wrong.
"""

from __future__ import annotations

from typing import Any

__all__ = ["body_errors", "error_message", "parse_failure"]

_JSON_TYPES = ("application/json",)


def _is_json(content_type: str) -> bool:
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind in _JSON_TYPES or (
        kind.startswith("application/") and kind.endswith("+json")
    )


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
        message = item["msg"]
        if item["type"] == "json_invalid":
            where = f" at character {loc[0]}" if loc else ""
            reason = (item.get("ctx") or {}).get("error", message)
            loc, message = [], f"invalid JSON{where}: {reason}"
        elif not loc and item["type"] != "missing" and not _is_json(content_type or ""):
            got = f"got {content_type!r}" if content_type else "none was sent"
            message = f"expected Content-Type: application/json ({got})"
        else:
            message = error_message(item)
        where = ".".join(str(part) for part in loc) or "body"
        details.append({"field": where, "message": message})
    return details


def error_message(item: dict[str, Any]) -> str:
    """A pydantic error's message, without the "Value error, " pydantic puts
    before the words of a keyart validator."""
    if item["type"] == "value_error":
        return str((item.get("ctx") or {}).get("error", item["msg"]))
    return str(item["msg"])


def parse_failure(cause: BaseException | None) -> str:
    """The detail of a body FastAPI could not decode for a reason beyond JSON
    syntax: bytes that are not UTF-8, an integer longer than Python converts
    (4300 digits), or nesting past Python's recursion limit."""
    if isinstance(cause, RecursionError):
        return "body: nested too deeply to read"
    if isinstance(cause, UnicodeDecodeError):
        return f"body: not UTF-8 ({cause.reason} at byte {cause.start})"
    if isinstance(cause, ValueError):
        return "body: cannot be read: " + str(cause).split(";", 1)[0]
    return "body: cannot be read"
