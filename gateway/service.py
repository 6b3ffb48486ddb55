"""The select service: a row request in, one poster per video out, all logged.

:class:`Gateway` owns the process's Redis pool, caches, generator, token
signer, producer and decision log (:mod:`gateway.decision_log`). A request
costs one Redis round trip (two when poster metadata is not cached yet) under
the ``redis_budget_ms`` budget. When Redis fails or overruns, the row is
answered from the process's last view of each video (see
:mod:`gateway.fallback`); after three failures in a row Redis is skipped for
a second, so a dead Redis costs no waiting at all.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import secrets
import time
from collections import Counter
from typing import Any

import numpy as np

from gateway import metrics
from gateway._ratelimit import RateLimitedLog
from gateway.broker import GatewayProducer, producer_config
from gateway.config import (
    ExperimentsDocument,
    RuleConfig,
    RulesDocument,
    load_document,
)
from gateway.decide import RowDecider, VideoDecision
from gateway.decision_log import LINGER_MS, DecisionLog
from gateway.experiments import Assigner
from gateway.fallback import FallbackCache
from gateway.models import SelectRequest
from gateway.placements import PLACEMENTS
from gateway.retirement import EVALUATOR, Retirement
from gateway.rules import cue_text
from gateway.scoring import ModelCache, PolicyBook
from gateway.state import PosterCache, RowReader
from gateway.token import TokenSigner
from keyart.keys import Keys
from keyart.settings import Settings
from ranking.serving import Ranker

__all__ = ["Gateway", "freeze_startup_objects"]

logger = logging.getLogger("gateway")

CIRCUIT_FAILURES = 3
POSTER_TTL_S = 600.0
CIRCUIT_OPEN_S = 1.0


def freeze_startup_objects() -> None:
    """Leave what the process holds at startup out of garbage collection.

    Modules, the application, its routes and schemas live as long as the
    process. A full collection walked them all (about 170,000 objects) and
    paused the event loop for about 100 ms, during which every request in
    flight waited. Frozen (:func:`gc.freeze`), they are no longer walked.
    Only the first call in a process freezes: a second application in the
    same process (as in tests) would freeze the first one's leftovers. The
    first call also starts :data:`SURVIVORS`.
    """
    if gc.get_freeze_count() == 0:
        gc.collect()
        gc.freeze()
        SURVIVORS.install()


class _SurvivorFreezer:
    """Freeze what outlives a full collection, so the next one skips it.

    After startup the caches fill: candidate blocks, poster metadata, arm
    counts, retirement statuses, tens of thousands of objects that live for
    minutes. Every full collection walked them again, about 20 ms each and
    some ten times a minute under load, and each pause queued the requests
    behind it. What survived one full collection is frozen once the
    collection is over, so it is walked once.

    Frozen objects are still freed when their last reference goes; only
    garbage in reference cycles among them (a closed connection's transport
    and protocol, say) waits. Every ``thaw_every_s`` everything is thawed and
    collected at once, one longer pause (about 100 ms) that reclaims it, and
    what survives is frozen again.
    """

    def __init__(self, thaw_every_s: float = 600.0) -> None:
        self.thaw_every_s = thaw_every_s
        self.due = False
        self.freezes = 0
        self.thaws = 0
        self._installed = False
        self._thawed_at = 0.0

    def install(self) -> None:
        if not self._installed:
            gc.callbacks.append(self._after)
            self._installed = True
            self._thawed_at = time.monotonic()

    def _after(self, phase: str, info: dict[str, int]) -> None:
        # Not from inside the collector's callback: the event loop freezes.
        if phase == "stop" and info["generation"] == 2:
            self.due = True

    def freeze_due(self, now: float) -> None:
        """Freeze the survivors of the last full collection, if one ran; thaw
        and collect everything when ``thaw_every_s`` has passed."""
        if not self._installed:
            return
        if now - self._thawed_at >= self.thaw_every_s:
            self._thawed_at = now
            gc.unfreeze()
            gc.collect()  # sets `due`: frozen again just below
            self.thaws += 1
        if self.due:
            self.due = False
            gc.freeze()
            self.freezes += 1


SURVIVORS = _SurvivorFreezer()


class Gateway:
    """Everything one gateway process needs to answer select requests."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = Keys(settings.redis_prefix)
        secret = settings.token_secret.encode()
        if not secret:
            logger.warning(
                "KEYART_TOKEN_SECRET is empty: tokens verify only in this process"
            )
            secret = secrets.token_bytes(32)
        self.signer = TokenSigner(secret)
        # Poster metadata barely changes (whether a poster may be served is
        # read live from the video's set and retired hash on every request),
        # so it is kept for minutes: a large catalog is not re-read per row.
        self.posters = PosterCache(ttl_s=max(POSTER_TTL_S, settings.gateway_cache_s))
        self.models = ModelCache(self.keys, settings)
        self.rng = np.random.default_rng(settings.seed)
        self.book = PolicyBook(settings, self.models)
        self.retirement = Retirement(
            settings.seed, settings.prior_alpha, settings.prior_beta
        )
        self.decider = RowDecider(
            self.book,
            self.retirement,
            self.posters,
            self.rng,
            settings.split_by_placement,
            settings.split_by_segment,
            ranker=Ranker.load(settings.ranker_path),
            ranker_strength=settings.ranker_prior_strength,
        )
        self.fallback = FallbackCache(self.posters)
        self.rules = RulesDocument()
        self.rules_version = 0
        self._placement_rules: dict[str, RuleConfig] = {}
        self.experiments = ExperimentsDocument()
        self.experiments_version = 0
        self.assigner = Assigner(self.experiments)
        self.redis: Any = None
        self.reader: RowReader | None = None
        self.producer: GatewayProducer | None = None
        self.decision_log: DecisionLog | None = None
        self._failures = 0
        self._skip_until = 0.0
        self._refresher: asyncio.Task[None] | None = None
        self._retirer: asyncio.Task[None] | None = None
        self._lag_probe: asyncio.Task[None] | None = None
        self.loop_lag_s = 0.0
        self._warn = RateLimitedLog(logger, every_s=10.0)
        self._rule_hit_children: dict[str, Any] = {}
        self._decision_children: dict[tuple[str, str], Any] = {}

    # Lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, read the configuration once and start the refresher."""
        import redis.asyncio as aioredis

        budget = self.settings.redis_budget_ms / 1000
        pool = aioredis.BlockingConnectionPool.from_url(
            self.settings.redis_url,
            max_connections=64,
            timeout=budget,
            socket_connect_timeout=max(budget, 0.2),
            socket_timeout=2.0,
        )
        self.redis = aioredis.Redis(connection_pool=pool)
        self.reader = RowReader(self.redis, self.keys, self.posters)
        self.producer = GatewayProducer(self.settings)
        self.producer.start(asyncio.get_running_loop())
        self.decision_log = DecisionLog(
            {**producer_config(self.settings), "linger.ms": LINGER_MS},
            self.settings.topic("decisions"),
        )
        await self.decision_log.start()
        try:
            await asyncio.wait_for(self.refresh(), 2.0)
        except Exception as error:  # Redis down at start: serve defaults, retry
            logger.warning("cannot read configuration at start: %r", error)
        self._refresher = asyncio.create_task(self._refresh_forever())
        self._lag_probe = asyncio.create_task(self._probe_lag())
        self._retirer = asyncio.create_task(self.retirement.run())
        logger.info(
            "gateway ready: rules v%s, experiments v%s",
            self.rules_version,
            self.experiments_version,
        )

    async def stop(self) -> None:
        for task in (self._refresher, self._retirer, self._lag_probe):
            if task is not None:
                task.cancel()
        # Not left to the interpreter's exit: uvicorn ends a SIGTERM by
        # re-raising it, and its default action skips the exit handlers that
        # would stop the child (a stopped child would hold them up forever).
        EVALUATOR.close()
        if self.decision_log is not None:
            await self.decision_log.close()
        if self.producer is not None:
            await asyncio.to_thread(self.producer.close)
        if self.redis is not None:
            await self.redis.aclose()
            await self.redis.connection_pool.disconnect()

    async def refresh(self) -> None:
        """Re-read rules, experiments and models when their versions moved."""
        rules, version = await load_document(
            self.redis, self.keys.config("rules"), RulesDocument
        )
        if version != self.rules_version:
            self.set_rules(rules, version)  # type: ignore[arg-type]
        experiments, version = await load_document(
            self.redis, self.keys.config("experiments"), ExperimentsDocument
        )
        if version != self.experiments_version:
            self.set_experiments(experiments, version)  # type: ignore[arg-type]
        await self.models.refresh(self.redis)

    def set_rules(self, rules: RulesDocument, version: int) -> None:
        self.rules, self.rules_version = rules, version
        self._placement_rules = {p: rules.for_placement(p) for p in PLACEMENTS}
        logger.info("rules version %s in use", version)

    def set_experiments(self, experiments: ExperimentsDocument, version: int) -> None:
        self.experiments, self.experiments_version = experiments, version
        self.assigner = Assigner(experiments)
        logger.info("experiments version %s in use", version)

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.gateway_cache_s)
            if time.monotonic() < self._skip_until:
                continue
            try:
                await asyncio.wait_for(self.refresh(), 2.0)
            except Exception as error:  # keep serving what is cached
                self._warn.warning("refresh", "cannot refresh configuration: %r", error)

    # Select ---------------------------------------------------------------------

    def rules_for(self, placement: str) -> RuleConfig:
        found = self._placement_rules.get(placement)
        if found is None:
            found = self._placement_rules[placement] = self.rules.for_placement(
                placement
            )
        return found

    async def select(self, request: SelectRequest) -> dict[str, Any]:
        """Answer one row (see the module docstring)."""
        started = time.perf_counter()
        variant = self.assigner.assign(request.user_id)
        placement = PLACEMENTS[request.placement]
        rules = self.rules_for(request.placement)
        states, reason = await self._read(request, rules)
        if states is None:
            decisions = self.fallback.decide(request.video_ids, placement, reason)
            metrics.FALLBACKS.labels(reason=reason).inc(len(decisions))
        else:
            self.fallback.remember(states)
            try:
                decisions = self.decider.decide_row(
                    variant.policy,
                    placement,
                    rules,
                    states,
                    request.context,
                    cue_text(request.cues),
                    request.segment,
                )
            except Exception:  # unreadable live state must not cost a 5xx
                logger.exception("cannot decide a row from its live state")
                decisions = self.fallback.decide(
                    request.video_ids, placement, "state_error"
                )
                metrics.FALLBACKS.labels(reason="state_error").inc(len(decisions))
        response = self._answer(request, variant.name, variant.policy, decisions)
        metrics.ROW_SECONDS.observe(time.perf_counter() - started)
        return response

    async def _read(
        self, request: SelectRequest, rules: RuleConfig
    ) -> tuple[list[Any] | None, str]:
        assert self.reader is not None
        now = time.monotonic()
        if now < self._skip_until:
            return None, "circuit_open"
        started = time.perf_counter()
        try:
            # A timeout scope, not wait_for: the read runs in this task
            # instead of a new one per row.
            async with asyncio.timeout(self.settings.redis_budget_ms / 1000):
                states = await self.reader.read(
                    request.user_id,
                    request.video_ids,
                    rules.exposure_window_s,
                    rules.deweight_recency_s,
                )
        except TimeoutError:
            return None, self._failed("redis_timeout")
        except Exception as error:  # RedisError, OSError: serve the fallback
            self._warn.warning("redis", "redis read failed: %r", error)
            return None, self._failed("redis_error")
        metrics.REDIS_SECONDS.observe(time.perf_counter() - started)
        if self._failures:
            logger.info("redis answers again; live state is back")
            metrics.CIRCUIT_OPEN.set(0)
        self._failures = 0
        return states, ""

    async def _probe_lag(self) -> None:
        """Keep :attr:`loop_lag_s`: how late a 50 ms sleep wakes up."""
        while True:
            started = time.perf_counter()
            await asyncio.sleep(0.05)
            self.loop_lag_s = time.perf_counter() - started - 0.05
            SURVIVORS.freeze_due(time.monotonic())

    def _failed(self, reason: str) -> str:
        budget = self.settings.redis_budget_ms / 1000
        if reason == "redis_timeout" and self.loop_lag_s > budget / 2:
            return reason  # the process is congested, not Redis
        self._failures += 1
        if self._failures >= CIRCUIT_FAILURES:
            self._skip_until = time.monotonic() + CIRCUIT_OPEN_S
            metrics.CIRCUIT_OPEN.set(1)
            self._warn.warning(
                "circuit",
                "redis failed %s times (%s): skipping it for %.1f s",
                self._failures,
                reason,
                CIRCUIT_OPEN_S,
            )
        return reason

    def _answer(
        self,
        request: SelectRequest,
        variant: str,
        policy: str,
        decisions: list[VideoDecision],
    ) -> dict[str, Any]:
        now_ms = int(time.time() * 1000)
        request_id = request.request_id or secrets.token_hex(8)
        prefix = secrets.token_hex(8)
        slots = []
        # Counted once per row from flat lists: Counter.update is a Python
        # call, twenty of them a row.
        rule_hits: list[str] = []
        policies: list[str] = []
        logged = []  # the decision log's rows (see gateway.decision_log)
        experiment_version = self.experiments_version
        base = self.settings.poster_url_base.rstrip("/")
        for i, d in enumerate(decisions):
            decision_id = f"d{prefix}{i:03x}"
            poster = d.poster
            token = None
            image_url = None
            if poster is not None:
                token = self.signer.sign_fields(  # the ImpressionToken fields
                    decision_id,
                    request.user_id,
                    d.video_id,
                    poster.poster_id,
                    request.placement,
                    d.policy,
                    variant,
                    d.model_version,
                    d.propensity,
                    now_ms,
                    experiment_version,
                    request.segment,
                )
                image_url = poster.image_url
                if image_url and not image_url.startswith(("http://", "https://", "/")):
                    image_url = f"{base}/{image_url}"
                policies.append(d.policy)
            slots.append(
                {
                    "video_id": d.video_id,
                    "poster_id": poster.poster_id if poster else None,
                    "image_url": image_url,
                    "token": token,
                    "propensity": d.propensity,
                    "fallback": d.fallback,
                    "reason": d.reason,
                }
            )
            rule_hits += d.rules
            logged.append(
                (
                    decision_id,
                    d.video_id,
                    poster.poster_id if poster else "",
                    d.policy,
                    d.propensity,
                    d.model_version,
                    d.candidates,
                    d.scores,
                    d.rules + [d.reason] if d.reason else d.rules,
                    d.fallback,
                )
            )
            if d.retired:
                asyncio.get_running_loop().create_task(self._retire(d))
        if self.decision_log is not None:
            self.decision_log.log(
                (
                    now_ms,
                    request_id,
                    request.user_id,
                    request.placement,
                    variant,
                    experiment_version,
                    request.context,
                    logged,
                )
            )
        for rule, hits in Counter(rule_hits).items():
            self._rule_hits(rule).inc(hits)
        for used, count in Counter(policies).items():
            self._decisions(variant, used).inc(count)
        return {
            "request_id": request_id,
            "variant": variant,
            "policy": policy,
            "experiment_version": experiment_version,
            "slots": slots,
        }

    def _rule_hits(self, rule: str) -> Any:
        # A labelled child is found once: labels() takes a lock and builds a
        # key on every call, several times per row.
        found = self._rule_hit_children.get(rule)
        if found is None:
            found = self._rule_hit_children[rule] = metrics.RULE_HITS.labels(rule=rule)
        return found

    def _decisions(self, variant: str, policy: str) -> Any:
        found = self._decision_children.get((variant, policy))
        if found is None:
            found = metrics.DECISIONS.labels(variant=variant, policy=policy)
            self._decision_children[variant, policy] = found
        return found

    async def _retire(self, decision: VideoDecision) -> None:
        """Record posters the retirement rule retired, once across processes."""
        now_ms = int(time.time() * 1000)
        for poster_id, reason in decision.retired:
            try:
                created = await self.redis.hsetnx(
                    self.keys.retired(decision.video_id), poster_id, reason
                )
            except Exception as error:  # the next request will try again
                self._warn.warning("retire", "cannot record a retirement: %r", error)
                return
            if not created:
                continue
            metrics.RETIREMENTS.inc()
            logger.info(
                "retired poster %s of video %s: %s",
                poster_id,
                decision.video_id,
                reason,
                extra={"poster_id": poster_id, "video_id": decision.video_id},
            )
            meta = self.posters.peek(poster_id)
            if self.producer is not None and meta is not None:
                self.producer.log(
                    "poster_published",
                    {
                        "event_id": f"retire-{poster_id}-{now_ms}",
                        "event_time": now_ms,
                        "video_id": decision.video_id,
                        "poster_id": poster_id,
                        "image_url": meta.image_url,
                        "aspect": meta.aspect,
                        "placements": list(meta.placements),
                        "features": meta.features,
                        "tags": sorted(meta.tags),
                        "reviewer": f"gateway:retirement:{reason}",
                        "retired": True,
                    },
                )
