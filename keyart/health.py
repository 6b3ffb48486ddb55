"""Metrics and health endpoints every keyart process serves.

Three endpoints, the same in every process:

``/metrics``
    Prometheus text format of a :class:`prometheus_client.CollectorRegistry`
    (the process-wide default one unless told otherwise).
``/healthz``
    Alive: answers 200 as long as the process serves HTTP.
``/readyz``
    Ready: runs every readiness check (broker reachable, Redis reachable,
    database reachable, caught up within a bound ...) and answers 200 when all
    pass, 503 with the failing checks otherwise. The body is JSON.

A readiness check is a callable, plain or ``async``, taking no argument and
returning ``(ok, detail)``. Checks that raise or overrun their timeout count as
failed, with the error as the detail. Each run sets the gauge
``keyart_ready_check{check=...}`` to 1 or 0, so Prometheus sees readiness too.

Three ways to serve them:

* :class:`HealthServer` runs a small HTTP server in a daemon thread. It suits a
  plain consumer loop and an asyncio program alike (a Faust worker): pass the
  program's event loop as ``loop`` and async checks run on it.
* :func:`health_router` returns a FastAPI router for the gateway, whose async
  checks run on the gateway's own loop.
* :func:`run_checks` / :func:`run_checks_async` for any other host.

Examples
--------
>>> server = HealthServer({"always": lambda: (True, "fine")}, port=0).start()
>>> import urllib.request
>>> urllib.request.urlopen(server.url + "/readyz").status
200
>>> server.stop()
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Gauge,
    generate_latest,
)

from keyart._checks import check_broker, check_database, check_max_age, check_redis

__all__ = [
    "Check",
    "CheckResult",
    "HealthServer",
    "ReadinessPoller",
    "check_broker",
    "check_database",
    "check_max_age",
    "check_redis",
    "health_router",
    "run_checks",
    "run_checks_async",
    "serve_health",
]

logger = logging.getLogger("keyart")

Check = Callable[[], "tuple[bool, str] | Awaitable[tuple[bool, str]]"]

# With several gateway workers, each runs the checks it is asked. "livemin": the
# smallest value among the running workers that ran a check, so 0 while the
# last run of that check failed in any of them; a stopped worker's is dropped.
READY_CHECK = Gauge(
    "keyart_ready_check",
    "Outcome of the last run of a readiness check (1 passed, 0 failed).",
    ["check"],
    multiprocess_mode="livemin",
)


@dataclass(frozen=True)
class CheckResult:
    """One readiness check's outcome and how long it took."""

    name: str
    ok: bool
    detail: str
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "detail": self.detail, "seconds": round(self.seconds, 4)}


def _failure(error: BaseException, timeout: float) -> str:
    if isinstance(error, TimeoutError | concurrent.futures.TimeoutError):
        return f"no answer within {timeout:g} s"
    return f"{type(error).__name__}: {error}"


def _record(name: str, ok: object, detail: object, started: float) -> CheckResult:
    result = CheckResult(name, bool(ok), str(detail), time.monotonic() - started)
    READY_CHECK.labels(check=name).set(1.0 if result.ok else 0.0)
    if not result.ok:
        logger.warning("readiness check %s failed: %s", name, result.detail)
    return result


def _report(results: list[CheckResult]) -> tuple[int, bytes]:
    ready = all(r.ok for r in results)
    body = {"ready": ready, "checks": {r.name: r.as_dict() for r in results}}
    return (200 if ready else 503), orjson.dumps(body)


def run_checks(
    checks: Mapping[str, Check],
    timeout: float = 2.0,
    loop: asyncio.AbstractEventLoop | None = None,
) -> list[CheckResult]:
    """Run every check from a thread that has no running event loop.

    Plain checks run in parallel threads; async ones run on ``loop`` when it is
    given and running (so they may use that loop's clients), otherwise each on a
    fresh loop.
    """
    pool = concurrent.futures.ThreadPoolExecutor(
        max_workers=max(1, len(checks)), thread_name_prefix="keyart-check"
    )
    started = time.monotonic()

    def call(check: Check) -> tuple[bool, str]:
        if inspect.iscoroutinefunction(check):
            if loop is not None and loop.is_running():
                future = asyncio.run_coroutine_threadsafe(check(), loop)
                return future.result(timeout)
            return asyncio.run(asyncio.wait_for(check(), timeout))
        outcome = check()
        if inspect.isawaitable(outcome):
            return asyncio.run(asyncio.wait_for(_await(outcome), timeout))
        return outcome

    futures = {name: pool.submit(call, check) for name, check in checks.items()}
    results = []
    for name, future in futures.items():
        try:
            ok, detail = future.result(max(0.0, started + timeout - time.monotonic()))
        except BaseException as error:  # a failing check must not fail the probe
            ok, detail = False, _failure(error, timeout)
        results.append(_record(name, ok, detail, started))
    pool.shutdown(wait=False, cancel_futures=True)
    return results


async def _await(awaitable: Awaitable[tuple[bool, str]]) -> tuple[bool, str]:
    return await awaitable


async def run_checks_async(
    checks: Mapping[str, Check], timeout: float = 2.0
) -> list[CheckResult]:
    """Run every check concurrently on the running loop; plain ones in threads."""

    async def one(name: str, check: Check) -> CheckResult:
        started = time.monotonic()
        try:
            if inspect.iscoroutinefunction(check):
                ok, detail = await asyncio.wait_for(check(), timeout)
            else:
                outcome = await asyncio.wait_for(asyncio.to_thread(check), timeout)
                if inspect.isawaitable(outcome):
                    outcome = await asyncio.wait_for(_await(outcome), timeout)
                ok, detail = outcome
        except Exception as error:
            ok, detail = False, _failure(error, timeout)
        return _record(name, ok, detail, started)

    return list(await asyncio.gather(*(one(n, c) for n, c in checks.items())))


class ReadinessPoller:
    """Run readiness checks every ``interval`` seconds in a daemon thread.

    Keeps ``keyart_ready_check`` current for Prometheus in hosts whose
    ``/readyz`` is seldom asked (the FastAPI gateway may start one at start-up).
    ``checks`` is read on every run, so it may grow while polling.
    """

    def __init__(
        self,
        checks: Mapping[str, Check],
        interval: float = 15.0,
        timeout: float = 2.0,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.checks = checks
        self.interval = interval
        self.timeout = timeout
        self.loop = loop
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while True:
            if self.checks:
                run_checks(dict(self.checks), self.timeout, self.loop)
            if self._stopping.wait(self.interval):
                return

    def start(self) -> ReadinessPoller:
        if self.interval > 0 and self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(
                target=self._run, name="keyart-readiness", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 5)
        self._thread = None


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        owner = self.server.owner
        if path == "/metrics":
            self._send(200, generate_latest(owner.registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            alive = {"alive": True, "process": owner.name}
            self._send(200, orjson.dumps(alive), "application/json")
        elif path == "/readyz":
            status, body = _report(owner.check_now())
            self._send(status, body, "application/json")
        else:
            self._send(
                404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain"
            )

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        logger.debug("health http: " + format, *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: HealthServer


class HealthServer:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` from a daemon thread.

    Parameters
    ----------
    checks
        Readiness checks by name (see the module docstring).
    port
        Port to listen on; 0 picks a free one (read :attr:`port` after start).
    host
        Address to listen on.
    name
        The process's name, shown by ``/healthz`` and in the start log.
    registry
        Metrics to expose; the process-wide default registry when None.
    loop
        Event loop async checks run on (a Faust worker's loop); when None each
        async check gets a fresh loop.
    timeout
        Seconds one readiness run may take before a check counts as failed.
    interval
        Seconds between readiness runs in the background, which keep the
        ``keyart_ready_check`` gauge current between probes; 0 runs the checks
        only when ``/readyz`` is asked.
    """

    def __init__(
        self,
        checks: Mapping[str, Check] | None = None,
        *,
        port: int = 0,
        host: str = "0.0.0.0",  # noqa: S104 - Prometheus scrapes from other hosts
        name: str = "keyart",
        registry: CollectorRegistry | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        timeout: float = 2.0,
        interval: float = 15.0,
    ) -> None:
        self.checks: dict[str, Check] = dict(checks or {})
        self.name = name
        self.registry = registry if registry is not None else REGISTRY
        self.loop = loop
        self.timeout = timeout
        self._requested = (host, port)
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._poller = ReadinessPoller(self.checks, interval, timeout, loop)

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the health server is not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = self._requested[0]
        host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host  # noqa: S104
        return f"http://{host}:{self.port}"

    def add_check(self, name: str, check: Check) -> None:
        """Add or replace a readiness check while serving."""
        self.checks[name] = check

    def check_now(self) -> list[CheckResult]:
        """Run the readiness checks once (what ``/readyz`` does)."""
        return run_checks(self.checks, self.timeout, self.loop)

    def start(self) -> HealthServer:
        """Bind the port and serve in a daemon thread; return self."""
        host, port = self._requested
        try:
            self._httpd = _Server((host, port), _Handler)
        except OSError as error:
            raise OSError(
                f"cannot serve metrics on {host}:{port} (KEYART_METRICS_PORT): {error}"
            ) from None
        self._httpd.owner = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            name=f"{self.name}-health",
            daemon=True,
        )
        self._thread.start()
        self._poller.start()
        logger.info(
            "%s serves /metrics, /healthz and /readyz at %s",
            self.name,
            self.url,
            extra={"metrics_port": self.port, "process_name": self.name},
        )
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._poller.stop()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> HealthServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_health(
    settings: Any,
    name: str,
    checks: Mapping[str, Check] | None = None,
    **options: Any,
) -> HealthServer:
    """Start a :class:`HealthServer` on ``settings.metrics_port`` (0: any free)."""
    return HealthServer(
        checks, port=settings.metrics_port, name=name, **options
    ).start()


def health_router(
    checks: Mapping[str, Check] | None = None,
    *,
    registry: CollectorRegistry | None = None,
    timeout: float = 2.0,
    name: str = "gateway",
) -> Any:
    """A FastAPI router with ``/metrics``, ``/healthz`` and ``/readyz``.

    ``checks`` is read on every request, so a caller may keep adding to it.
    """
    from fastapi import APIRouter, Response

    router = APIRouter(tags=["operations"])
    source = checks if checks is not None else {}
    metrics_registry = registry if registry is not None else REGISTRY

    # No return annotations: Response is imported here, and FastAPI resolves
    # annotations when it builds the OpenAPI document.
    @router.get("/metrics", include_in_schema=False)
    def metrics():
        return Response(
            generate_latest(metrics_registry), media_type=CONTENT_TYPE_LATEST
        )

    @router.get("/healthz")
    async def healthz():
        body = orjson.dumps({"alive": True, "process": name})
        return Response(body, media_type="application/json")

    @router.get("/readyz")
    async def readyz():
        status, body = _report(await run_checks_async(dict(source), timeout))
        return Response(body, status_code=status, media_type="application/json")

    return router
