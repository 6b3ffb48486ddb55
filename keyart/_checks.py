"""Ready-made readiness checks for :mod:`keyart.health`.

Each function returns a check: a callable taking no argument and returning
``(ok, detail)``, whose detail names the setting to look at when it fails.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from keyart.settings import shown_url

__all__ = ["check_broker", "check_database", "check_max_age", "check_redis"]

Check = Callable[[], tuple[bool, str]]


def check_redis(url: str, timeout: float = 1.0) -> Check:
    """A check that Redis at ``url`` answers PING."""
    import redis

    client = redis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout
    )
    shown = shown_url(url)

    def redis_ping() -> tuple[bool, str]:
        try:
            client.ping()
        except (redis.RedisError, OSError) as error:
            return False, f"redis at {shown} (KEYART_REDIS_URL): {error}"
        return True, f"redis at {shown} answers"

    return redis_ping


def check_broker(bootstrap: str, timeout: float = 1.5) -> Check:
    """A check that the Kafka broker at ``bootstrap`` answers a metadata request."""
    from confluent_kafka.admin import AdminClient

    # log_level 2: the detail carries the failure; no librdkafka line per retry.
    config: dict[str, Any] = {"bootstrap.servers": bootstrap}
    config.update({"socket.timeout.ms": 2000, "log_level": 2})
    admin = AdminClient(config)

    def broker_metadata() -> tuple[bool, str]:
        try:
            meta = admin.list_topics(timeout=timeout)
        except Exception as error:  # KafkaException on timeout or refusal
            return False, f"broker at {bootstrap} (KEYART_KAFKA_BOOTSTRAP): {error}"
        return True, f"{len(meta.brokers)} broker(s), {len(meta.topics)} topics"

    return broker_metadata


def check_database(url: str, timeout: float = 2.0) -> Check:
    """A check that the catalog database at ``url`` answers ``SELECT 1``."""
    import sqlalchemy as sa

    shown = shown_url(url)
    args: dict[str, Any] = {}
    if shown.startswith("postgresql"):
        args = {"connect_timeout": max(1, round(timeout))}
    engine = sa.create_engine(url, pool_pre_ping=True, connect_args=args)

    def database_select() -> tuple[bool, str]:
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError as error:
            reason = str(error).splitlines()[0]
            return False, f"database {shown} (KEYART_DATABASE_URL): {reason}"
        return True, f"database {shown} answers"

    return database_select


def check_max_age(
    what: str, age_seconds: Callable[[], float | None], bound: float
) -> Check:
    """A check that ``age_seconds()`` (lag, state freshness) stays within ``bound``.

    ``age_seconds`` returning None means there is nothing to measure yet, which
    passes.
    """

    def within_bound() -> tuple[bool, str]:
        age = age_seconds()
        if age is None:
            return True, f"{what}: nothing measured yet"
        ok = age <= bound
        return ok, f"{what}: {age:.1f} s ({'within' if ok else 'above'} {bound:g} s)"

    return within_bound
