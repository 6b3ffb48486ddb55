"""Poster workers against the real broker and SQLite: good and bad videos.

Two workers in one consumer group consume real video-published events (the
test videos and photos, and broken files made from them); the module checks
what reached the catalog, the poster store and the topics.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from producers.events import EventProducer
from schemas.codec import get_codec
from tests.workers.topics import read_all
from workers.catalog import CandidateRow, JobRow
from workers.pipeline import PipelineConfig, PosterPipeline
from workers.review import ReviewError, ReviewService
from workers.runner import JobRunner, video_event
from workers.worker import PosterWorker

pytestmark = pytest.mark.slow

GOOD = {
    "bikes": ("bikes.mp4", "trailer"),
    "bunny": ("bigbuckbunny.mp4", "other"),
    "astronaut": ("astronaut.png", "other"),
    "kafka": ("franz-kafka.jpg", "other"),
}
BAD = {
    "truncated_mp4": "unreadable container",
    "truncated_avi": "truncated or corrupt video",
    "empty": "empty file",
    "text": "unreadable container",
    "missing": "no such file",
}


@pytest.fixture(scope="module")
def run(make_settings, media, bad_files):
    """Publish every event, run two workers until all are handled.

    Six frames a video at most keep the module short (bikes has six shots).
    """
    settings = make_settings(topics=True, poster_max_frames=6)
    producer = EventProducer(settings)
    sent = {}
    for video_id, (name, kind) in GOOD.items():
        sent[video_id] = video_event(media(name), video_id, kind=kind)
    for which in BAD:
        sent[which] = video_event(bad_files[which], which)
    sent["missing"]["uri"] = str(bad_files["missing"])
    for record in sent.values():
        producer.send("video_published", record)
    garbage = b"\xc3\x01 not an avro record"
    producer.send_raw(settings.topic("videos"), garbage, b"garbage")
    producer.flush()

    workers = [
        PosterWorker(settings, JobRunner(settings, pipeline=PosterPipeline(config)))
        for config in [PipelineConfig.from_settings(settings)] * 2
    ]
    stop = threading.Event()
    threads = [threading.Thread(target=w.run, kwargs={"stop": stop}) for w in workers]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 180
    total = len(sent) + 1
    while time.monotonic() < deadline:
        if sum(sum(w.counts.values()) for w in workers) >= total:
            break
        time.sleep(0.5)
    stop.set()
    for thread in threads:
        thread.join(30)
    return settings, sent, workers, garbage


def test_every_message_was_handled_once_by_the_group(run):
    settings, sent, workers, _ = run
    counts = {}
    for worker in workers:
        for status, n in worker.counts.items():
            counts[status] = counts.get(status, 0) + n
    assert counts == {"done": 4, "failed": 5, "dead_letter": 1}
    assert all(worker.assigned for worker in workers)
    assert set().union(*(w.assigned for w in workers)) == {0, 1, 2, 3}


@pytest.fixture(scope="module")
def catalog(run):
    from workers.catalog import Catalog

    catalog = Catalog(run[0].database_url)
    yield catalog
    catalog.close()


def test_good_videos_yield_reviewable_candidates(run, catalog):
    settings, sent, _, _ = run
    with catalog.session() as session:
        jobs = {j.video_id: j for j in session.scalars(sa.select(JobRow))}
        rows = session.scalars(sa.select(CandidateRow)).all()
    for video_id in GOOD:
        job = jobs[video_id]
        assert (job.status, job.reason, job.events_sent) == ("done", "", True)
    by_video = {}
    for row in rows:
        by_video.setdefault(row.video_id, []).append(row)
    assert set(by_video) == set(GOOD)
    # bikes: 6 frames (one per shot at least); 3 aspects x 2 crops per frame.
    assert len(by_video["bikes"]) == 6 * 6
    assert len(by_video["astronaut"]) == len(by_video["kafka"]) == 6
    for row in rows:
        assert row.status == "pending_review"
        image = Path(settings.poster_store) / row.image_path
        assert image.is_file() and image.stat().st_size > 1000
        assert row.image_url == f"{settings.poster_url_base}/{row.image_path}"
        assert (Path(settings.poster_store) / row.image_path).suffix == ".jpg"
        assert row.features["quality"] > 0 and row.features["sharpness"] > 0
        assert len(row.embedding_vector()) == 1024
        assert row.details["cast_presence"].startswith("unavailable")
        assert row.aspect in ("2:3", "16:9", "1:1")
    for row in by_video["astronaut"] + by_video["kafka"]:
        assert row.details["faces_whole"] == row.details["faces_total"] == 1


def test_bad_videos_fail_with_reason_and_dead_letters(run, catalog):
    settings, sent, _, garbage = run
    with catalog.session() as session:
        jobs = {j.video_id: j for j in session.scalars(sa.select(JobRow))}
        bad_rows = session.scalars(
            sa.select(CandidateRow).where(CandidateRow.video_id.in_(list(BAD)))
        ).all()
    assert bad_rows == []
    for which, reason in BAD.items():
        assert jobs[which].status == "failed"
        assert reason in jobs[which].reason
    letters = [
        get_codec().decode("dead_letter", m.value())
        for m in read_all(settings, "deadletter")
    ]
    assert len(letters) == len(BAD) + 1
    assert {letter["source"] for letter in letters} == {settings.topic("videos")}
    payloads = {bytes(letter["payload"]) for letter in letters}
    assert garbage in payloads
    for which in BAD:
        decoded = [
            get_codec().decode("video_published", letter["payload"])
            for letter in letters
            if letter["payload"] != garbage
        ]
        assert which in {d["video_id"] for d in decoded}
    assert any("undecodable" in letter["reason"] for letter in letters)


def test_candidate_events_match_the_catalog(run, catalog):
    settings, _, _, _ = run
    events = [
        get_codec().decode("poster_candidate", m.value())
        for m in read_all(settings, "candidates")
    ]
    with catalog.session() as session:
        ids = set(session.scalars(sa.select(CandidateRow.poster_id)))
    assert len(events) == len(ids)
    assert {e["poster_id"] for e in events} == ids
    assert all(len(e["embedding"]) == 1024 and e["features"] for e in events)
    assert read_all(settings, "posters") == []  # nothing approved by itself


def test_review_publishes_approved_posters_only(run, catalog):
    settings, _, _, _ = run
    service = ReviewService(catalog, settings)
    items, total = service.list_candidates(video_id="bikes", limit=100)
    assert total == len(items) > 3
    assert items == sorted(items, key=lambda c: -c["score"])
    first, second, third = (c["poster_id"] for c in items[:3])
    service.approve([first], reviewer="ana", reason="strong frame")
    service.reject([second], reviewer="ana", reason="blurry")
    with pytest.raises(ReviewError) as refused:
        service.approve([second], reviewer="ana")
    assert refused.value.status == 409
    with pytest.raises(ReviewError) as unreasoned:
        service.reject([third], reviewer="ana", reason=" ")
    assert unreasoned.value.status == 422
    approved = service.bulk_approve(
        "bob", "demo", video_id="astronaut", min_score=0.0, limit=2
    )
    assert len(approved) == 2
    published = [
        get_codec().decode("poster_published", m.value())
        for m in read_all(settings, "posters")
    ]
    expected = {first, *(c["poster_id"] for c in approved)}
    assert {p["poster_id"] for p in published} == expected
    assert second not in {p["poster_id"] for p in published}
    by_id = {p["poster_id"]: p for p in published}
    assert by_id[first]["reviewer"] == "ana" and len(by_id[first]["embedding"]) == 1024
    assert service.get(second)["status"] == "rejected"
    assert service.get(first)["published"] is True


def test_a_job_left_running_by_a_dead_worker_is_finished_once(
    make_settings, media, pipeline
):
    settings = make_settings(topics=True)
    runner = JobRunner(settings, pipeline=pipeline)
    record = video_event(media("astronaut.png"), "resumed")
    # A worker claimed the job and died before finishing it.
    from workers.jobs import claim_job

    claim_job(runner.catalog, record, "dead-worker", settings.poster_max_attempts)
    worker = PosterWorker(settings, runner)
    payload = get_codec().encode("video_published", record)
    assert worker.handle(payload) == "done"
    assert worker.handle(payload) == "skipped"  # redelivered: counts once
    with runner.catalog.session() as session:
        job = session.scalars(sa.select(JobRow)).one()
        assert (job.status, job.attempts) == ("done", 2)
        assert session.scalar(sa.select(sa.func.count(CandidateRow.poster_id))) == 6
    assert len(read_all(settings, "candidates")) == 6


def test_unwritable_store_fails_after_the_attempts(
    make_settings, media, pipeline, tmp_path
):
    blocker = tmp_path / "store"
    blocker.write_text("a file where the poster folder should be")
    settings = make_settings(topics=True, poster_store=blocker, poster_max_attempts=2)
    worker = PosterWorker(settings, JobRunner(settings, pipeline=pipeline))
    payload = get_codec().encode(
        "video_published", video_event(media("astronaut.png"), "x")
    )
    assert worker.handle(payload) == "failed"
    with worker.catalog.session() as session:
        job = session.scalars(sa.select(JobRow)).one()
        assert job.status == "failed" and "internal error" in job.reason
        assert job.attempts == 2
    letters = read_all(settings, "deadletter")
    assert len(letters) == 1


def auto_approval_run(settings, media, pipeline, video_id):
    """Run one job with automatic approval on; its candidates and the poster
    ids published."""
    worker = PosterWorker(settings, JobRunner(settings, pipeline=pipeline))
    payload = get_codec().encode(
        "video_published", video_event(media("astronaut.png"), video_id)
    )
    assert worker.handle(payload) == "done"
    with worker.catalog.session() as session:
        rows = session.scalars(sa.select(CandidateRow)).all()
    published = {
        get_codec().decode("poster_published", m.value())["poster_id"]
        for m in read_all(settings, "posters")
    }
    return rows, published


def test_auto_approval_publishes_above_the_score(make_settings, media, pipeline):
    settings = make_settings(topics=True, auto_approve_score=0.7)
    rows, published = auto_approval_run(settings, media, pipeline, "auto")
    high = {r.poster_id for r in rows if r.score >= 0.7}
    assert 0 < len(high) < len(rows)
    assert {r.poster_id for r in rows if r.status == "approved"} == high
    assert {r.reviewer for r in rows if r.status == "approved"} == {"auto"}
    assert published == high


def test_auto_approval_keeps_the_best_per_aspect(make_settings, media, pipeline):
    settings = make_settings(topics=True, auto_approve_score=0.0, auto_approve_top=1)
    rows, published = auto_approval_run(settings, media, pipeline, "top")
    aspects = {r.aspect for r in rows}
    assert len(rows) > len(aspects)  # more candidates than one per aspect ratio
    best = {
        aspect: max((r for r in rows if r.aspect == aspect), key=lambda r: r.score)
        for aspect in aspects
    }
    approved = {r.poster_id for r in rows if r.status == "approved"}
    assert approved == {r.poster_id for r in best.values()}
    assert published == approved
