"""A worker process killed mid-video: the next one finishes the job, once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import sqlalchemy as sa

from producers.events import EventProducer
from tests.conftest import ROOT
from tests.helpers import poster_worker_env
from tests.workers.topics import read_all
from workers.catalog import CandidateRow, Catalog, JobRow
from workers.pipeline import PipelineConfig, PosterPipeline
from workers.runner import JobRunner, video_event
from workers.worker import PosterWorker

pytestmark = pytest.mark.slow


def test_killed_worker_is_replaced_and_the_job_counts_once(make_settings, media):
    settings = make_settings(
        topics=True, poster_session_timeout_s=6, poster_max_frames=6
    )
    env = poster_worker_env(
        settings, KEYART_POSTER_SESSION_TIMEOUT_S="6", KEYART_POSTER_MAX_FRAMES="6"
    )
    command = [sys.executable, "-m", "keyart.cli", "posters", "worker"]
    producer = EventProducer(settings)
    producer.send(
        "video_published", video_event(media("bikes.mp4"), "bikes", kind="trailer")
    )
    producer.flush()
    catalog = Catalog(settings.database_url)

    def job() -> JobRow | None:
        with catalog.session() as session:
            return session.scalars(sa.select(JobRow)).one_or_none()

    # Worker A claims the job and is killed while it decodes the video.
    first = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 180  # a loaded machine starts Python slowly
    while time.monotonic() < deadline and job() is None:
        time.sleep(0.05)
    found = job()
    assert found is not None and found.status == "running"
    os.kill(first.pid, signal.SIGKILL)
    first.wait(10)
    assert job().status == "running"
    with catalog.session() as session:
        assert session.scalar(sa.select(sa.func.count(CandidateRow.poster_id))) == 0

    # Worker B, same group, receives the uncommitted message and finishes it.
    second = PosterWorker(
        settings,
        JobRunner(
            settings, catalog, PosterPipeline(PipelineConfig.from_settings(settings))
        ),
    )
    assert second.run(max_messages=1) == {"done": 1}
    done = job()
    assert (done.status, done.attempts, done.events_sent) == ("done", 2, True)
    with catalog.session() as session:
        ids = list(session.scalars(sa.select(CandidateRow.poster_id)))
    assert len(ids) == 36
    events = read_all(settings, "candidates")
    assert sorted(m.key() for m in events) == [b"bikes"] * len(ids)
    assert len(events) == len(ids)
    catalog.close()


def test_worker_outlives_its_database_and_resumes(
    make_settings, media, pg_url, pipeline
):
    from tests.conftest import PG_ADMIN_URL

    settings = make_settings(topics=True, database_url=pg_url)
    worker = PosterWorker(settings, JobRunner(settings, pipeline=pipeline))
    name = sa.make_url(pg_url).database
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    producer = EventProducer(settings)
    producer.send("video_published", video_event(media("astronaut.png"), "astro"))
    producer.flush()

    stop = threading.Event()
    thread = threading.Thread(target=worker.run, kwargs={"stop": stop})
    thread.start()
    deadline = time.monotonic() + 60
    while worker.unrecorded < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert worker.unrecorded >= 2 and thread.is_alive()
    assert worker.counts == {}  # nothing recorded, no offset committed

    # The database comes back (empty): migrate it, the worker carries on.
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    catalog = Catalog(pg_url)
    deadline = time.monotonic() + 90
    while not worker.counts and time.monotonic() < deadline:
        time.sleep(0.2)
    stop.set()
    thread.join(30)
    assert worker.counts == {"done": 1}
    with catalog.session() as session:
        job = session.scalars(sa.select(JobRow)).one()
        assert job.status == "done"
    catalog.close()
    worker.catalog.close()
