"""The gateway's FastAPI application: select, collect, administer, observe.

=================  ======  ==================================================
path               method  what
=================  ======  ==================================================
/v1/select         POST    a poster per video of a row, with impression tokens
/v1/events         POST    a batch of impressions and clicks (the collector)
/v1/placements     GET     placements with their aspect ratio and size
/admin/rules       GET/PUT business rules (admin token)
/admin/experiments GET/PUT experiment split (admin token)
/admin/review/...          poster review, when ``workers.review_api`` exists
/metrics, /healthz, /readyz  operations
{poster_url_base}  GET     poster images, when the store is a local folder
=================  ======  ==================================================

Examples
--------
>>> from keyart.settings import Settings
>>> app = create_app(Settings(token_secret="s"))
>>> "/v1/select" in {route.path for route in app.routes}
True
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import CollectorRegistry
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from gateway import metrics
from gateway._errors import BODY_FAULT_STATUS, body_errors, parse_failure, refusal
from gateway.admin import require_admin
from gateway.admin import router as admin_router
from gateway.collector import BatchError, Collector
from gateway.models import (
    EVENT_EXAMPLE,
    REFUSED,
    ClickIn,
    EventsResponse,
    ImpressionIn,
    SelectRequest,
    SelectResponse,
)
from gateway.placements import PLACEMENTS
from gateway.service import Gateway, freeze_startup_objects
from keyart.settings import Settings, get_settings

__all__ = ["create_app"]

logger = logging.getLogger("gateway")

_UNPARSED = "There was an error parsing the body"
"""FastAPI's detail for a body it could not decode (not a JSON syntax error)."""


class BodyLimit:
    """Refuse request bodies above ``limit`` bytes with 413, and bodies that
    take longer than ``timeout_s`` to arrive with 408, before parsing.

    A body with a Content-Length is refused from its headers. A chunked body
    is counted as the route reads it; past the limit, reading raises
    :class:`_Refused`, and whatever the route answers to that (FastAPI turns
    a failed body read into a 400) is replaced by the 413.

    The time runs from the route's first read until the last part of the
    body. Without it, a client that sends the headers and part of a body,
    then nothing, held its connection and what it sent (up to ``limit``
    bytes each) for as long as it liked. Reads after the body (a response
    waiting for the client to disconnect) are not timed.
    """

    def __init__(self, app: Any, limit: int, timeout_s: float) -> None:
        self.app = app
        self.limit = limit
        self.timeout_s = timeout_s

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and int(value or 0) > self.limit:
                await _refuse_body(send, 413, _too_large(self.limit))
                return
        received = 0
        deadline: float | None = None
        body_done = started = False
        refused: tuple[int, str] | None = None

        async def limited() -> Any:
            nonlocal received, deadline, body_done, refused
            if body_done:
                return await receive()
            loop = asyncio.get_running_loop()
            deadline = deadline or loop.time() + self.timeout_s
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                refused = (408, _too_slow(self.timeout_s))
                raise _Refused from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > self.limit:
                    refused = (413, _too_large(self.limit))
                    raise _Refused
            return message

        async def answer(message: Any) -> None:
            nonlocal started
            if refused and not started:
                return  # the route's answer to the failed read; ours follows
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, answer)
        except Exception:
            if not refused or started:
                raise
        if refused and not started:
            await _refuse_body(send, *refused)


class _Refused(Exception):
    pass


def _too_large(limit: int) -> str:
    return f"larger than {limit} bytes (KEYART_MAX_REQUEST_BYTES)"


def _too_slow(timeout_s: float) -> str:
    return (
        f"not received within {timeout_s:g} s of the headers "
        "(KEYART_REQUEST_BODY_TIMEOUT_S)"
    )


async def _refuse_body(send: Any, status: int, message: str) -> None:
    # The shape of every other refusal: ``detail`` and ``errors``. The rest
    # of the body is not read, so the connection cannot serve another request.
    body = orjson.dumps(refusal([{"field": "body", "message": message}]))
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


def _refuse(field: str, message: str) -> dict[str, Any]:
    return refusal([{"field": field, "message": message}])


def _optional_router(app: FastAPI, module: str, **options: Any) -> None:
    """Include ``module.router`` when that module exists (other packages)."""
    try:
        router = importlib.import_module(module).router
    except ImportError as error:
        logger.info("%s not included: %s", module, error)
        return
    app.include_router(router, **options)
    logger.info("included %s", module)


def create_app(
    settings: Settings | None = None, *, metrics_dir: str | None = None
) -> FastAPI:
    """Build the gateway application for ``settings`` (the process's by default).

    Parameters
    ----------
    settings
        The gateway's settings; the process's when None.
    metrics_dir
        For one of several worker processes: the ``PROMETHEUS_MULTIPROC_DIR``
        every worker writes its metrics to. ``/metrics`` then answers the sum
        over all workers, and this worker's gauges leave the sums when it
        stops. None (one process) serves the process's own registry.
    """
    settings = settings or get_settings()
    gateway = Gateway(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        assert gateway.producer is not None and gateway.reader is not None
        # The work of one select is bounded by the candidates it considers.
        gateway.reader.max_candidates_per_video = settings.max_candidates_per_video
        gateway.reader.max_candidates_per_row = settings.max_candidates_per_row
        app.state.collector = Collector(
            settings,
            gateway.keys,
            gateway.redis,
            gateway.producer,
            gateway.signer,
            gateway.posters,
            loop_lag=lambda: gateway.loop_lag_s,
        )
        freeze_startup_objects()
        try:
            yield
        finally:
            await gateway.stop()
            if metrics_dir is not None:
                metrics.retire_worker(metrics_dir, os.getpid())

    app = FastAPI(
        title="keyart gateway",
        summary="Per-user posters chosen by streaming bandits, and the event "
        "collector that feeds them.",
        version="1",
        lifespan=lifespan,
        docs_url=None,  # served by _mount_docs from local files
        redoc_url=None,
    )
    app.state.gateway = gateway
    app.state.metrics_dir = metrics_dir

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> Response:
        details = body_errors(list(error.errors()), request.headers.get("content-type"))
        return _json(refusal(details), BODY_FAULT_STATUS)

    @app.exception_handler(HTTPException)
    async def refused(request: Request, error: HTTPException) -> Response:
        # FastAPI answers a body it failed to decode with a bare 400, where
        # invalid JSON gets its 422; say why, with the status of every other
        # body fault (gateway._errors.BODY_FAULT_STATUS says why 422).
        if error.status_code == 400 and error.detail == _UNPARSED:
            message = parse_failure(error.__cause__)
            return _json(_refuse("body", message), BODY_FAULT_STATUS)
        field = getattr(error, "field", None)  # workers.review_api.FieldRefused
        if isinstance(field, str):
            return _json(_refuse(field, str(error.message)), error.status_code)
        return await http_exception_handler(request, error)

    @app.post(
        "/v1/select",
        response_model=SelectResponse,
        tags=["serving"],
        responses=REFUSED,
    )
    async def select(body: SelectRequest) -> Response:
        """Choose a poster for every title of a row.

        Each slot's token goes back with the impression and click events of
        that poster. A slot with ``fallback: true`` was answered without live
        state; ``poster_id: null`` means show the title's default art.
        """
        if len(body.video_ids) > settings.max_row_length:
            message = (
                f"{len(body.video_ids)} videos, at most {settings.max_row_length} "
                "(KEYART_MAX_ROW_LENGTH)"
            )
            return _json(_refuse("video_ids", message), BODY_FAULT_STATUS)
        return _json(await gateway.select(body))

    @app.post(
        "/v1/events",
        response_model=EventsResponse,
        tags=["collector"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["events"],
                            "properties": {
                                "events": {
                                    "type": "array",
                                    "maxItems": settings.max_events_per_batch,
                                    "items": {
                                        "oneOf": [
                                            ImpressionIn.model_json_schema(),
                                            ClickIn.model_json_schema(),
                                        ]
                                    },
                                }
                            },
                        },
                        "example": EVENT_EXAMPLE,
                    }
                },
            }
        },
        responses={
            503: {"description": "No event reached the broker; resend them."},
            422: {**REFUSED[422], "description": "The batch itself is malformed."},
        },
    )
    async def events(request: Request) -> Response:
        """Take a batch of impression and click events.

        Each event is checked on its own; the answer lists the ones not taken
        with their index and reason. Resending an event id already taken is
        harmless (counted as a duplicate).
        """
        try:
            body = await request.body()
        except ClientDisconnect:
            # Nobody is left to answer and nothing was read: not a server
            # error (uvicorn logged the exception with a traceback).
            logger.debug("a client went away before its batch arrived")
            return Response(status_code=400)
        try:
            status, answer = await app.state.collector.collect(
                body, request.headers.get("content-type")
            )
        except BatchError as error:
            return _json(_refuse(error.field, error.message), BODY_FAULT_STATUS)
        return _json(answer, status)

    @app.get("/v1/placements", tags=["serving"])
    async def placements() -> Response:
        """Placements with their aspect ratio and reference size."""
        return _json(
            [
                {
                    "name": p.name,
                    "aspect": p.aspect,
                    "width": p.width,
                    "height": p.height,
                    "description": p.description,
                }
                for p in PLACEMENTS.values()
            ]
        )

    @app.post("/v1/ping", include_in_schema=False)
    async def ping(request: Request) -> Response:
        """An empty endpoint on the same stack, the benchmarks' ceiling."""
        await request.body()
        return _json({})

    app.include_router(admin_router)
    registry = metrics.workers_registry(metrics_dir) if metrics_dir else None
    _mount_operations(app, gateway, registry)
    _optional_router(
        app,
        "workers.review_api",
        prefix="/admin/review",
        dependencies=[_admin_dependency()],
        responses=REFUSED,
    )
    _optional_router(app, "gateway.dashboard")
    _mount_docs(app)
    _mount_posters(app, settings)
    app.add_middleware(
        BodyLimit,
        limit=settings.max_request_bytes,
        timeout_s=settings.request_body_timeout_s,
    )
    return app


def _admin_dependency() -> Any:
    from fastapi import Depends

    return Depends(require_admin)


def _mount_operations(
    app: FastAPI, gateway: Gateway, registry: CollectorRegistry | None
) -> None:
    from keyart.health import check_broker, health_router

    async def redis_ping() -> tuple[bool, str]:
        try:
            await gateway.redis.ping()
        except Exception as error:  # any failure means not ready
            return False, f"redis (KEYART_REDIS_URL): {error!r}"
        return True, "redis answers"

    async def decision_log() -> tuple[bool, str]:
        log = gateway.decision_log
        if log is None or not log.running:
            return False, "decision log child not running: decisions are lost"
        return True, f"decision log child {log.pid} running"

    checks = {
        "redis": redis_ping,
        "broker": check_broker(gateway.settings.kafka_bootstrap),
        "decision_log": decision_log,
    }
    app.include_router(health_router(checks, registry=registry, name="gateway"))


def _mount_docs(app: FastAPI) -> None:
    """``/docs``: Swagger UI from the installed ``swagger-ui-bundle`` files.

    FastAPI's default page loads Swagger UI from a CDN, so on a machine
    without internet access (many gateways run behind one) it stayed blank.
    """
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_path), name="docs")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title}: API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )


def _mount_posters(app: FastAPI, settings: Settings) -> None:
    base = settings.poster_url_base
    if not base.startswith("/"):
        return  # a CDN URL: the images are served elsewhere
    from fastapi.staticfiles import StaticFiles

    class PosterFiles(StaticFiles):
        """The store's images; 404 while the store folder does not exist.

        The poster workers create the folder when they store the first
        poster, so a new gateway serves before it exists. Starlette raises
        on every request until then, a 500 for a URL the gateway handed out.
        """

        async def check_config(self) -> None:
            try:
                await super().check_config()
            except RuntimeError:
                raise HTTPException(404, "Not Found") from None

    app.mount(
        base.rstrip("/") or "/posters",
        PosterFiles(directory=settings.poster_store, check_dir=False),
        name="posters",
    )
