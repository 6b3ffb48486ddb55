"""Simulated sessions against a running gateway, over HTTP.

Each session draws a MovieLens user, asks ``POST /v1/select`` for a row of
titles with the user's context, "looks at" the posters it got, and sends back
impressions and, according to the hidden click model, clicks through
``POST /v1/events``, the way a client app would: impressions at once, clicks
after their delay, a share of both delivered twice. Clicks still pending when
the run ends are never sent (the user left); they are counted.

Every shown poster is recorded with its expected click-through rate and the
best one available for that user, from the simulator's oracle, so the report
can compute each policy's regret.

Examples
--------
>>> runner = TrafficRunner("http://127.0.0.1:8000", simulator, oracle,
...     {"bikes": ["p1", "p2"]}, duration_s=60)  # doctest: +SKIP
>>> result = asyncio.run(runner.run())  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from producers.simulator import Oracle, TrafficSimulator

__all__ = ["ShownPoster", "TrafficResult", "TrafficRunner"]

logger = logging.getLogger("producers")


@dataclass(frozen=True, slots=True)
class ShownPoster:
    """One impression as the simulator saw it, with the oracle's view."""

    t_s: float
    impression_id: str
    user_id: str
    variant: str
    policy: str
    video_id: str
    poster_id: str
    propensity: float
    fallback: bool
    expected_ctr: float
    best_ctr: float

    @property
    def regret(self) -> float:
        return self.best_ctr - self.expected_ctr


@dataclass
class TrafficResult:
    """What a run sent and what the gateway answered."""

    shown: list[ShownPoster] = field(default_factory=list)
    requests: int = 0
    empty_slots: int = 0
    select_errors: int = 0
    clicks_sent: int = 0
    clicks_after_run: int = 0
    duplicates_sent: int = 0
    events_accepted: int = 0
    events_duplicate: int = 0
    event_errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass(order=True)
class _PendingClick:
    due: float
    event: dict[str, Any] = field(compare=False)
    duplicate: bool = field(compare=False, default=False)


class TrafficRunner:
    """Run simulated sessions against the gateway for ``duration_s`` seconds.

    Parameters
    ----------
    base_url
        The gateway (``http://127.0.0.1:8000``).
    simulator, oracle
        Users and the hidden click model, and its expected rates.
    video_to_posters
        The posters each video can show in ``placement`` (for the oracle's best).
    duration_s
        How long sessions are started.
    concurrency
        Sessions in flight at once.
    rate
        Most sessions started per second (all that fit when None).
    on_progress
        Called about once a second with the elapsed seconds and the result so far.
    """

    def __init__(
        self,
        base_url: str,
        simulator: TrafficSimulator,
        oracle: Oracle,
        video_to_posters: Mapping[str, Sequence[str]],
        *,
        placement: str = "home_row",
        duration_s: float = 60.0,
        concurrency: int = 8,
        rate: float | None = None,
        run_id: str = "sim",
        on_progress: Callable[[float, TrafficResult], None] | None = None,
        batch_interval_s: float = 0.25,
        max_batch: int = 500,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.simulator = simulator
        self.oracle = oracle
        self.video_to_posters = {v: list(p) for v, p in video_to_posters.items()}
        self.placement = placement
        self.duration_s = duration_s
        self.concurrency = concurrency
        self.rate = rate
        self.run_id = run_id
        self.on_progress = on_progress
        self.batch_interval_s = batch_interval_s
        self.max_batch = max_batch
        self.result = TrafficResult()
        self._outbox: list[dict[str, Any]] = []
        self._pending: list[_PendingClick] = []
        self._counter = 0
        self._start = 0.0

    def _now_s(self) -> float:
        return time.monotonic() - self._start

    def _next_id(self, kind: str) -> str:
        self._counter += 1
        return f"{self.run_id}-{kind}-{self._counter}"

    async def _session(self, client: Any) -> None:
        sim = self.simulator
        user = sim.draw_user()
        videos = list(self.video_to_posters)
        order = sim.generator.permutation(len(videos))
        row = [videos[i] for i in order]
        body = {
            "user_id": user.user_id,
            "placement": self.placement,
            "video_ids": row,
            "context": user.context(),
        }
        self.result.requests += 1
        try:
            response = await client.post("/v1/select", json=body)
        except Exception as error:  # connection refused or reset: count, go on
            self.result.select_errors += 1
            logger.warning("select failed: %r", error)
            return
        if response.status_code != 200:
            self.result.select_errors += 1
            logger.warning(
                "select answered %s: %s", response.status_code, response.text
            )
            return
        answer = response.json()
        t_s = self._now_s()
        now_ms = int(time.time() * 1000)
        shown: list[tuple[str, str]] = []
        slot_of: dict[tuple[str, str], tuple[str, str]] = {}
        for slot in answer["slots"]:
            poster, token = slot.get("poster_id"), slot.get("token")
            if not poster or not token:
                self.result.empty_slots += 1
                continue
            video = slot["video_id"]
            impression_id = self._next_id("imp")
            event = {
                "type": "impression",
                "event_id": impression_id,
                "event_time": now_ms,
                "token": token,
                "context": body["context"],
            }
            self._outbox.append(event)
            if sim.duplicate_impression():
                self._outbox.append(dict(event))
                self.result.duplicates_sent += 1
            candidates = self.video_to_posters.get(video) or [poster]
            if poster not in candidates:
                candidates = [*candidates, poster]
            _, best = self.oracle.best(user, candidates, t_s)
            self.result.shown.append(
                ShownPoster(
                    t_s=t_s,
                    impression_id=impression_id,
                    user_id=user.user_id,
                    variant=answer["variant"],
                    policy=answer["policy"],
                    video_id=video,
                    poster_id=poster,
                    propensity=float(slot["propensity"]),
                    fallback=bool(slot.get("fallback")),
                    expected_ctr=self.oracle.expected(user, poster, t_s),
                    best_ctr=best,
                )
            )
            shown.append((video, poster))
            slot_of[(video, poster)] = (impression_id, token)
        for click in sim.respond(user, shown, t_s):
            impression_id, token = slot_of[(click.video_id, click.poster_id)]
            event = {
                "type": "click",
                # A duplicate delivery repeats the same click id.
                "event_id": f"{impression_id}-click",
                "event_time": now_ms + int(click.delay_s * 1000),
                "token": token,
                "impression_id": impression_id,
            }
            heapq.heappush(
                self._pending,
                _PendingClick(t_s + click.delay_s, event, click.duplicate),
            )

    def _release_due_clicks(self) -> None:
        now = self._now_s()
        while self._pending and self._pending[0].due <= now:
            item = heapq.heappop(self._pending)
            self._outbox.append(item.event)
            if item.duplicate:
                self.result.duplicates_sent += 1
            else:
                self.result.clicks_sent += 1

    async def _post_events(self, client: Any) -> None:
        while self._outbox:
            batch, self._outbox = (
                self._outbox[: self.max_batch],
                self._outbox[self.max_batch :],
            )
            try:
                response = await client.post("/v1/events", json={"events": batch})
            except Exception as error:  # resend later: ids make it harmless
                logger.warning("events batch failed, will resend: %r", error)
                self._outbox[:0] = batch
                return
            if response.status_code != 200:
                self.result.event_errors.append(f"{response.status_code}")
                logger.warning(
                    "events answered %s: %s", response.status_code, response.text
                )
                return
            answer = response.json()
            self.result.events_accepted += answer["accepted"]
            self.result.events_duplicate += answer["duplicates"]
            for refused in answer.get("errors", []):
                self.result.event_errors.append(refused["reason"])
                if refused.get("retry"):
                    self._outbox.append(batch[refused["index"]])

    async def _flusher(self, client: Any, stop: asyncio.Event) -> None:
        last_progress = 0.0
        while not stop.is_set():
            self._release_due_clicks()
            await self._post_events(client)
            if self.on_progress and self._now_s() - last_progress >= 1.0:
                last_progress = self._now_s()
                self.on_progress(last_progress, self.result)
            await asyncio.sleep(self.batch_interval_s)

    async def _sessions(self, client: Any, flusher: asyncio.Task[None]) -> None:
        running: set[asyncio.Task[None]] = set()
        started = 0
        # A failed flusher (or progress callback) ends the run early.
        while self._now_s() < self.duration_s and not flusher.done():
            if self.rate is not None and started > self.rate * self._now_s():
                await asyncio.sleep(0.01)
                continue
            if len(running) >= self.concurrency:
                _, running = await asyncio.wait(
                    running, return_when=asyncio.FIRST_COMPLETED
                )
                continue
            running.add(asyncio.create_task(self._session(client)))
            started += 1
        if running:
            await asyncio.wait(running)

    async def run(self, drain_s: float = 5.0) -> TrafficResult:
        """Run the sessions, then send the clicks due within ``drain_s``."""
        import httpx

        limits = httpx.Limits(max_connections=self.concurrency + 2)
        async with httpx.AsyncClient(
            base_url=self.base_url, timeout=10.0, limits=limits
        ) as client:
            self._start = time.monotonic()
            stop = asyncio.Event()
            flusher = asyncio.create_task(self._flusher(client, stop))
            try:
                await self._sessions(client, flusher)
                end = self._now_s() + drain_s
                while (
                    self._pending and self._pending[0].due <= end and not flusher.done()
                ):
                    await asyncio.sleep(0.2)
            finally:
                stop.set()
                await flusher
            self._release_due_clicks()
            await self._post_events(client)
        self.result.clicks_after_run = sum(not p.duplicate for p in self._pending)
        self.result.seconds = self._now_s()
        if self.on_progress:
            self.on_progress(self.result.seconds, self.result)
        return self.result
