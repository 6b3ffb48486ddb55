"""Catalog migrations and job bookkeeping on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from workers.catalog import Base, CandidateRow, Catalog, JobRow
from workers.jobs import claim_job, complete_job, fail_job, mark_events_sent


def event(event_id="e1", video_id="v1"):
    return {
        "event_id": event_id,
        "event_time": 0,
        "video_id": video_id,
        "title": "A title",
        "uri": "/nowhere.mp4",
        "kind": "trailer",
        "cast": ["Ana"],
        "tags": ["drama"],
    }


def row(poster_id, score=0.5):
    return {
        "poster_id": poster_id,
        "aspect": "2:3",
        "width": 200,
        "height": 300,
        "frame_index": 1,
        "frame_time_s": 0.04,
        "shot": 0,
        "score": score,
        "features": {"sharpness": 10.0},
        "tags": ["landscape"],
        "details": {"brisque": "unavailable"},
        "embedding": b"\x00\x00\x80?" * 4,
        "image_path": f"v1/{poster_id}.jpg",
        "image_url": f"/posters/v1/{poster_id}.jpg",
        "thumbnail_url": f"/posters/v1/{poster_id}.thumb.jpg",
        "status": "pending_review",
    }


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/sub/catalog.db"
    else:
        url = request.getfixturevalue("pg_url")
    catalog = Catalog(url)
    yield catalog
    catalog.close()


def test_migrations_match_the_models(catalog):
    with catalog.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        names = set(sa.inspect(conn).get_table_names())
    assert {"videos", "jobs", "candidates", "alembic_version"} <= names
    Catalog(str(catalog.engine.url.render_as_string(hide_password=False))).close()


def test_upgrade_keeps_rows_written_under_the_first_revision(tmp_path):
    from workers.catalog import make_engine, upgrade

    url = f"sqlite:///{tmp_path}/old.db"
    engine = make_engine(url)
    upgrade(engine, "0001")
    now = "2026-01-01 00:00:00"
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO videos VALUES ('v1', 't', 'u', 'other', '[]', '[]', "
                ":now, :now)"
            ),
            {"now": now},
        )
        conn.execute(
            sa.text(
                "INSERT INTO jobs (video_id, event_id, status, reason, attempts, "
                "worker, events_sent, created_at) "
                "VALUES ('v1', 'e1', 'done', '', 1, 'w', 1, :now)"
            ),
            {"now": now},
        )
        conn.execute(
            sa.text(
                "INSERT INTO candidates VALUES ('p1', 'v1', 1, '2:3', 2, 3, 0, 0.0, "
                "0, 0.5, '{}', '[]', '{}', x'', 'a.jpg', '/a.jpg', '/a.t.jpg', "
                "'approved', 'ana', '', 1, :now, NULL)"
            ),
            {"now": now},
        )
    engine.dispose()
    catalog = Catalog(url)  # upgrades to the newest revision
    with catalog.session() as session:
        kept = session.get(CandidateRow, "p1")
        assert (kept.status, kept.reviewer, kept.placements) == ("approved", "ana", [])
    catalog.close()


def test_a_job_counts_once(catalog):
    first = claim_job(catalog, event(), "w1", max_attempts=3)
    assert (first.action, first.attempts) == ("process", 1)
    # The worker died mid-video: the next owner resumes the same job.
    again = claim_job(catalog, event(), "w2", max_attempts=3)
    assert (again.job_id, again.action, again.attempts) == (first.job_id, "process", 2)
    complete_job(catalog, first.job_id, [row("p1", 0.9), row("p2", 0.4)])
    # Done but the candidate events never reached Kafka: resend them.
    assert claim_job(catalog, event(), "w3", 3).action == "resend"
    mark_events_sent(catalog, first.job_id)
    assert claim_job(catalog, event(), "w3", 3).action == "skip"
    with catalog.session() as session:
        rows = session.scalars(sa.select(CandidateRow)).all()
        assert sorted(r.poster_id for r in rows) == ["p1", "p2"]
        assert {r.status for r in rows} == {"pending_review"}
        assert rows[0].embedding_vector() == [1.0] * 4
        job = session.get(JobRow, first.job_id)
        assert (job.status, job.attempts, job.events_sent) == ("done", 2, True)


def test_a_job_that_never_finishes_is_failed(catalog):
    for attempt in (1, 2):
        assert claim_job(catalog, event("e9"), "w", 2).attempts == attempt
    exhausted = claim_job(catalog, event("e9"), "w", 2)
    assert exhausted.action == "exhausted"
    with catalog.session() as session:
        job = session.get(JobRow, exhausted.job_id)
        assert job.status == "failed" and "KEYART_POSTER_MAX_ATTEMPTS" in job.reason
    assert claim_job(catalog, event("e9"), "w", 2).action == "skip"


def test_failing_sweeps_candidates_and_keeps_reason(catalog):
    claim = claim_job(catalog, event("e2"), "w", 3)
    fail_job(catalog, claim.job_id, "empty file: x.mp4")
    with catalog.session() as session:
        job = session.get(JobRow, claim.job_id)
        assert (job.status, job.reason) == ("failed", "empty file: x.mp4")
        assert session.scalar(sa.select(sa.func.count(CandidateRow.poster_id))) == 0


def test_a_process_opening_the_catalog_logs_no_alembic_lines(tmp_path):
    """The poster worker and the gateway open the catalog as they start or
    serve review; at INFO its migration check must not add Alembic's lines
    to their logs, while the catalog is still migrated."""
    database = tmp_path / "catalog.db"
    code = (
        "from keyart.logs import configure; configure('INFO'); "
        "from workers.catalog import Catalog; "
        f"Catalog('sqlite:///{database}').close()"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "alembic" not in done.stderr
    tables = sa.inspect(sa.create_engine(f"sqlite:///{database}")).get_table_names()
    assert {"videos", "jobs", "candidates"} <= set(tables)
