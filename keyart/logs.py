"""Log set-up for keyart processes: plain lines or one JSON object a line.

Libraries in keyart only get a named logger (``logging.getLogger("keyart")``,
``"streams"``, ...) and never configure logging; the ``keyart`` command does,
once, here. Ids passed with ``extra=`` become fields of the JSON object, so a
log search can filter on ``video_id`` or ``job_id``.
"""

from __future__ import annotations

import logging
import sys

import orjson

__all__ = ["JsonFormatter", "configure"]

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object with its ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def configure(level: str = "INFO", *, as_json: bool = False) -> None:
    """Send every logger's records to standard error at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    if as_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Faust and aiokafka are chatty at INFO, and so is Alembic (ten lines each
    # time a process opens the catalog, saying the schema is current); their
    # warnings still show.
    for noisy in ("aiokafka", "faust", "mode", "kafka", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
