"""Decision records of a whole row, encoded in one pass without fastavro.

A row logs one ``decision`` record per video, and half of each record is the
same for the whole row (time, request, user, placement, variant, experiment
version, context). Encoding them one by one with :meth:`schemas.codec.Codec.
encode` cost about a tenth of a row's CPU, mostly fastavro's per-call set-up.
:class:`RowLogEncoder` writes the Avro body directly: the row's shared fields
once, each record's own fields, and the strings that recur (ids, policy and
rule names, candidate lists) from a bounded cache. The bytes are the codec's
exactly: the header of the schema the codec writes, then the Avro binary
encoding of the same field values in schema order.

The layout is written for version 1 of the decision schema. When the codec
writes another schema (a field was added), the encoder says so at start and
every record goes through the codec as before.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Sequence
from typing import Any

import orjson

from schemas.codec import MAGIC, Codec

__all__ = ["RowLogEncoder"]

logger = logging.getLogger("gateway")

_FIELDS = (
    ("event_id", "string"),
    ("event_time", "long"),
    ("request_id", "string"),
    ("user_id", "string"),
    ("video_id", "string"),
    ("poster_id", "string"),
    ("placement", "string"),
    ("variant", "string"),
    ("policy", "string"),
    ("propensity", "double"),
    ("model_version", "long"),
    ("experiment_version", "long"),
    ("candidates", ("array", "string")),
    ("scores", ("array", "double")),
    ("rules", ("array", "string")),
    ("fallback", "boolean"),
    ("context", ("map", "double")),
)
"""The decision schema this module's layout follows, field by field."""

_SMALL = [bytes([i << 1]) for i in range(64)]
"""The one-byte encodings of the longs 0 to 63."""
_CACHE_LIMIT = 50_000
_DOUBLE = struct.Struct("<d")


def _long(value: int) -> bytes:
    """Avro ``long``: zig-zag, then 7 bits a byte, low bits first."""
    if 0 <= value < 64:
        return _SMALL[value]
    if not -(1 << 63) <= value < (1 << 63):
        raise ValueError(f"{value} does not fit an Avro long")
    n = (value << 1) ^ (value >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _string(text: str) -> bytes:
    data = text.encode()
    return _long(len(data)) + data


def _shape(schema: Any) -> Any:
    if isinstance(schema, dict):
        kind = schema["type"]
        if kind == "array":
            return ("array", _shape(schema["items"]))
        if kind == "map":
            return ("map", _shape(schema["values"]))
        return kind
    return schema


class RowLogEncoder:
    """Encode a row's decision records as the codec would.

    Parameters
    ----------
    codec
        The codec whose ``decision`` schema and header the records use.

    Examples
    --------
    >>> from schemas.codec import get_codec
    >>> encoder = RowLogEncoder(get_codec())
    >>> shared = encoder.shared(5, "r", "u", "home_row", "ts", 2, {"hour": 0.5})
    >>> value = encoder.record(shared, "d1", "v", "p", "thompson", 0.5, 0,
    ...     ["p", "q"], [0.1, 0.2], ["mmr"], False)
    >>> get_codec().decode("decision", value)["candidates"]
    ['p', 'q']
    """

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        schema = orjson.loads(codec.schema_json("decision"))
        fields = tuple((f["name"], _shape(f["type"])) for f in schema["fields"])
        self.exact = fields == _FIELDS
        """Whether records may be written here (else the codec writes them)."""
        if not self.exact:
            logger.info("decision schema is not v1: records go through the codec")
        fingerprint = bytes.fromhex(codec.writer_fingerprint("decision"))
        self._header = MAGIC + fingerprint[::-1]
        self._strings: dict[str, bytes] = {}
        self._lists: dict[tuple[str, ...], bytes] = {}

    def _cached(self, text: str) -> bytes:
        found = self._strings.get(text)
        if found is None:
            if len(self._strings) >= _CACHE_LIMIT:
                self._strings.clear()
            found = self._strings[text] = _string(text)
        return found

    def _string_array(self, items: Sequence[str]) -> bytes:
        if not items:
            return b"\x00"
        key = tuple(items)
        found = self._lists.get(key)
        if found is None:
            if len(self._lists) >= _CACHE_LIMIT:
                self._lists.clear()
            cached = self._cached
            found = b"".join(
                [_long(len(key)), *[cached(item) for item in key], b"\x00"]
            )
            self._lists[key] = found
        return found

    def shared(
        self,
        event_time: int,
        request_id: str,
        user_id: str,
        placement: str,
        variant: str,
        experiment_version: int,
        context: dict[str, float],
    ) -> tuple[bytes, bytes, bytes, bytes]:
        """The row's fields, encoded once, in the four places records use them."""
        if context:
            parts = [_long(len(context))]
            for key, value in context.items():
                parts.append(self._cached(key))
                parts.append(_DOUBLE.pack(value))
            parts.append(b"\x00")
            tail = b"".join(parts)
        else:
            tail = b"\x00"
        return (
            b"".join([_long(event_time), _string(request_id), _string(user_id)]),
            self._cached(placement) + self._cached(variant),
            _long(experiment_version),
            tail,
        )

    def record(
        self,
        shared: tuple[bytes, bytes, bytes, bytes],
        event_id: str,
        video_id: str,
        poster_id: str,
        policy: str,
        propensity: float,
        model_version: int,
        candidates: Sequence[str],
        scores: Sequence[float],
        rules: Sequence[str],
        fallback: bool,
    ) -> bytes:
        """One record's bytes, header included.

        Raises
        ------
        ValueError
            When a value does not fit its Avro type (as the codec would).
        """
        after_event, after_poster, after_model, tail = shared
        cached = self._cached
        try:
            return b"".join(
                [
                    self._header,
                    _string(event_id),
                    after_event,
                    cached(video_id),
                    cached(poster_id),
                    after_poster,
                    cached(policy),
                    _DOUBLE.pack(propensity),
                    _long(model_version),
                    after_model,
                    self._string_array(candidates),
                    _double_array(scores),
                    self._string_array(rules),
                    b"\x01" if fallback else b"\x00",
                    tail,
                ]
            )
        except (struct.error, TypeError, AttributeError) as error:
            raise ValueError(f"decision record does not fit: {error}") from None


def _double_array(values: Sequence[float]) -> bytes:
    """An Avro array of doubles in one block (one pack call for short ones)."""
    n = len(values)
    if not n:
        return b"\x00"
    if n < 64:  # the block count fits one byte
        return struct.pack(f"<B{n}dB", n << 1, *values, 0)
    return b"".join([_long(n), *map(_DOUBLE.pack, values), b"\x00"])
