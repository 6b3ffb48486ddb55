"""Run the learner app in a Faust worker, with metrics and health endpoints."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable

from keyart.settings import Settings, shown_url

__all__ = ["run_worker"]

logger = logging.getLogger("streams")

GC_THRESHOLDS = (50_000, 20, 100)
"""The learner's garbage-collector thresholds. Decoding an event allocates a
dozen objects, so with Python's defaults (a young collection every 700
allocations) the collector kept walking the dedupe memory and the pending
impressions, which hold no reference cycles. Collecting rarely raised the
throughput benchmark's events per CPU second from about 21,000 to
25,000-31,000."""


def run_worker(settings: Settings) -> None:
    """Start the worker and block until it stops (SIGTERM / SIGINT)."""
    from faust.worker import Worker

    from keyart.health import check_broker, check_max_age, check_redis, serve_health
    from streams.app import create_app

    gc.set_threshold(*GC_THRESHOLDS)
    app = create_app(settings)
    worker = Worker(app, loglevel="WARNING", quiet=True, override_logging=False)
    # Faust's terminal spinner writes cursor escapes into log files and pipes.
    worker.spinner = None
    max_age = max(30.0, settings.flush_interval_ms / 1000 * 20)
    checks = {
        "redis": check_redis(settings.redis_url),
        "broker": check_broker(settings.kafka_bootstrap),
        "state_fresh": check_max_age(
            "learner state",
            lambda: (
                time.time() - app.learner.last_flush_wall
                if hasattr(app, "learner")
                else None
            ),
            max_age,
        ),
    }
    checks["redis_writes"] = _writes_reach_redis(app, settings.redis_url)
    for name in ("redis", "broker"):
        ok, detail = checks[name]()
        if not ok:
            raise SystemExit(f"keyart streams cannot start: {detail}")
    server = serve_health(settings, "streams", checks)
    logger.info(
        "learner %s reading %s and %s; metrics on port %s",
        settings.streams_app_id,
        settings.topic("impressions"),
        settings.topic("clicks"),
        server.port,
        extra={"metrics_port": server.port, "app_id": settings.streams_app_id},
    )
    try:
        worker.execute_from_commandline()
    finally:
        server.stop()


def _writes_reach_redis(app: object, url: str) -> Callable[[], tuple[bool, str]]:
    """Readiness: fails while the learner retries its Redis writes (an outage)."""
    shown = shown_url(url)

    def check() -> tuple[bool, str]:
        learner = getattr(app, "learner", None)
        if learner is None or learner.redis_ok:
            return True, "learner writes reach Redis"
        return False, (
            f"learner cannot write to Redis at {shown} (KEYART_REDIS_URL); retrying, "
            "consumption paused"
        )

    return check
