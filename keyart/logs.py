"""Log set-up for keyart processes: plain lines or one JSON object a line.

Libraries in keyart only get a named logger (``logging.getLogger("keyart")``,
``"streams"``, ...) and never configure logging; the ``keyart`` command does,
once, here. Ids passed with ``extra=`` become fields of the JSON object, so a
log search can filter on ``video_id`` or ``job_id``.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time

import orjson

__all__ = [
    "JsonFormatter",
    "RepeatLimit",
    "Throttle",
    "configure",
    "librdkafka_logger",
]

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


_ELAPSED = re.compile(r"\(after \d+ms")


class Throttle:
    """Which repeats of a thing to let through: each key at most once every
    ``every_s`` seconds, counting the ones held back in between.

    Parameters
    ----------
    every_s
        Shortest time between two admissions of the same key.

    Examples
    --------
    >>> throttle = Throttle(every_s=60.0)
    >>> throttle.admit("redis down"), throttle.admit("redis down")
    (0, None)
    """

    MAX_KEYS = 1000
    """Distinct keys remembered; past it the memory starts over."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def admit(self, key: str) -> int | None:
        """``None`` to hold this one back, else how many of ``key`` were held
        back since the last one let through."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.every_s:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        if len(self._last) >= self.MAX_KEYS:
            self._last.clear()
            self._held.clear()
        self._last[key] = now
        return self._held.pop(key, 0)


class RepeatLimit(logging.Filter):
    """Let a message through once every ``every_s`` seconds.

    The next one through after a pause says how many were held back. Messages
    that differ only in librdkafka's elapsed time (``(after 3ms in state
    CONNECT)``) count as the same.

    Parameters
    ----------
    every_s
        Shortest time between two records of the same message.
    """

    def __init__(self, every_s: float = 60.0) -> None:
        super().__init__()
        self._lock = threading.Lock()  # librdkafka logs from its own threads
        self._throttle = Throttle(every_s)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        with self._lock:
            held = self._throttle.admit(_ELAPSED.sub("(after", message))
        if held is None:
            return False
        if held:
            record.msg = f"{message} ({held} more like it held back)"
            record.args = None
        return True


def librdkafka_logger(name: str, every_s: float = 60.0) -> logging.Logger:
    """The logger to give a confluent-kafka client as its ``logger`` setting.

    librdkafka writes its own lines to standard error, one per connection
    retry (several a second while a broker is down); through this logger they
    take the process's format and level, and each message shows at most once
    every ``every_s`` seconds.
    """
    logger = logging.getLogger(name)
    if not any(isinstance(f, RepeatLimit) for f in logger.filters):
        logger.addFilter(RepeatLimit(every_s))
    return logger


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
