"""The one Avro codec every keyart producer and consumer uses.

Records travel in Avro's single-object encoding: two marker bytes
(``C3 01``), the writer schema's 8-byte CRC-64-AVRO fingerprint (little
endian), then the schemaless Avro body. A reader resolves the writer schema by
fingerprint and reads the body into its own (newest) schema, so producers and
consumers can be upgraded one at a time.

Evolution rule: a new version only adds fields, each with a default. A field
is never removed, renamed, reused for another meaning or retyped. Each version
lives in ``schemas/avro/<name>/v<N>.avsc``; the highest N is what this code
writes and reads into.

Examples
--------
>>> from schemas.codec import Codec
>>> codec = Codec()
>>> data = codec.encode("click", {"event_id": "c1", "event_time": 0,
...     "impression_id": "i1", "user_id": "u", "video_id": "v", "poster_id": "p"})
>>> codec.decode("click", data)["placement"]
''
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

__all__ = ["Codec", "DecodeError", "SCHEMA_NAMES", "get_codec"]

MAGIC = b"\xc3\x01"
HEADER_LEN = 10
AVRO_DIR = Path(__file__).parent / "avro"
SCHEMA_NAMES = (
    "impression",
    "click",
    "decision",
    "video_published",
    "poster_candidate",
    "poster_published",
    "dead_letter",
)


class DecodeError(ValueError):
    """Bytes that are not a record keyart can read; the message says why."""


def _fingerprint_bytes(parsed: Mapping[str, Any]) -> bytes:
    digest = fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO")
    return int(digest, 16).to_bytes(8, "little")


class Codec:
    """Encode and decode keyart events.

    Parameters
    ----------
    schema_dir
        Folder holding ``<name>/v<N>.avsc`` files; the bundled one by default.
    lookup
        Called with a fingerprint (16 hex digits) the codec does not know;
        returns the writer schema's JSON text or ``None``. This is how a reader
        learns a newer writer schema from a shared registry.
    """

    def __init__(
        self,
        schema_dir: Path = AVRO_DIR,
        lookup: Callable[[str], str | None] | None = None,
    ) -> None:
        self._lookup = lookup
        self._readers: dict[str, dict[str, Any]] = {}
        self._writer_headers: dict[str, bytes] = {}
        self._writers: dict[bytes, tuple[str, dict[str, Any]]] = {}
        self._resolved: dict[tuple[str, bytes], Any] = {}
        for folder in sorted(p for p in schema_dir.iterdir() if p.is_dir()):
            versions = sorted(
                folder.glob("v*.avsc"), key=lambda p: int(p.stem.lstrip("v"))
            )
            for path in versions:
                self.register(folder.name, path.read_text())
            if versions:
                newest = parse_schema(json.loads(versions[-1].read_text()))
                self._readers[folder.name] = newest
                self._writer_headers[folder.name] = MAGIC + _fingerprint_bytes(newest)

    @property
    def names(self) -> list[str]:
        """Names of the event kinds this codec reads and writes."""
        return sorted(self._readers)

    def register(self, name: str, schema_json: str) -> str:
        """Make a writer schema known; return its fingerprint in hex."""
        parsed = parse_schema(json.loads(schema_json))
        key = _fingerprint_bytes(parsed)
        self._writers[key] = (name, parsed)
        return key[::-1].hex()

    def schema_json(self, name: str) -> str:
        """The JSON text of the schema this codec writes for ``name``."""
        return json.dumps(self._reader(name))

    def writer_fingerprint(self, name: str) -> str:
        """Hex fingerprint of the schema this codec writes for ``name``."""
        return self._writer_headers[name][2:][::-1].hex()

    def _reader(self, name: str) -> dict[str, Any]:
        try:
            return self._readers[name]
        except KeyError:
            raise KeyError(f"no schema named {name!r}; known: {self.names}") from None

    def encode(self, name: str, record: Mapping[str, Any]) -> bytes:
        """Encode one record of kind ``name``.

        Raises
        ------
        ValueError
            When the record does not fit the schema; the message names the field.
        """
        schema = self._reader(name)
        buffer = io.BytesIO()
        buffer.write(self._writer_headers[name])
        try:
            fastavro.schemaless_writer(
                buffer, schema, dict(record), strict_allow_default=True
            )
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            raise ValueError(
                f"{name} record does not fit its schema: {error}"
            ) from None
        return buffer.getvalue()

    def _writer_for(self, name: str, header: bytes) -> dict[str, Any]:
        found = self._writers.get(header)
        if found is None and self._lookup is not None:
            text = self._lookup(header[::-1].hex())
            if text is not None:
                self.register(name, text)
                found = self._writers.get(header)
        if found is None:
            raise DecodeError(f"unknown writer schema {header[::-1].hex()}")
        if found[0] != name:
            raise DecodeError(f"record is a {found[0]}, not a {name}")
        return found[1]

    def decode(self, name: str, data: bytes) -> dict[str, Any]:
        """Decode one record of kind ``name`` into the newest schema.

        Raises
        ------
        DecodeError
            For bytes without the marker, of an unknown or other schema, or
            truncated or corrupt bodies.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise DecodeError(f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) < HEADER_LEN or data[:2] != MAGIC:
            raise DecodeError("not an Avro single-object record (bad marker)")
        header = data[2:HEADER_LEN]
        reader = self._reader(name)
        writer = self._writer_for(name, header)
        buffer = io.BytesIO(data)
        buffer.seek(HEADER_LEN)
        try:
            if writer is reader or header == self._writer_headers[name][2:]:
                record = fastavro.schemaless_reader(buffer, reader, None)
            else:
                record = fastavro.schemaless_reader(buffer, writer, reader)
        except Exception as error:  # fastavro raises many kinds on corrupt bodies
            raise DecodeError(f"corrupt {name} body: {error!r}") from None
        if buffer.tell() != len(data):
            raise DecodeError(f"{len(data) - buffer.tell()} trailing bytes")
        if not isinstance(record, dict):
            raise DecodeError(f"{name} body is not a record")
        return record

    def decode_many(
        self, name: str, payloads: Iterable[bytes]
    ) -> list[dict[str, Any] | DecodeError]:
        """Decode many records; a bad one yields its error in place, not a raise."""
        out: list[dict[str, Any] | DecodeError] = []
        for data in payloads:
            try:
                out.append(self.decode(name, data))
            except DecodeError as error:
                out.append(error)
        return out


_default: Codec | None = None


def get_codec() -> Codec:
    """The process-wide codec with the bundled schemas."""
    global _default
    if _default is None:
        _default = Codec()
    return _default
