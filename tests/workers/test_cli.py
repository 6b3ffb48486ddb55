"""``keyart posters``: help, a local run with its progress bar, and review."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from keyart.cli import app

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(make_settings, tmp_path_factory):
    settings = make_settings(topics=True)
    folder = tmp_path_factory.mktemp("cli")
    return {
        "KEYART_STATE_DIR": str(folder / "state"),
        "KEYART_DATABASE_URL": settings.database_url,
        "KEYART_POSTER_STORE": str(settings.poster_store),
        "KEYART_DATA_CACHE": str(settings.data_cache),
        "KEYART_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "KEYART_TOPIC_PREFIX": settings.topic_prefix,
    }


def test_help_lists_the_commands():
    runner = CliRunner()
    result = runner.invoke(app, ["posters", "--help"])
    assert result.exit_code == 0
    for command in ("worker", "run", "publish", "migrate", "review"):
        assert command in result.output
    result = runner.invoke(app, ["posters", "review", "--help"])
    for command in ("list", "approve", "reject", "bulk-approve"):
        assert command in result.output


def test_run_review_and_errors(env, media, tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["posters", "run", str(media("bigbuckbunny.mp4")), "--video-id", "bunny"],
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert "12 candidates pending review" in result.output
    assert "132/132" in result.output  # the progress bar reached the end

    listed = runner.invoke(app, ["posters", "review", "list", "--json"], env=env)
    body = json.loads(listed.stdout)
    assert body["total"] == 12
    poster_id = body["candidates"][0]["poster_id"]
    approved = runner.invoke(
        app, ["posters", "review", "approve", poster_id, "--reviewer", "ana"], env=env
    )
    assert approved.exit_code == 0 and f"approved 1: {poster_id}" in approved.output
    rejected = runner.invoke(
        app,
        [
            "posters",
            "review",
            "reject",
            poster_id,
            "--reviewer",
            "ana",
            "--reason",
            "x",
        ],
        env=env,
    )
    assert rejected.exit_code == 1 and "already approved" in rejected.output

    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    failed = runner.invoke(app, ["posters", "run", str(empty)], env=env)
    assert failed.exit_code == 1 and "empty file" in failed.output
    kind = runner.invoke(
        app, ["posters", "run", str(empty), "--kind", "movie"], env=env
    )
    assert kind.exit_code == 2 and "--kind" in kind.output


def test_migrate(env):
    result = CliRunner().invoke(app, ["posters", "migrate"], env=env)
    assert result.exit_code == 0 and "catalog at head" in result.output


def test_run_and_migrate_show_the_catalog_url_without_its_password(env, pg_url, media):
    import sqlalchemy as sa

    # PostgreSQL here trusts local connections, so any password gets in.
    url = sa.make_url(pg_url).set(password="catalog-pw")
    env = {**env, "KEYART_DATABASE_URL": url.render_as_string(hide_password=False)}
    shown = url.render_as_string(hide_password=False).replace("catalog-pw", "***")
    runner = CliRunner()
    migrated = runner.invoke(app, ["posters", "migrate"], env=env)
    assert migrated.exit_code == 0, migrated.output
    assert migrated.stdout.endswith(f"catalog at head: {shown}\n")
    ran = runner.invoke(
        app, ["posters", "run", str(media("bikes.mp4")), "--video-id", "pw"], env=env
    )
    assert ran.exit_code == 0, ran.output
    assert f"candidates pending review in {shown}, images in " in ran.output
    assert "catalog-pw" not in migrated.output + ran.output


def test_publish_puts_a_video_on_the_topic_the_workers_read(make_settings, media):
    from schemas.codec import get_codec
    from tests.helpers import consume_raw

    settings = make_settings(topics=True)
    env = {
        "KEYART_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "KEYART_TOPIC_PREFIX": settings.topic_prefix,
    }
    runner = CliRunner()
    path = media("bikes.mp4")
    result = runner.invoke(
        app,
        ["posters", "publish", str(path), "--video-id", "bikes-1", "--kind", "trailer"],
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert "published video bikes-1" in result.output
    (message,) = consume_raw(settings, settings.topic("videos"), 1)
    record = get_codec().decode("video_published", message.value())
    assert message.key() == b"bikes-1"
    assert (record["video_id"], record["kind"]) == ("bikes-1", "trailer")
    assert record["uri"] == str(path.resolve())

    missing = runner.invoke(app, ["posters", "publish", "nowhere.mp4"], env=env)
    assert missing.exit_code == 2 and "nowhere.mp4: no such file" in missing.output
    odd = runner.invoke(app, ["posters", "publish", str(path), "--kind", "x"], env=env)
    assert odd.exit_code == 2 and "unknown kind" in odd.output


def _add_candidates(database_url: str, video_id: str, count: int) -> list[str]:
    """Put ``count`` 2:3 candidates of a finished job of ``video_id`` into the
    catalog at ``database_url``; return their poster ids."""
    from workers.catalog import CandidateRow, Catalog, JobRow, VideoRow

    catalog = Catalog(database_url)
    ids = [f"p-{video_id}-{i}" for i in range(count)]
    with catalog.session() as session:
        session.add(VideoRow(video_id=video_id, title=f"Posters of {video_id}"))
        session.flush()
        job = JobRow(video_id=video_id, event_id=f"e-{video_id}", status="done")
        session.add(job)
        session.flush()
        for i, poster_id in enumerate(ids):
            session.add(
                CandidateRow(
                    poster_id=poster_id,
                    video_id=video_id,
                    job_id=job.job_id,
                    aspect="2:3",
                    width=240,
                    height=360,
                    frame_index=i,
                    frame_time_s=float(i),
                    shot=0,
                    score=0.9 - i / 10,
                    image_path=f"/posters/{poster_id}.jpg",
                    image_url=f"/posters/{poster_id}.jpg",
                )
            )
        session.commit()
    catalog.close()
    return ids


def test_approve_with_the_broker_down_says_so_and_a_second_approve_publishes(
    make_settings, tmp_path
):
    from keyart.stack import free_port
    from schemas.codec import get_codec
    from tests.helpers import consume_raw
    from workers.catalog import CandidateRow, Catalog

    settings = make_settings(topics=True)
    (poster_id,) = _add_candidates(settings.database_url, "down", 1)
    env = {
        **os.environ,
        "KEYART_STATE_DIR": str(tmp_path / "state"),
        "KEYART_DATABASE_URL": settings.database_url,
        "KEYART_TOPIC_PREFIX": settings.topic_prefix,
    }
    command = [sys.executable, "-m", "keyart.cli", "posters", "review", "approve"]
    command += [poster_id, "--reviewer", "ana", "--placement", "home_row"]
    nobody = f"127.0.0.1:{free_port(0)}"  # a real address where no broker listens
    down = subprocess.run(
        command,
        env={**env, "KEYART_KAFKA_BOOTSTRAP": nobody},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert down.returncode == 1, down.stderr
    assert "Traceback" not in down.stderr
    assert "%3|" not in down.stderr  # no librdkafka line per connection retry
    assert (
        f"1 posters approved in the catalog, but their poster_published events "
        f"did not reach the broker at {nobody} (KEYART_KAFKA_BOOTSTRAP)"
    ) in down.stderr
    assert "approve the same ids again once it answers" in down.stderr
    catalog = Catalog(settings.database_url)
    with catalog.session() as session:
        row = session.get(CandidateRow, poster_id)
        assert (row.status, row.published) == ("approved", False)

    up = subprocess.run(
        command,
        env={**env, "KEYART_KAFKA_BOOTSTRAP": settings.kafka_bootstrap},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert up.returncode == 0, up.stderr
    assert f"approved 1: {poster_id}" in up.stdout
    (message,) = consume_raw(settings, settings.topic("posters"), 1)
    record = get_codec().decode("poster_published", message.value())
    assert (record["poster_id"], record["video_id"]) == (poster_id, "down")
    with catalog.session() as session:
        assert session.get(CandidateRow, poster_id).published is True
    catalog.close()


def test_review_list_says_how_many_it_shows(make_settings, tmp_path):
    settings = make_settings()
    _add_candidates(settings.database_url, "many", 3)
    env = {
        "KEYART_STATE_DIR": str(tmp_path / "state"),
        "KEYART_DATABASE_URL": settings.database_url,
    }
    runner = CliRunner()

    def listed(*options: str) -> list[str]:
        command = ["posters", "review", "list", "--video-id", "many", *options]
        result = runner.invoke(app, command, env=env)
        assert result.exit_code == 0, result.output
        return result.stdout.splitlines()

    first = listed("--limit", "2")
    assert first[0] == (
        "3 pending_review candidates, showing 1-2 (best score first); "
        "see more with --offset 2 or --limit (at most 500)"
    )
    assert [line.split()[0] for line in first[1:]] == ["p-many-0", "p-many-1"]
    rest = listed("--limit", "2", "--offset", "2")
    assert rest[0] == "3 pending_review candidates, showing 3-3 (best score first)"
    assert [line.split()[0] for line in rest[1:]] == ["p-many-2"]
    assert listed()[0] == "3 pending_review candidates"
