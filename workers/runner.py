"""Run one video job end to end, without Kafka: claim, make, store, record.

The Kafka worker (:mod:`workers.worker`) and ``keyart posters run FILE`` both
go through :class:`JobRunner`, so a local run leaves exactly what a worker
would: a job row, poster files and ``pending_review`` candidates.

Examples
--------
>>> runner = JobRunner(settings)  # doctest: +SKIP
>>> outcome = runner.run(event, worker="cli")  # doctest: +SKIP
>>> outcome.status  # doctest: +SKIP
'done'
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from keyart.settings import Settings
from workers import metrics
from workers.catalog import Catalog, refused_by_database
from workers.jobs import Claim, claim_job, complete_job, fail_job
from workers.pipeline import Candidate, PipelineConfig, PosterPipeline
from workers.source import (
    IMAGE_SUFFIXES,
    BadInput,
    inside_roots,
    local_path,
    read_image,
)
from workers.store import PosterStore

__all__ = ["JobOutcome", "JobRunner", "candidate_record", "video_event"]

logger = logging.getLogger("workers")


@dataclass
class JobOutcome:
    """How a job ended: ``done``, ``failed``, ``skipped``, ``resend``, ``retry``.

    ``refused`` means the catalog would not store the event at all (no job
    row exists; ``job_id`` is 0): the worker dead-letters it.
    """

    status: str
    job_id: int
    reason: str = ""
    attempts: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)


def video_event(path: str | Path, video_id: str | None = None, **fields: Any) -> dict:
    """A ``video_published`` record for a local file (used by ``posters run``)."""
    path = Path(path)
    return {
        "event_id": fields.pop("event_id", uuid.uuid4().hex),
        "event_time": int(time.time() * 1000),
        "video_id": video_id or path.stem,
        "title": fields.pop("title", path.stem),
        "uri": str(path.resolve()),
        "kind": fields.pop("kind", "other"),
        "cast": fields.pop("cast", []),
        "tags": fields.pop("tags", []),
    }


def candidate_record(row: Mapping[str, Any], video_id: str) -> dict[str, Any]:
    """The ``poster_candidate`` event of a stored candidate row."""
    return {
        "event_id": uuid.uuid4().hex,
        "event_time": int(time.time() * 1000),
        "video_id": video_id,
        "poster_id": row["poster_id"],
        "image_url": row["image_url"],
        "aspect": row["aspect"],
        "width": row["width"],
        "height": row["height"],
        "frame_time_s": row["frame_time_s"],
        "score": row["score"],
        "features": {k: float(v) for k, v in row["features"].items()},
        "tags": list(row["tags"]),
        "embedding": np.frombuffer(row["embedding"], np.float32).tolist(),
    }


class JobRunner:
    """Makes and records the posters of video-published events."""

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog | None = None,
        pipeline: PosterPipeline | None = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog or Catalog(settings.database_url)
        self.pipeline = pipeline or PosterPipeline(
            PipelineConfig.from_settings(settings)
        )
        self.store = PosterStore(settings.poster_store, settings.poster_url_base)

    def _make(
        self,
        event: Mapping[str, Any],
        progress: Callable[[int], None] | None,
        on_start: Callable[[int], None] | None,
    ) -> tuple[list[Candidate], int]:
        """The candidates of the event's file and how many frames they came from."""
        path = inside_roots(local_path(event["uri"]), self.settings.video_roots)
        if path.suffix.lower() in IMAGE_SUFFIXES:
            image = read_image(path, self.pipeline.config.limits)
            found = self.pipeline.run_image(image, event["video_id"], event["event_id"])
            return found, 1
        result = self.pipeline.run_video(
            path,
            event["video_id"],
            event.get("kind", "other"),
            progress,
            on_start,
            salt=event["event_id"],
        )
        return result.candidates, len(result.selection.frames)

    def _store(
        self, video_id: str, candidates: list[Candidate]
    ) -> list[dict[str, Any]]:
        rows = []
        for candidate in candidates:
            relative, url = self.store.write(
                video_id, candidate.poster_id, candidate.image
            )
            thumb = self.store.write_thumbnail(
                video_id, candidate.poster_id, candidate.image
            )
            rows.append(
                {
                    "poster_id": candidate.poster_id,
                    "aspect": candidate.aspect,
                    "width": candidate.width,
                    "height": candidate.height,
                    "frame_index": candidate.frame_index,
                    "frame_time_s": candidate.frame_time_s,
                    "shot": candidate.shot,
                    "score": candidate.score,
                    "features": candidate.features,
                    "tags": candidate.tags,
                    "details": candidate.details,
                    "embedding": candidate.embedding.astype(np.float32).tobytes(),
                    "image_path": relative,
                    "image_url": url,
                    "thumbnail_url": thumb,
                    "status": "pending_review",
                }
            )
        return rows

    def run(
        self,
        event: Mapping[str, Any],
        worker: str,
        progress: Callable[[int], None] | None = None,
        on_start: Callable[[int], None] | None = None,
    ) -> JobOutcome:
        """Claim and process one event; never raises for bad input.

        ``retry`` means an unexpected error on an attempt below
        ``poster_max_attempts``: call again (the claim counts the attempt).
        """
        ids = {"video_id": event["video_id"], "event_id": event["event_id"]}
        try:
            claim = claim_job(
                self.catalog, event, worker, self.settings.poster_max_attempts
            )
        except Exception as error:
            refused = refused_by_database(error)
            if refused is None:
                raise  # unreachable catalog: the caller retries
            reason = f"catalog refused the video: {refused}"
            logger.warning("event %s refused: %s", ids["event_id"], reason, extra=ids)
            return JobOutcome("refused", 0, reason)
        if claim.action in ("skip", "resend"):
            status = "skipped" if claim.action == "skip" else "resend"
            return JobOutcome(status, claim.job_id, attempts=claim.attempts)
        if claim.action == "exhausted":
            with self.catalog.session() as session:
                from workers.catalog import JobRow

                job = session.get(JobRow, claim.job_id)
                reason = job.reason if job else "exhausted"
            return JobOutcome("failed", claim.job_id, reason, claim.attempts)
        with metrics.JOB_SECONDS.time():
            return self._process(event, claim, ids, progress, on_start)

    def _process(
        self,
        event: Mapping[str, Any],
        claim: Claim,
        ids: dict[str, str],
        progress: Callable[[int], None] | None,
        on_start: Callable[[int], None] | None,
    ) -> JobOutcome:
        try:
            candidates, frames = self._make(event, progress, on_start)
            rows = self._store(event["video_id"], candidates)
            complete_job(self.catalog, claim.job_id, rows)
        except BadInput as error:
            fail_job(self.catalog, claim.job_id, str(error))
            logger.warning("job %s failed: %s", claim.job_id, error, extra=ids)
            return JobOutcome("failed", claim.job_id, str(error), claim.attempts)
        except Exception as error:  # any fault must leave the job recorded
            refused = refused_by_database(error)
            reason = f"internal error: {type(error).__name__}: {error}"
            if refused is not None:  # the same on every attempt: fail now
                reason = f"catalog refused the candidates: {refused}"
            if refused is not None or (
                claim.attempts >= self.settings.poster_max_attempts
            ):
                fail_job(self.catalog, claim.job_id, reason)
                logger.error("job %s failed: %s", claim.job_id, reason, extra=ids)
                return JobOutcome("failed", claim.job_id, reason, claim.attempts)
            logger.warning(
                "job %s attempt %s: %s", claim.job_id, claim.attempts, reason, extra=ids
            )
            return JobOutcome("retry", claim.job_id, reason, claim.attempts)
        metrics.FRAMES.inc(frames)
        metrics.CANDIDATES.inc(len(rows))
        logger.info("job %s done: %s candidates", claim.job_id, len(rows), extra=ids)
        return JobOutcome("done", claim.job_id, "", claim.attempts, rows)
