"""Job bookkeeping that makes a video job count once, whoever runs it.

A job is the row ``(video_id, event_id)``. Its life:

- :func:`claim_job` creates it ``running`` (attempts 1), or finds it:
  ``done`` and its events sent -> ``skip``; ``done`` but its events not sent
  (the worker died between the database commit and Kafka) -> ``resend``;
  ``failed`` -> ``skip``; still ``running`` (a worker died mid-video, or a
  rebalance handed the message over) -> attempts + 1 and ``process`` again,
  or ``exhausted`` once ``max_attempts`` starts have not finished it.
- :func:`complete_job` writes every candidate and marks the job ``done`` in
  one transaction, after first sweeping any candidate row of that job: a
  job's candidates are all there or none is, so a half-made job can never be
  reviewed or approved.
- :func:`fail_job` marks it ``failed`` with the reason.

Examples
--------
>>> from workers.jobs import claim_job  # doctest: +SKIP
>>> claim_job(catalog, event, "worker-1", max_attempts=3).action  # doctest: +SKIP
'process'
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from workers.catalog import CandidateRow, Catalog, JobRow, VideoRow, utcnow

__all__ = ["Claim", "claim_job", "complete_job", "fail_job", "mark_events_sent"]

logger = logging.getLogger("workers")


@dataclass(frozen=True)
class Claim:
    """What the worker should do with a video-published event."""

    job_id: int
    action: str  # process, resend, skip or exhausted
    attempts: int
    status: str


def _upsert_video(session: Any, event: Mapping[str, Any]) -> None:
    video = session.get(VideoRow, event["video_id"])
    if video is None:
        video = VideoRow(video_id=event["video_id"])
        session.add(video)
    video.title = event.get("title", "")
    video.uri = event.get("uri", "")
    video.kind = event.get("kind", "other")
    video.cast = list(event.get("cast", []))
    video.tags = list(event.get("tags", []))


def claim_job(
    catalog: Catalog, event: Mapping[str, Any], worker: str, max_attempts: int
) -> Claim:
    """Find or create the job of ``event`` and decide what to do with it."""
    for _ in range(2):
        try:
            return _claim(catalog, event, worker, max_attempts)
        except IntegrityError:
            continue  # another worker inserted the same job first: read it
    # A third in a row is no race but a constraint this event breaks: it raises.
    return _claim(catalog, event, worker, max_attempts)


def _claim(
    catalog: Catalog, event: Mapping[str, Any], worker: str, max_attempts: int
) -> Claim:
    with catalog.session() as session, session.begin():
        _upsert_video(session, event)
        session.flush()
        job = session.scalars(
            sa.select(JobRow)
            .where(JobRow.video_id == event["video_id"])
            .where(JobRow.event_id == event["event_id"])
            .with_for_update()
        ).one_or_none()
        if job is None:
            job = JobRow(
                video_id=event["video_id"],
                event_id=event["event_id"],
                status="running",
                reason="",
                attempts=1,
                worker=worker,
                events_sent=False,
                started_at=utcnow(),
            )
            session.add(job)
            session.flush()
            return Claim(job.job_id, "process", 1, job.status)
        if job.status == "done":
            action = "skip" if job.events_sent else "resend"
            return Claim(job.job_id, action, job.attempts, job.status)
        if job.status == "failed":
            return Claim(job.job_id, "skip", job.attempts, job.status)
        if job.attempts >= max_attempts:
            job.status = "failed"
            job.reason = (
                f"gave up after {job.attempts} unfinished attempts "
                "(KEYART_POSTER_MAX_ATTEMPTS)"
            )
            job.finished_at = utcnow()
            return Claim(job.job_id, "exhausted", job.attempts, job.status)
        job.attempts += 1
        job.worker = worker
        job.started_at = utcnow()
        logger.warning(
            "job %s restarted (attempt %s)",
            job.job_id,
            job.attempts,
            extra={"job_id": job.job_id, "video_id": job.video_id},
        )
        return Claim(job.job_id, "process", job.attempts, job.status)


def complete_job(
    catalog: Catalog, job_id: int, rows: Sequence[Mapping[str, Any]]
) -> None:
    """Write a job's candidates and mark it done, in one transaction."""
    with catalog.session() as session, session.begin():
        job = session.get(JobRow, job_id, with_for_update=True)
        if job is None:
            raise KeyError(f"no job {job_id}")
        session.execute(sa.delete(CandidateRow).where(CandidateRow.job_id == job_id))
        ids = [row["poster_id"] for row in rows]
        # A poster id is stable per video, frame and aspect: a second event
        # for the same video replaces the candidates nobody reviewed yet.
        if ids:
            session.execute(
                sa.delete(CandidateRow)
                .where(CandidateRow.poster_id.in_(ids))
                .where(CandidateRow.status == "pending_review")
            )
            taken = set(
                session.scalars(
                    sa.select(CandidateRow.poster_id).where(
                        CandidateRow.poster_id.in_(ids)
                    )
                )
            )
            rows = [row for row in rows if row["poster_id"] not in taken]
        for row in rows:
            session.add(CandidateRow(job_id=job_id, video_id=job.video_id, **row))
        job.status = "done"
        job.reason = ""
        job.finished_at = utcnow()


def fail_job(catalog: Catalog, job_id: int, reason: str) -> None:
    """Mark a job failed with ``reason``; its candidates (if any) are removed."""
    with catalog.session() as session, session.begin():
        job = session.get(JobRow, job_id, with_for_update=True)
        if job is None:
            raise KeyError(f"no job {job_id}")
        session.execute(sa.delete(CandidateRow).where(CandidateRow.job_id == job_id))
        job.status = "failed"
        job.reason = reason[:2000].replace("\x00", "\\x00")  # PostgreSQL text
        job.finished_at = utcnow()


def mark_events_sent(catalog: Catalog, job_id: int) -> None:
    """Record that a done job's candidate events reached Kafka."""
    with catalog.session() as session, session.begin():
        session.execute(
            sa.update(JobRow).where(JobRow.job_id == job_id).values(events_sent=True)
        )
