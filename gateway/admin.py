"""Administrative endpoints: read and update rules and experiments.

Every administrative route requires ``Authorization: Bearer <token>`` equal
to the ``admin_token`` setting (compared in constant time). With the setting
empty, administration is off and every such route answers 403.

An update carries the version it was based on; when another update landed in
between, the answer is 409 and nothing is written.
"""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import APIRouter, Depends, Header, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from gateway.config import (
    ConfigConflict,
    ExperimentsDocument,
    RuleConfig,
    RulesDocument,
    store_document,
)
from gateway.models import REFUSED
from gateway.placements import PLACEMENTS

__all__ = ["require_admin", "router"]


def require_admin(
    request: Request,
    authorization: str = Header(
        "", description="``Bearer <KEYART_ADMIN_TOKEN>``", include_in_schema=True
    ),
) -> None:
    """Refuse unless the bearer token equals the admin token."""
    expected = request.app.state.gateway.settings.admin_token
    if not expected:
        raise HTTPException(
            403, "administration is off: set KEYART_ADMIN_TOKEN to enable it"
        )
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.encode(), expected.encode()
    ):
        raise HTTPException(
            401,
            "authorization: expected 'Bearer <admin token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )


router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[Depends(require_admin)],
    responses=REFUSED,
)


class RulesUpdate(BaseModel):
    """A new rules document, based on ``expected_version``.

    Unknown fields are refused: a misspelt ``expected_version`` would
    otherwise skip the conflict check and overwrite another update. Numbers
    are strict: ``true`` is not version 1.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    expected_version: int | None = Field(
        None, description="Version read before editing; null skips the check."
    )
    document: RulesDocument


class ExperimentsUpdate(BaseModel):
    """A new experiments document, based on ``expected_version`` (unknown
    fields and loose numbers refused, as in :class:`RulesUpdate`)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    expected_version: int | None = Field(
        None, description="Version read before editing; null skips the check."
    )
    document: ExperimentsDocument


class RulesView(BaseModel):
    version: int
    document: RulesDocument
    effective: dict[str, RuleConfig] = Field(
        ..., description="The rules each placement runs with."
    )


class ExperimentsView(BaseModel):
    version: int
    document: ExperimentsDocument


def _gateway(request: Request) -> Any:
    return request.app.state.gateway


async def _refreshed(request: Request) -> Any:
    gateway = _gateway(request)
    try:
        await gateway.refresh()
    except Exception as error:  # Redis unreachable: say so, do not 500
        raise HTTPException(503, f"redis (KEYART_REDIS_URL): {error!r}") from None
    return gateway


@router.get("/rules", response_model=RulesView)
async def get_rules(request: Request) -> RulesView:
    """The rules in use by this process (refreshed every gateway_cache_s)."""
    gateway = await _refreshed(request)
    return RulesView(
        version=gateway.rules_version,
        document=gateway.rules,
        effective={p: gateway.rules_for(p) for p in PLACEMENTS},
    )


@router.put("/rules", response_model=RulesView)
async def put_rules(update: RulesUpdate, request: Request) -> RulesView:
    """Store a new rules document as the next version."""
    gateway = _gateway(request)
    try:
        version = await store_document(
            gateway.redis,
            gateway.keys.config("rules"),
            update.document,
            update.expected_version,
        )
    except ConfigConflict as error:
        raise HTTPException(409, f"expected_version: {error}") from None
    except Exception as error:  # Redis unreachable: nothing was stored
        raise HTTPException(503, f"redis (KEYART_REDIS_URL): {error!r}") from None
    gateway.set_rules(update.document, version)
    return RulesView(
        version=version,
        document=update.document,
        effective={p: gateway.rules_for(p) for p in PLACEMENTS},
    )


@router.get("/experiments", response_model=ExperimentsView)
async def get_experiments(request: Request) -> ExperimentsView:
    """The experiment split in use by this process."""
    gateway = await _refreshed(request)
    return ExperimentsView(
        version=gateway.experiments_version, document=gateway.experiments
    )


@router.put("/experiments", response_model=ExperimentsView)
async def put_experiments(
    update: ExperimentsUpdate, request: Request
) -> ExperimentsView:
    """Store a new experiment split as the next version."""
    gateway = _gateway(request)
    try:
        version = await store_document(
            gateway.redis,
            gateway.keys.config("experiments"),
            update.document,
            update.expected_version,
        )
    except ConfigConflict as error:
        raise HTTPException(409, f"expected_version: {error}") from None
    except Exception as error:  # Redis unreachable: nothing was stored
        raise HTTPException(503, f"redis (KEYART_REDIS_URL): {error!r}") from None
    gateway.set_experiments(update.document, version)
    return ExperimentsView(version=version, document=update.document)
