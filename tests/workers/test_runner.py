"""One job end to end without Kafka: ids, files and a second event."""

from __future__ import annotations

from pathlib import Path

import cv2
import sqlalchemy as sa

from workers.catalog import CandidateRow
from workers.review import ReviewService
from workers.runner import JobRunner, video_event


def test_ids_repeat_per_event_and_differ_across_events(make_settings, media, pipeline):
    settings = make_settings(topics=True)
    runner = JobRunner(settings, pipeline=pipeline)
    first = video_event(media("astronaut.png"), "astro")
    outcome = runner.run(first, "t")
    assert outcome.status == "done"
    first_ids = {row["poster_id"] for row in outcome.rows}
    again = pipeline.run_image(
        cv2.imread(str(media("astronaut.png"))), "astro", first["event_id"]
    )
    assert {c.poster_id for c in again} == first_ids

    approved = sorted(first_ids)[0]
    ReviewService(runner.catalog, settings).approve([approved], reviewer="ana")
    path = Path(settings.poster_store) / next(
        r["image_path"] for r in outcome.rows if r["poster_id"] == approved
    )
    before = path.read_bytes()

    second = runner.run(video_event(media("astronaut.png"), "astro"), "t")
    assert second.status == "done"
    assert not first_ids & {row["poster_id"] for row in second.rows}
    assert path.read_bytes() == before
    with runner.catalog.session() as session:
        rows = session.scalars(sa.select(CandidateRow)).all()
    assert len(rows) == 12
    assert {r.poster_id for r in rows if r.status == "approved"} == {approved}
    runner.catalog.close()


def test_a_video_outside_the_video_roots_fails_its_job(
    make_settings, media, pipeline, tmp_path
):
    import shutil

    inside = tmp_path / "videos"
    inside.mkdir()
    photo = inside / "astronaut.png"
    shutil.copy(media("astronaut.png"), photo)
    (inside / "escape.png").symlink_to(media("chelsea.png"))
    settings = make_settings(
        topics=True, video_roots=f" {tmp_path / 'other'} , {inside}"
    )
    runner = JobRunner(settings, pipeline=pipeline)
    try:
        outside = runner.run(video_event(media("chelsea.png"), "cat"), "t")
        assert outside.status == "failed"
        assert "KEYART_VIDEO_ROOTS" in outside.reason
        # Events may name a path as given: the check resolves it first.
        event = video_event(photo, "dots")
        dotted = runner.run({**event, "uri": f"{inside}/../{photo.name}"}, "t")
        assert dotted.status == "failed" and "KEYART_VIDEO_ROOTS" in dotted.reason
        event = video_event(photo, "link")
        linked = runner.run({**event, "uri": str(inside / "escape.png")}, "t")
        assert linked.status == "failed" and "KEYART_VIDEO_ROOTS" in linked.reason
        assert runner.run(video_event(photo, "astro"), "t").status == "done"
    finally:
        runner.catalog.close()
