"""Review of poster candidates: the one service the CLI and the HTTP API share.

A candidate starts ``pending_review``. Approving it (a person, or the
automatic rule when ``auto_approve_score`` is set) makes it ``approved`` and
emits a ``poster_published`` event on ``settings.topic("posters")``: from then
on the poster is an arm of its video. Rejecting it makes it ``rejected`` and
emits nothing. Only candidates of finished jobs exist in the catalog, so no
partial job's candidate can be approved.

The event is sent after the database commit; a candidate whose event did not
reach Kafka keeps ``published = false`` and approving it again re-sends it.

Examples
--------
>>> service = ReviewService(catalog, settings)  # doctest: +SKIP
>>> service.approve(["3f2a"], reviewer="ana", reason="close-up")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from keyart.settings import Settings
from workers.catalog import CandidateRow, Catalog, JobRow, utcnow

__all__ = ["ReviewError", "ReviewService", "candidate_view", "published_record"]

logger = logging.getLogger("workers")


class ReviewError(ValueError):
    """A review request that cannot be done; ``status`` is the HTTP code and
    ``field`` the request field at fault, when one is."""

    def __init__(self, message: str, status: int, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.message = message
        self.status = status
        self.field = field


def candidate_view(row: CandidateRow, with_embedding: bool = False) -> dict[str, Any]:
    """A candidate as plain JSON-ready data (what list and get return)."""
    view: dict[str, Any] = {
        "poster_id": row.poster_id,
        "video_id": row.video_id,
        "job_id": row.job_id,
        "status": row.status,
        "aspect": row.aspect,
        "width": row.width,
        "height": row.height,
        "frame_index": row.frame_index,
        "frame_time_s": row.frame_time_s,
        "score": row.score,
        "image_url": row.image_url,
        "thumbnail_url": row.thumbnail_url,
        "features": row.features,
        "tags": row.tags,
        "details": row.details,
        "reviewer": row.reviewer,
        "reason": row.reason,
        "placements": list(row.placements or []),
        "published": row.published,
        "created_at": row.created_at.isoformat() if row.created_at else None,
        "reviewed_at": row.reviewed_at.isoformat() if row.reviewed_at else None,
    }
    if with_embedding:
        view["embedding"] = row.embedding_vector()
    return view


def published_record(row: CandidateRow) -> dict[str, Any]:
    """The ``poster_published`` event of an approved candidate."""
    return {
        "event_id": uuid.uuid4().hex,
        "event_time": int(time.time() * 1000),
        "video_id": row.video_id,
        "poster_id": row.poster_id,
        "image_url": row.image_url,
        "aspect": row.aspect,
        "placements": list(row.placements or []),
        "features": {k: float(v) for k, v in row.features.items()},
        "tags": list(row.tags),
        "embedding": row.embedding_vector(),
        "reviewer": row.reviewer,
        "retired": False,
    }


def _check_placements(aspect: str, placements: Sequence[str]) -> None:
    """Refuse placements that do not exist or do not have the poster's aspect."""
    try:
        from gateway.placements import PLACEMENTS
    except ImportError:  # a workers-only install: names cannot be checked
        return
    for name in placements:
        placement = PLACEMENTS.get(name)
        if placement is None:
            raise ReviewError(
                f"unknown placement {name!r}; known: {sorted(PLACEMENTS)}",
                422,
                "placements",
            )
        if placement.aspect != aspect:
            raise ReviewError(
                f"placement {name!r} shows {placement.aspect} posters, "
                f"this poster is {aspect}",
                422,
                "placements",
            )


class ReviewService:
    """List, approve and reject candidates.

    Parameters
    ----------
    catalog
        The catalog database.
    settings
        Broker and topic prefix for the ``poster_published`` events.
    producer
        An :class:`producers.events.EventProducer`; made on first approval.
    publish_timeout_s
        How long an approval waits for the broker to acknowledge its events.
    """

    def __init__(
        self,
        catalog: Catalog,
        settings: Settings,
        producer: Any | None = None,
        publish_timeout_s: float = 30.0,
    ) -> None:
        self.catalog = catalog
        self.settings = settings
        self._producer = producer
        self.publish_timeout_s = publish_timeout_s

    @property
    def producer(self) -> Any:
        if self._producer is None:
            from producers.events import EventProducer

            # log_level 2: no librdkafka line per connection retry; an
            # approval the broker did not take says so in its ReviewError.
            self._producer = EventProducer(self.settings, config={"log_level": 2})
        return self._producer

    def list_candidates(
        self,
        status: str = "pending_review",
        video_id: str | None = None,
        min_score: float | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[dict[str, Any]], int]:
        """Candidates in ``status`` (best score first) and how many there are."""
        query = sa.select(CandidateRow).where(CandidateRow.status == status)
        if video_id is not None:
            query = query.where(CandidateRow.video_id == video_id)
        if min_score is not None:
            query = query.where(CandidateRow.score >= min_score)
        with self.catalog.session() as session:
            total = session.scalar(
                sa.select(sa.func.count()).select_from(query.subquery())
            )
            rows = session.scalars(
                query.order_by(CandidateRow.score.desc(), CandidateRow.poster_id)
                .limit(limit)
                .offset(offset)
            ).all()
            return [candidate_view(row) for row in rows], int(total or 0)

    def get(self, poster_id: str) -> dict[str, Any]:
        """One candidate with its embedding.

        Raises
        ------
        ReviewError
            404 when there is no such candidate.
        """
        with self.catalog.session() as session:
            row = session.get(CandidateRow, poster_id)
            if row is None:
                raise ReviewError(f"no candidate {poster_id!r}", 404)
            return candidate_view(row, with_embedding=True)

    def _decide(
        self,
        poster_ids: Sequence[str],
        status: str,
        reviewer: str,
        reason: str,
        placements: Sequence[str] = (),
    ) -> list[CandidateRow]:
        if not reviewer.strip():
            raise ReviewError("must not be empty", 422, "reviewer")
        if status == "rejected" and not reason.strip():
            raise ReviewError("a rejection needs one", 422, "reason")
        changed = []
        with self.catalog.session() as session, session.begin():
            rows = {
                row.poster_id: row
                for row in session.scalars(
                    sa.select(CandidateRow)
                    .where(CandidateRow.poster_id.in_(list(poster_ids)))
                    .with_for_update()
                )
            }
            missing = [pid for pid in poster_ids if pid not in rows]
            if missing:
                raise ReviewError(f"no candidate {missing[0]!r}", 404)
            for poster_id in dict.fromkeys(poster_ids):
                row = rows[poster_id]
                job = session.get(JobRow, row.job_id)
                if job is None or job.status != "done":
                    raise ReviewError(f"candidate {poster_id!r}: job not finished", 409)
                if row.status == status:
                    if status == "approved" and not row.published:
                        changed.append(row)  # its event did not go out: resend
                    continue
                if row.status != "pending_review":
                    raise ReviewError(
                        f"candidate {poster_id!r} is already {row.status}", 409
                    )
                if placements:
                    _check_placements(row.aspect, placements)
                    row.placements = list(placements)
                row.status = status
                row.reviewer = reviewer
                row.reason = reason
                row.reviewed_at = utcnow()
                changed.append(row)
        return changed

    def approve(
        self,
        poster_ids: Sequence[str],
        reviewer: str,
        reason: str = "",
        placements: Sequence[str] = (),
    ) -> list[dict[str, Any]]:
        """Approve candidates and publish each as an arm.

        ``placements`` limits the posters to those placements (each must have
        the poster's aspect); empty allows every placement of its aspect.

        Raises
        ------
        ReviewError
            404 for an unknown id, 409 for a rejected one, 422 without
            reviewer or for a placement of another aspect, 503 when the
            broker did not take the events (the candidates stay approved but
            unpublished; approving them again sends the events again).
        """
        from producers.events import ProduceError

        rows = self._decide(poster_ids, "approved", reviewer, reason, placements)
        if rows:
            for row in rows:
                self.producer.send("poster_published", published_record(row))
            try:
                self.producer.flush(self.publish_timeout_s)
            except ProduceError as error:
                raise ReviewError(
                    f"{len(rows)} posters approved in the catalog, but their "
                    f"poster_published events did not reach the broker at "
                    f"{self.settings.kafka_bootstrap} (KEYART_KAFKA_BOOTSTRAP): "
                    f"{error}; approve the same ids again once it answers, and "
                    "the events are sent again",
                    503,
                ) from None
            with self.catalog.session() as session, session.begin():
                session.execute(
                    sa.update(CandidateRow)
                    .where(CandidateRow.poster_id.in_([r.poster_id for r in rows]))
                    .values(published=True)
                )
            for row in rows:
                row.published = True
            logger.info("approved %s posters", len(rows), extra={"reviewer": reviewer})
        return [candidate_view(row) for row in rows]

    def reject(
        self, poster_ids: Sequence[str], reviewer: str, reason: str
    ) -> list[dict[str, Any]]:
        """Reject candidates; nothing is published.

        Raises
        ------
        ReviewError
            404 for an unknown id, 409 for an approved one, 422 without a
            reviewer or a reason.
        """
        rows = self._decide(poster_ids, "rejected", reviewer, reason)
        logger.info("rejected %s posters", len(rows), extra={"reviewer": reviewer})
        return [candidate_view(row) for row in rows]

    def bulk_approve(
        self,
        reviewer: str,
        reason: str = "",
        video_id: str | None = None,
        min_score: float | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Approve the best ``limit`` pending candidates matching the filters."""
        query = sa.select(CandidateRow.poster_id).where(
            CandidateRow.status == "pending_review"
        )
        if video_id is not None:
            query = query.where(CandidateRow.video_id == video_id)
        if min_score is not None:
            query = query.where(CandidateRow.score >= min_score)
        with self.catalog.session() as session:
            ids = list(
                session.scalars(query.order_by(CandidateRow.score.desc()).limit(limit))
            )
        return self.approve(ids, reviewer, reason) if ids else []
