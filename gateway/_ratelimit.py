"""A warning logger that says a repeated thing at most once per interval."""

from __future__ import annotations

import logging

from keyart.logs import Throttle

__all__ = ["RateLimitedLog"]


class RateLimitedLog:
    """Log a WARNING per topic at most once every ``every_s`` seconds.

    The next message of a topic says how many were held back, so a Redis
    outage at 500 requests per second costs one line per interval, not 500.
    """

    def __init__(self, logger: logging.Logger, every_s: float = 10.0) -> None:
        self.logger = logger
        self._throttle = Throttle(every_s)

    def warning(self, topic: str, message: str, *args: object) -> None:
        held = self._throttle.admit(topic)
        if held is None:
            return
        if held:
            message += " (%s similar held back)"
            args = (*args, held)
        self.logger.warning(message, *args)
