"""A warning logger that says a repeated thing at most once per interval."""

from __future__ import annotations

import logging
import time

__all__ = ["RateLimitedLog"]


class RateLimitedLog:
    """Log a WARNING per topic at most once every ``every_s`` seconds.

    The next message of a topic says how many were held back, so a Redis
    outage at 500 requests per second costs one line per interval, not 500.
    """

    def __init__(self, logger: logging.Logger, every_s: float = 10.0) -> None:
        self.logger = logger
        self.every_s = every_s
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warning(self, topic: str, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last.get(topic, -1e18) < self.every_s:
            self._held[topic] = self._held.get(topic, 0) + 1
            return
        self._last[topic] = now
        held = self._held.pop(topic, 0)
        if held:
            message += " (%s similar held back)"
            args = (*args, held)
        self.logger.warning(message, *args)
