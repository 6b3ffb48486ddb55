"""The learner's Redis guard names the Redis it gave up on without its password."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis

from keyart.stack import free_port
from streams.redis_guard import RedisGuard, StateLostError
from streams.state_keys import StreamKeys


class Guarded(RedisGuard):
    def __init__(self, settings, client) -> None:
        self.settings, self.redis = settings, client
        self.keys = StreamKeys(settings.redis_prefix)
        self._init_guard()


async def test_lost_state_names_the_redis_without_its_password(
    make_settings, redis_password_url
) -> None:
    settings = make_settings(topics=True, redis_url=redis_password_url)
    client = aioredis.Redis.from_url(redis_password_url)
    try:
        with pytest.raises(StateLostError) as raised:
            await Guarded(settings, client)._check_state_kept([0])
    finally:
        await client.aclose()
    password = urlsplit(redis_password_url).password
    assert password and password not in str(raised.value)
    shown = redis_password_url.replace(password, "***")
    assert str(raised.value).startswith(f"Redis at {shown} (KEYART_REDIS_URL) lost")


async def test_retries_and_giving_up_name_the_redis_without_its_password(
    make_settings, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"redis://keyart:guard-pw@127.0.0.1:{free_port(0)}/0"
    settings = make_settings(redis_url=url, redis_outage_s=1.0)
    client = aioredis.Redis.from_url(url, socket_connect_timeout=0.5)
    guard = Guarded(settings, client)
    try:
        with caplog.at_level(logging.WARNING, logger="streams"):
            with pytest.raises(aioredis.ConnectionError):
                await guard.redis_call("flush", client.ping)
    finally:
        await client.aclose()
    lines = [record.getMessage() for record in caplog.records]
    assert [record.levelname for record in caplog.records] == ["WARNING", "ERROR"]
    for line in lines:
        assert "guard-pw" not in line
        assert line.startswith(f"Redis at {url.replace('guard-pw', '***')} ")
