"""A video-published event the catalog cannot store never blocks its partition.

Checked before any database work (workers.validate), and, for what still
gets through, told apart from an outage by the error the real PostgreSQL
raises: refused values fail the job and are dead-lettered at once; an
unreachable database keeps the message for a retry.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import sqlalchemy as sa

from producers.events import EventProducer
from schemas.codec import get_codec
from tests.workers.topics import read_all
from workers import metrics
from workers.catalog import Catalog, JobRow, refused_by_database
from workers.runner import JobRunner, video_event
from workers.validate import check_video_event
from workers.worker import PosterWorker

GOOD = {
    "event_id": "e-1",
    "event_time": 1_700_000_000_000,
    "video_id": "v-1",
    "title": "Le Voyage dans la Lune \N{ROCKET}\N{ZERO WIDTH JOINER}",
    "uri": "/videos/v-1.mp4",
    "kind": "trailer",
    "cast": ["Georges Méliès"],
    "tags": ["silent", "sci-fi"],
}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"video_id": ""}, "video_id is empty"),
        ({"video_id": "x" * 129}, "video_id has 129 characters, at most 128"),
        ({"video_id": "a\x00b"}, "video_id has control character U+0000 at 1"),
        ({"video_id": "a b"}, "video_id has ' '"),
        ({"video_id": "été"}, "video_id has 'é'"),
        ({"event_id": ""}, "event_id is empty"),
        ({"event_id": "e" * 201}, "event_id has 201 characters, at most 200"),
        ({"title": "t" * 501}, "title has 501 characters, at most 500"),
        ({"title": "one\ntwo"}, "title has control character U+000A at 3"),
        ({"uri": ""}, "uri is empty"),
        ({"uri": "/v\x1b.mp4"}, "uri has control character U+001B"),
        ({"cast": ["ok", "\x00"]}, "cast[1] has control character U+0000"),
        ({"tags": [""]}, "tags[0] is empty"),
        ({"tags": ["t"] * 101}, "tags has 101 entries, at most 100"),
        ({"tags": ["t" * 201]}, "tags[0] has 201 characters, at most 200"),
        ({"event_time": -1}, "event_time -1 is negative"),
    ],
)
def test_bad_fields_are_refused_with_the_field_named(change, reason):
    problem = check_video_event({**GOOD, **change})
    assert problem is not None
    assert problem.startswith("invalid video_published: ")
    assert reason in problem


def test_good_events_pass_up_to_the_bounds():
    assert check_video_event(GOOD) is None
    longest = {
        **GOOD,
        "video_id": "a" * 128,
        "event_id": "e" * 200,
        "title": "t" * 500,
        "tags": ["t" * 200] * 100,
    }
    assert check_video_event(longest) is None
    assert check_video_event({**GOOD, "video_id": "A.b_c:d@e/f+g=h~i-9"}) is None


def test_database_errors_are_told_apart(pg_url):
    catalog = Catalog(pg_url)
    try:
        with pytest.raises(sa.exc.DataError) as too_long:
            with catalog.session() as session, session.begin():
                session.execute(
                    sa.text(
                        "INSERT INTO videos (video_id, title, uri, kind, "
                        '"cast", tags, created_at, updated_at) VALUES '
                        "(:v, '', '', 'other', '[]', '[]', now(), now())"
                    ),
                    {"v": "x" * 300},
                )
        assert "value too long" in refused_by_database(too_long.value)
        with pytest.raises(sa.exc.DataError) as nul:
            with catalog.session() as session, session.begin():
                session.execute(sa.text("SELECT :v"), {"v": "a\x00b"})
        assert "NUL" in refused_by_database(nul.value)
        with pytest.raises(sa.exc.ProgrammingError) as missing:
            with catalog.session() as session:
                session.execute(sa.text("SELECT * FROM no_such_table"))
        assert refused_by_database(missing.value) is None  # a restore may fix it
    finally:
        catalog.close()
    closed = sa.make_url(pg_url).set(port=1)
    engine = sa.create_engine(closed, connect_args={"connect_timeout": 2})
    with pytest.raises(sa.exc.OperationalError) as unreachable:
        with engine.connect():
            pass
    engine.dispose()
    assert refused_by_database(unreachable.value) is None
    assert refused_by_database(RuntimeError("anything else")) is None


def _metric(counter, **labels) -> float:
    return (counter.labels(**labels) if labels else counter)._value.get()


@pytest.mark.slow
def test_poison_events_are_dead_lettered_and_the_good_one_behind_them_is_made(
    make_settings, media, pg_url, pipeline
):
    settings = make_settings(
        topics=True,
        database_url=pg_url,
        poster_group_id="poison-" + uuid.uuid4().hex[:8],
    )
    runner = JobRunner(settings, pipeline=pipeline)
    # Two refusals only the database knows about (the checks pass them):
    # a real CHECK constraint on a title, and one on the candidates of a video.
    with runner.catalog.engine.begin() as conn:
        conn.execute(
            sa.text(
                "ALTER TABLE videos ADD CONSTRAINT no_banned_title "
                "CHECK (title <> 'banned title')"
            )
        )
        conn.execute(
            sa.text(
                "ALTER TABLE candidates ADD CONSTRAINT no_posters_for "
                "CHECK (video_id <> 'no-posters')"
            )
        )
    photo = media("astronaut.png")
    long_id = "long-" + "x" * 300
    records = [
        video_event(photo, long_id),
        video_event(photo, "nul\x00id"),
        {**video_event(photo), "video_id": ""},
        video_event(photo, "banned", title="banned title"),
        video_event(photo, "no-posters"),
        video_event(photo, "after-poison"),
    ]
    codec = get_codec()
    producer = EventProducer(settings)
    for record in records:  # one key: one partition, in this order
        payload = codec.encode("video_published", record)
        producer.send_raw(settings.topic("videos"), payload, b"poison")
    producer.flush()

    before = {
        why: _metric(metrics.DEAD_LETTERS, reason=why)
        for why in ("invalid", "catalog", "job_failed")
    }
    done_before = _metric(metrics.JOBS, outcome="done")
    worker = PosterWorker(settings, runner)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, kwargs={"stop": stop})
    thread.start()
    deadline = time.monotonic() + 120
    while sum(worker.counts.values()) < len(records) and time.monotonic() < deadline:
        time.sleep(0.2)
    stop.set()
    thread.join(30)

    assert worker.counts == {"dead_letter": 4, "failed": 1, "done": 1}
    assert worker.unrecorded == 0  # nothing was mistaken for an outage
    letters = [
        codec.decode("dead_letter", m.value()) for m in read_all(settings, "deadletter")
    ]
    by_video = {
        codec.decode("video_published", letter["payload"])["video_id"]: letter
        for letter in letters
    }
    assert len(letters) == len(by_video) == 5
    reasons = {video: letter["reason"] for video, letter in by_video.items()}
    assert "video_id has 305 characters, at most 128" in reasons[long_id]
    assert "video_id has control character U+0000" in reasons["nul\x00id"]
    assert "video_id is empty" in reasons[""]
    assert reasons["banned"].startswith("catalog refused the video: CheckViolation")
    assert "catalog refused the candidates: CheckViolation" in reasons["no-posters"]
    for letter in letters:
        assert letter["source"] == settings.topic("videos")
        assert letter["key"] == b"poison"
        assert letter["partition"] >= 0 and letter["offset"] >= 0

    with runner.catalog.session() as session:
        jobs = {j.video_id: j for j in session.scalars(sa.select(JobRow))}
    assert set(jobs) == {"no-posters", "after-poison"}
    assert (jobs["no-posters"].status, jobs["no-posters"].attempts) == ("failed", 1)
    assert (jobs["after-poison"].status, jobs["after-poison"].events_sent) == (
        "done",
        True,
    )
    candidates = [
        codec.decode("poster_candidate", m.value())
        for m in read_all(settings, "candidates")
    ]
    assert {c["video_id"] for c in candidates} == {"after-poison"}
    assert len(candidates) == 6

    assert _metric(metrics.DEAD_LETTERS, reason="invalid") - before["invalid"] == 3
    assert _metric(metrics.DEAD_LETTERS, reason="catalog") - before["catalog"] == 1
    assert (
        _metric(metrics.DEAD_LETTERS, reason="job_failed") - before["job_failed"] == 1
    )
    assert _metric(metrics.JOBS, outcome="done") - done_before == 1
    runner.catalog.close()
