"""Build the learner's Faust app: batch topics, posters agent, timers, hooks.

Examples
--------
>>> app = create_app(settings)  # doctest: +SKIP
>>> app.main()  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from keyart.settings import Settings
from schemas.codec import DecodeError, get_codec
from streams.catalog import queue_poster
from streams.consumer import LearnerApp
from streams.learner import Learner
from streams.redis_guard import LOAD_TIMEOUT_S, REDIS_TIMEOUT_S
from streams.resume import LOG_END_CHECK_S
from streams.validate import check_event

__all__ = ["create_app", "faust_options"]

logger = logging.getLogger("streams")


def faust_options(settings: Settings) -> dict[str, Any]:
    """Faust configuration derived from keyart's settings."""
    brokers = [
        f"kafka://{server.strip()}" for server in settings.kafka_bootstrap.split(",")
    ]
    session = settings.streams_session_timeout_s
    return {
        "broker": brokers,
        "store": "memory://",
        "datadir": str(settings.state_dir / "faust"),
        "web_enabled": False,
        "topic_disable_leader": True,
        "topic_allow_declare": False,
        "consumer_auto_offset_reset": "earliest",
        "broker_session_timeout": session,
        "broker_heartbeat_interval": max(0.5, session / 5),
        "broker_rebalance_timeout": max(session * 2, 10.0),
        "broker_max_poll_records": 5000,
        "stream_wait_empty": False,
        "producer_acks": -1,
    }


def create_app(settings: Settings, redis_client: Any | None = None) -> LearnerApp:
    """The learner app for ``settings``; run it with a Faust worker.

    The app exposes ``app.learner`` (:class:`streams.learner.Learner`) once the
    worker starts.
    """
    import redis.asyncio as aioredis

    options = faust_options(settings)
    # Faust creates its data folder without parents, so with the default
    # relative state_dir (.keyart) it failed in any directory where `keyart up`
    # never ran. Faust keeps nothing there with the memory store.
    Path(options["datadir"]).mkdir(parents=True, exist_ok=True)
    app = LearnerApp(settings.streams_app_id, **options)
    codec = get_codec()
    impressions = app.topic(
        settings.topic("impressions"), value_serializer="raw", key_serializer="raw"
    )
    clicks = app.topic(
        settings.topic("clicks"), value_serializer="raw", key_serializer="raw"
    )
    posters = app.topic(
        settings.topic("posters"), value_serializer="raw", key_serializer="raw"
    )
    # Subscribed through the conductor, read through the batch path.
    app.topics.add(impressions)
    app.topics.add(clicks)
    state: dict[str, Learner] = {}

    def learner() -> Learner:
        if "learner" not in state:
            client = redis_client or aioredis.Redis.from_url(
                settings.redis_url,
                socket_timeout=REDIS_TIMEOUT_S,
                socket_connect_timeout=REDIS_TIMEOUT_S,
            )
            load_client = redis_client or aioredis.Redis.from_url(
                settings.redis_url,
                socket_timeout=LOAD_TIMEOUT_S,
                socket_connect_timeout=REDIS_TIMEOUT_S,
            )
            state["learner"] = Learner(app, settings, client, load_client)
            app.learner = state["learner"]  # type: ignore[attr-defined]
        return state["learner"]

    async def sink(batch: Any) -> None:
        await learner().on_batch(batch)

    app.route_batches([impressions.get_topic_name(), clicks.get_topic_name()], sink)

    @app.on_partitions_revoked.connect
    async def _revoked(app_: Any, revoked: set[Any], **_: Any) -> None:
        await learner().on_revoked(revoked)

    @app.on_partitions_assigned.connect
    async def _assigned(app_: Any, assigned: set[Any], **_: Any) -> None:
        await learner().on_assigned(assigned)

    @app.on_before_shutdown.connect
    async def _stopping(app_: Any, **_: Any) -> None:
        # Sent once Faust has stopped fetching and before the consumer closes:
        # the final flush covers every applied record and can still commit.
        if "learner" in state:
            await state["learner"].stop()

    @app.timer(interval=settings.flush_interval_ms / 1000)
    async def _flush() -> None:
        await learner().flush()

    @app.timer(interval=LOG_END_CHECK_S)
    async def _log_ends() -> None:
        # Topics recreated under the running learner (no rebalance follows).
        await learner().check_log_ends()

    @app.agent(posters)
    async def _posters(stream: Any) -> None:
        async for event in stream.events():
            message = event.message
            try:
                record = codec.decode("poster_published", message.value)
                reason = check_event("poster_published", record, message.key)
            except DecodeError as error:
                reason = f"undecodable poster_published: {error}"
            if reason is not None:
                learner()._send_dead(
                    (
                        message.topic,
                        message.partition,
                        message.offset,
                        message.key,
                        message.value or b"",
                        reason,
                    )
                )
                continue

            async def write(record: Any = record, message: Any = message) -> Any:
                keys = learner().keys
                pipe = learner().redis.pipeline(transaction=True)
                queue_poster(pipe, keys, settings, record)
                # The catalog's own offset: what a restart resumes from.
                pipe.hset(
                    keys.catalog_offsets(),
                    f"{message.topic}:{message.partition}",
                    message.offset + 1,
                )
                return await pipe.execute()

            await learner().redis_call("catalog", write)
            logger.info(
                "poster %s of %s is %s",
                record["poster_id"],
                record["video_id"],
                "retired" if record["retired"] else "an arm",
                extra={
                    "poster_id": record["poster_id"],
                    "video_id": record["video_id"],
                },
            )

    return app
