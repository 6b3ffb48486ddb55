"""HTTP endpoints of poster review (a FastAPI router).

The gateway mounts :data:`router` under ``/admin/review`` behind the admin
token. Endpoints (paths relative to the mount point):

==========================================  =====================================
``GET  /candidates?status=&video_id=``      candidates (pending by default), best
``&min_score=&limit=&offset=``              score first, with image and thumbnail
                                            URLs, features and tags
``GET  /candidates/{poster_id}``            one candidate, with its embedding
``POST /candidates/{poster_id}/approve``    ``{"reviewer", "reason",
                                            "placements"}``: approve and publish
                                            it as an arm (placements optional)
``POST /candidates/{poster_id}/reject``     ``{"reviewer", "reason"}`` (reason
                                            required): reject, publish nothing
``POST /bulk-approve``                      ``{"reviewer", "reason", "video_id",
                                            "min_score", "limit"}`` or
                                            ``{"reviewer", "poster_ids": [...]}``
==========================================  =====================================

Errors: 404 unknown candidate, 409 wrong state (approving a rejected one), 422
invalid body (empty reviewer, rejection without a reason).

The service comes from ``app.state.review_service`` when the application set
one, else it is built once from ``app.state.gateway.settings`` (or
``app.state.settings``, or the process settings).

Examples
--------
>>> from fastapi import FastAPI
>>> from workers.review_api import router
>>> app = FastAPI()
>>> app.include_router(router, prefix="/admin/review")
"""

from __future__ import annotations

import threading
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from workers.review import ReviewError, ReviewService

__all__ = ["Approval", "BulkApproval", "Decision", "review_service", "router"]

router = APIRouter(tags=["review"])
_lock = threading.Lock()


class Decision(BaseModel):
    """Who decides and why.

    This and the bodies built on it refuse unknown fields: a misspelt
    ``video_id`` or ``placements`` would otherwise approve more than asked.
    Numbers are strict and finite: ``"5"`` is no limit, NaN no score.
    """

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    reviewer: str = Field(..., min_length=1, max_length=200)
    reason: str = Field("", max_length=2000)


class Approval(Decision):
    """An approval, optionally limited to some placements of the aspect."""

    placements: list[str] = Field(default_factory=list, max_length=50)


class BulkApproval(Decision):
    """Approve listed candidates, or the best pending ones matching filters."""

    poster_ids: list[str] | None = Field(
        None,
        min_length=1,
        max_length=1000,
        description="Candidates to approve; leave out to approve by the filters "
        "(an empty list is refused rather than read as 'every candidate').",
    )
    video_id: str | None = None
    min_score: float | None = Field(None, ge=0)
    limit: int = Field(100, ge=1, le=1000)


def review_service(request: Request) -> ReviewService:
    """The application's review service, built on first use."""
    state = request.app.state
    service = getattr(state, "review_service", None)
    if service is not None:
        return service
    with _lock:
        service = getattr(state, "review_service", None)
        if service is None:
            from keyart.settings import get_settings
            from workers.catalog import Catalog

            gateway = getattr(state, "gateway", None)
            settings = (
                gateway.settings
                if gateway is not None
                else getattr(state, "settings", None) or get_settings()
            )
            service = ReviewService(Catalog(settings.database_url), settings)
            state.review_service = service
    return service


class FieldRefused(HTTPException):
    """A refusal of one request field: ``detail`` is ``field: message``, and
    the gateway answers it in the shape of its other refusals."""

    def __init__(self, field: str, message: str, status: int = 422) -> None:
        super().__init__(status, f"{field}: {message}")
        self.field = field
        self.message = message


def _http(error: ReviewError) -> HTTPException:
    if error.field is not None:
        return FieldRefused(error.field, error.message, error.status)
    return HTTPException(error.status, str(error))


@router.get("/candidates")
def list_candidates(
    status: str = Query(
        "pending_review", pattern="^(pending_review|approved|rejected)$"
    ),
    video_id: str | None = None,
    min_score: float | None = Query(None, allow_inf_nan=False),
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=10**9),
    service: ReviewService = Depends(review_service),
) -> dict[str, Any]:
    """Candidates in a status, best score first."""
    items, total = service.list_candidates(status, video_id, min_score, limit, offset)
    return {"total": total, "limit": limit, "offset": offset, "candidates": items}


@router.get("/candidates/{poster_id}")
def get_candidate(
    poster_id: str, service: ReviewService = Depends(review_service)
) -> dict[str, Any]:
    """One candidate, embedding included."""
    try:
        return service.get(poster_id)
    except ReviewError as error:
        raise _http(error) from None


@router.post("/candidates/{poster_id}/approve")
def approve(
    poster_id: str, body: Approval, service: ReviewService = Depends(review_service)
) -> dict[str, Any]:
    """Approve one candidate; it is published as an arm of its video."""
    try:
        service.approve([poster_id], body.reviewer, body.reason, body.placements)
        return service.get(poster_id)
    except ReviewError as error:
        raise _http(error) from None


@router.post("/candidates/{poster_id}/reject")
def reject(
    poster_id: str, body: Decision, service: ReviewService = Depends(review_service)
) -> dict[str, Any]:
    """Reject one candidate (a reason is required); nothing is published."""
    try:
        service.reject([poster_id], body.reviewer, body.reason)
        return service.get(poster_id)
    except ReviewError as error:
        raise _http(error) from None


@router.post("/bulk-approve")
def bulk_approve(
    body: BulkApproval, service: ReviewService = Depends(review_service)
) -> dict[str, Any]:
    """Approve many candidates at once."""
    try:
        if body.poster_ids is not None:
            approved = service.approve(body.poster_ids, body.reviewer, body.reason)
        else:
            approved = service.bulk_approve(
                body.reviewer, body.reason, body.video_id, body.min_score, body.limit
            )
    except ReviewError as error:
        raise _http(error) from None
    return {"approved": len(approved), "poster_ids": [c["poster_id"] for c in approved]}
