"""A small Python client of the gateway: select posters, report what was shown.

Events are buffered and sent in batches to ``POST /v1/events``. A batch that
meets a connection error, a timeout or a 5xx answer is resent after an
exponential backoff with jitter; events the collector reports as retryable
are resent too. Resending is safe because every event carries its id and the
collector produces an id only once. An event whose earlier send still waits
for the broker (or whose gateway died while it waited, for up to the
``collect_pending_s`` setting) is reported retryable; when the retries run out
first it comes back in :attr:`SendReport.failed` as ``retries exhausted`` and
may be queued again later with the same id. Errors that retrying cannot fix (a
forged or expired token, a malformed event, a second impression or click on
one token) are returned to the caller, not retried.

The client holds no secret: it sends back the impression tokens the gateway
issued, never an admin token, and it does not follow redirects (a redirect to
another host would otherwise receive the events).

Examples
--------
>>> with GatewayClient("http://127.0.0.1:8000") as client:  # doctest: +SKIP
...     row = client.select("u-1", "home_row", ["v-1", "v-2"])
...     for slot in row["slots"]:
...         if slot["token"]:
...             shown = client.impression(slot["token"])
...     report = client.flush()
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx

__all__ = ["GatewayClient", "GatewayError", "SendReport"]

logger = logging.getLogger("producers")

RETRYABLE_STATUS = frozenset({500, 502, 503, 504})


class GatewayError(RuntimeError):
    """The gateway refused a request, or stayed unreachable through retries."""


@dataclass
class SendReport:
    """What one :meth:`GatewayClient.flush` achieved."""

    accepted: int = 0
    duplicates: int = 0
    failed: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    """Events not taken and why (not retryable, or retries exhausted)."""
    attempts: int = 0


class GatewayClient:
    """Talk to one gateway over HTTP (see the module docstring).

    Parameters
    ----------
    base_url
        The gateway, ``http://host:port``.
    max_batch
        Events per ``/v1/events`` request; reaching it sends at once.
    retries
        Resends of one batch after the first attempt.
    backoff_s, max_backoff_s
        First wait between attempts and its cap; each wait doubles, with
        jitter from the client's own generator.
    timeout_s
        Timeout of one HTTP request.
    seed
        Seed of the jitter.
    """

    def __init__(
        self,
        base_url: str,
        *,
        max_batch: int = 500,
        retries: int = 5,
        backoff_s: float = 0.1,
        max_backoff_s: float = 5.0,
        timeout_s: float = 5.0,
        seed: int = 0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if max_batch < 1 or retries < 0:
            raise ValueError("max_batch must be >= 1 and retries >= 0")
        self.max_batch = max_batch
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._rng = random.Random(seed)
        self._pending: list[dict[str, Any]] = []
        self._report = SendReport()
        self._http = httpx.Client(
            base_url=base_url,
            timeout=timeout_s,
            follow_redirects=False,
            transport=transport,
            headers={"user-agent": "keyart-client/1"},
        )

    # Select ---------------------------------------------------------------------

    def select(
        self,
        user_id: str,
        placement: str,
        video_ids: Sequence[str],
        *,
        context: dict[str, float] | None = None,
        cues: Sequence[str] = (),
        segment: str = "",
        request_id: str = "",
    ) -> dict[str, Any]:
        """Posters for a row; retried like event batches (a select is safe to
        repeat).

        Raises
        ------
        GatewayError
            On a 4xx answer (its detail names the field) or when the gateway
            stays unreachable.
        """
        body = {
            "user_id": user_id,
            "placement": placement,
            "video_ids": list(video_ids),
            "context": context or {},
            "cues": list(cues),
            "segment": segment,
            "request_id": request_id,
        }
        response = self._post("/v1/select", body)
        if response is None:
            raise GatewayError("gateway unreachable after retries")
        if response.status_code != 200:
            raise GatewayError(
                f"select refused ({response.status_code}): {response.text}"
            )
        return response.json()

    # Events ---------------------------------------------------------------------

    def impression(
        self,
        token: str,
        *,
        event_id: str | None = None,
        event_time_ms: int | None = None,
        context: dict[str, float] | None = None,
    ) -> str:
        """Queue an impression of the poster ``token`` was issued for; return its id."""
        event = {
            "type": "impression",
            "event_id": event_id or uuid.uuid4().hex,
            "event_time": event_time_ms or int(time.time() * 1000),
            "token": token,
            "context": context or {},
        }
        self._queue(event)
        return event["event_id"]

    def click(
        self,
        token: str,
        impression_id: str,
        *,
        event_id: str | None = None,
        event_time_ms: int | None = None,
    ) -> str:
        """Queue a click on a shown poster; return its id."""
        event = {
            "type": "click",
            "event_id": event_id or uuid.uuid4().hex,
            "event_time": event_time_ms or int(time.time() * 1000),
            "token": token,
            "impression_id": impression_id,
        }
        self._queue(event)
        return event["event_id"]

    def _queue(self, event: dict[str, Any]) -> None:
        self._pending.append(event)
        if len(self._pending) >= self.max_batch:
            self._send(self._pending)
            self._pending = []

    def flush(self) -> SendReport:
        """Send everything queued; return what this and earlier sends achieved
        since the last flush."""
        while self._pending:
            batch, self._pending = (
                self._pending[: self.max_batch],
                self._pending[self.max_batch :],
            )
            self._send(batch)
        report, self._report = self._report, SendReport()
        return report

    def _send(self, batch: list[dict[str, Any]]) -> None:
        report = self._report
        for attempt in range(self.retries + 1):
            if attempt:
                self._sleep(attempt)
            report.attempts += 1
            response = self._post_once("/v1/events", {"events": batch})
            if response is None or response.status_code in RETRYABLE_STATUS:
                if response is not None and response.status_code == 503:
                    batch = self._settle(response.json(), batch, report)
                    if not batch:
                        return
                continue
            if response.status_code != 200:
                reason = f"batch refused ({response.status_code}): {response.text}"
                report.failed += [(event, reason) for event in batch]
                return
            batch = self._settle(response.json(), batch, report)
            if not batch:
                return
        report.failed += [(event, "retries exhausted") for event in batch]
        logger.warning("%s events not delivered after retries", len(batch))

    @staticmethod
    def _settle(
        answer: dict[str, Any], batch: list[dict[str, Any]], report: SendReport
    ) -> list[dict[str, Any]]:
        """Count what was taken; return the events worth resending."""
        report.accepted += int(answer.get("accepted", 0))
        report.duplicates += int(answer.get("duplicates", 0))
        again = []
        for error in answer.get("errors", []):
            event = batch[error["index"]]
            if error.get("retry"):
                again.append(event)
            else:
                report.failed.append((event, error["reason"]))
        return again

    # HTTP -----------------------------------------------------------------------

    def _sleep(self, attempt: int) -> None:
        wait = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
        time.sleep(wait * (0.5 + self._rng.random() / 2))

    def _post_once(self, path: str, body: dict[str, Any]) -> httpx.Response | None:
        try:
            return self._http.post(path, json=body)
        except httpx.TransportError as error:  # connect, read, write, timeout
            logger.debug("POST %s failed: %r", path, error)
            return None

    def _post(self, path: str, body: dict[str, Any]) -> httpx.Response | None:
        response = None
        for attempt in range(self.retries + 1):
            if attempt:
                self._sleep(attempt)
            response = self._post_once(path, body)
            if response is not None and response.status_code not in RETRYABLE_STATUS:
                return response
        return response

    def close(self) -> None:
        """Send what is queued, then close the connection pool."""
        try:
            self.flush()
        finally:
            self._http.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()
