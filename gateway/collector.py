"""The event collector: batches of impressions and clicks from clients to Kafka.

Steps of :meth:`Collector.collect`:

1. parse the batch and validate each event on its own (a bad event is listed
   in the answer, the others go on);
2. verify each event's impression token and fill the record from it, so the
   user, video, poster, policy and propensity are what the gateway decided,
   and check its time: within the client clock skew of now and of the
   token's issue, and young enough for the learner's windows
   (``gateway._event_time``);
3. claim, in one script call, each event's id and its token's slot (the
   metadata of posters not cached is fetched alongside); impression ids and
   click ids are separate namespaces, as in the learner; claims are *pending*
   for ``collect_pending_s``: a resend of a pending event is answered with a
   retryable error, a resend of a delivered one is a duplicate;
4. encode with the schemas codec and produce, keyed by video id, and wait for
   the broker's acknowledgement;
5. confirm the claims of acknowledged events (kept ``dedupe_window_s``, the
   token slot as long as the token is valid), release those the broker refused
   (the client may resend them) and, for delivered impressions, record the
   exposure bucket and the user's seen set that the exposure-cap and
   deweighting rules read.

An event id counts as collected only once the broker acknowledged it: if the
process dies between steps 3 and 5, its pending claims expire after
``collect_pending_s`` and the client's resend is then produced. A record
already handed to the broker before the process died may then reach Kafka
twice; the learner drops the second copy by event id.

One token, one impression, one click. The token names one decision (one
poster in one slot), so the collector takes at most one impression and at
most one click per token: the first event of each type claims the token's
slot and later ones, under any event id, are refused with ``token: already
backs impression ...``. A click is thus counted at most once per impression.

A click goes with its impression's token. Each event id's claim keeps the
decision of its token, so a click naming an impression the collector knows,
which came with another decision, is refused (``impression_id: ... came with
another token``): another user's click cannot be credited to it. An impression
the collector does not know (its claim expired after ``dedupe_window_s``, or
it is not sent yet) leaves the click unchecked, as the learner will judge it:
``no_impression`` when the impression never comes, and credited when it comes
later with the click's poster, whatever its token. Clients that send a click
after its impression are checked fully.

Redis budget. All Redis work of a batch has ``collect_redis_budget_ms``. When
Redis does not answer in time, the batch is produced without the duplicate
and token-slot checks (outcome ``undeduplicated``; the learner drops repeated
event ids but not repeated tokens) rather than refused, and after
``CIRCUIT_FAILURES`` failures Redis is skipped for ``CIRCUIT_OPEN_S`` seconds
so every batch answers within the budget.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError

from gateway import metrics
from gateway._batch import BatchError, read_batch
from gateway._claims import (
    AFTER,
    CLAIM,
    CLAIMED,
    DUPLICATE,
    OTHER_DECISION,
    PENDING,
    SLOT_PENDING,
    SLOT_USED,
)
from gateway._errors import error_message
from gateway._event_time import EventTimeBounds
from gateway._ratelimit import RateLimitedLog
from gateway.broker import GatewayProducer
from gateway.models import ClickIn, EventError, ImpressionIn
from gateway.service import CIRCUIT_FAILURES, CIRCUIT_OPEN_S
from gateway.state import PosterCache, exposure_field, parse_poster
from gateway.token import ImpressionToken, TokenError, TokenSigner
from keyart.keys import Keys, escape
from keyart.settings import Settings
from schemas.codec import Codec, get_codec

__all__ = ["BatchError", "Collector", "SEEN_TTL_S"]

logger = logging.getLogger("gateway")

SEEN_TTL_S = 30 * 86_400
EXPOSURE_TTL_S = 2 * 86_400

_EVENT = TypeAdapter(Annotated[ImpressionIn | ClickIn, Field(discriminator="type")])


def _reason(error: ValidationError) -> str:
    first = error.errors(include_url=False)[0]
    where = ".".join(str(p) for p in first["loc"]) or "event"
    return f"{where}: {error_message(first)}"


class Collector:
    """Validate, dedupe and produce client events (see the module's steps)."""

    def __init__(
        self,
        settings: Settings,
        keys: Keys,
        redis: Any,
        producer: GatewayProducer,
        signer: TokenSigner,
        posters: PosterCache,
        codec: Codec | None = None,
        loop_lag: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.redis = redis
        self.producer = producer
        self.signer = signer
        self.posters = posters
        self.codec = codec or get_codec()
        self._warn = RateLimitedLog(logger)
        self._claim_script = redis.register_script(CLAIM)
        self._after_script = redis.register_script(AFTER)
        self._budget_s = settings.collect_redis_budget_ms / 1000
        self._times = EventTimeBounds(settings)
        self._loop_lag = loop_lag
        self._failures = 0
        self._skip_until = 0.0

    def _record(
        self, event: ImpressionIn | ClickIn, token: ImpressionToken
    ) -> tuple[str, dict[str, Any]]:
        if isinstance(event, ClickIn):
            return "click", {
                "event_id": event.event_id,
                "event_time": event.event_time,
                "impression_id": event.impression_id,
                "user_id": token.user_id,
                "video_id": token.video_id,
                "poster_id": token.poster_id,
                "placement": token.placement,
            }
        meta = self.posters.peek(token.poster_id)
        return "impression", {
            "event_id": event.event_id,
            "event_time": event.event_time,
            "user_id": token.user_id,
            "video_id": token.video_id,
            "poster_id": token.poster_id,
            "placement": token.placement,
            "variant": token.variant,
            "policy": token.policy,
            "propensity": float(token.propensity),
            "model_version": int(token.model_version),
            "decision_id": token.decision_id,
            "segment": token.segment,
            "context": event.context,
            "poster_features": dict(meta.features) if meta else {},
        }

    def _claim_keys(
        self, event: ImpressionIn | ClickIn, token: ImpressionToken
    ) -> tuple[str, str]:
        """The event id's claim and its token slot's."""
        return (
            self.keys.collected(event.type, event.event_id),
            self.keys.token_slot(event.type, token.decision_id),
        )

    async def collect(
        self, body: bytes, content_type: str | None
    ) -> tuple[int, dict[str, Any]]:
        """Take one batch sent with ``content_type``; return the HTTP status and
        the answer body."""
        events = read_batch(body, content_type, self.settings.max_events_per_batch)
        now_ms = int(time.time() * 1000)
        ttl_ms = int(self.settings.token_ttl_s * 1000)
        errors: list[EventError] = []
        outcomes: Counter[tuple[str, str]] = Counter()
        valid: list[tuple[int, ImpressionIn | ClickIn, ImpressionToken]] = []
        seen_ids: set[tuple[str, str]] = set()
        slot_to_event: dict[tuple[str, str], str] = {}
        duplicates = 0
        for index, raw in enumerate(events):  # Steps 1 and 2
            kind = raw.get("type", "?") if isinstance(raw, dict) else "?"
            kind = kind if kind in ("impression", "click") else "unknown"
            try:
                event = _EVENT.validate_python(raw)
                token = self.signer.verify(event.token, now_ms, ttl_ms)
            except ValidationError as error:
                errors.append(EventError(index=index, reason=_reason(error)))
                outcomes[kind, "invalid"] += 1
                continue
            except TokenError as error:
                errors.append(EventError(index=index, reason=f"token: {error}"))
                outcomes[kind, "invalid"] += 1
                continue
            time_error = self._times.reason(event.event_time, token.issued_ms, now_ms)
            if time_error is not None:
                errors.append(EventError(index=index, reason=time_error))
                outcomes[kind, "invalid"] += 1
                continue
            if (event.type, event.event_id) in seen_ids:
                duplicates += 1
                outcomes[kind, "duplicate"] += 1
                continue
            seen_ids.add((event.type, event.event_id))
            valid.append((index, event, token))

        claimed = await self._claim(valid)  # Step 3
        checked = claimed is not None
        pending = []
        unusable: list[tuple[ImpressionIn | ClickIn, ImpressionToken]] = []
        records = []
        for (index, event, token), claim in zip(
            valid, claimed or [CLAIMED] * len(valid), strict=True
        ):
            slot = (event.type, token.decision_id)
            if (
                claim in (CLAIMED, SLOT_PENDING) and slot in slot_to_event
            ):  # taken in this batch
                errors.append(_slot_used(index, event.type, slot_to_event[slot]))
                outcomes[event.type, "invalid"] += 1
                continue
            if claim == CLAIMED:
                slot_to_event[slot] = event.event_id
            if claim == DUPLICATE:
                duplicates += 1
                outcomes[event.type, "duplicate"] += 1
                continue
            if claim in (PENDING, SLOT_PENDING):
                errors.append(
                    EventError(
                        index=index,
                        reason="event_id: waiting for the broker in another "
                        "batch; resend later",
                        retry=True,
                    )
                )
                outcomes[event.type, "pending"] += 1
                continue
            if claim == SLOT_USED:
                errors.append(_slot_used(index, event.type, None))
                outcomes[event.type, "invalid"] += 1
                continue
            if claim == OTHER_DECISION and isinstance(event, ClickIn):
                errors.append(_other_decision(index, event.impression_id))
                outcomes[event.type, "invalid"] += 1
                continue
            kind, record = self._record(event, token)  # Step 4
            try:
                value = self.codec.encode(kind, record)
            except ValueError as error:
                unusable.append((event, token))
                errors.append(EventError(index=index, reason=str(error)))
                outcomes[event.type, "invalid"] += 1
                continue
            records.append((kind, value, record["video_id"]))
            pending.append((index, event, token))
        results = await self.producer.produce_many(records)

        accepted = 0
        failed = list(unusable)
        delivered = []
        for (index, event, token), outcome in zip(pending, results, strict=True):
            if outcome is None:
                accepted += 1
                delivered.append((event, token))
                outcomes[event.type, "produced"] += 1
            else:
                failed.append((event, token))
                errors.append(
                    EventError(index=index, reason=f"broker: {outcome}", retry=True)
                )
                outcomes[event.type, "failed"] += 1
        if checked:
            await self._after(failed, delivered, now_ms)  # Step 5

        for (kind, outcome), count in outcomes.items():
            metrics.COLLECTED.labels(kind=kind, outcome=outcome).inc(count)
        errors.sort(key=lambda e: e.index)
        status = 503 if failed and not accepted else 200
        return status, {
            "accepted": accepted,
            "duplicates": duplicates,
            "errors": [e.model_dump() for e in errors],
        }

    async def _redis(self, call: Any) -> Any:
        """Await ``call`` within the batch budget, through the circuit breaker."""
        if time.monotonic() < self._skip_until:
            call.close()
            raise _Skipped("circuit open")
        try:
            answer = await asyncio.wait_for(call, self._budget_s)
        except TimeoutError:
            if self._loop_lag() > self._budget_s / 2:
                raise  # the process is congested, not Redis
            self._count_failure()
            raise
        except Exception:
            self._count_failure()
            raise
        self._failures = 0
        return answer

    def _count_failure(self) -> None:
        self._failures += 1
        if self._failures >= CIRCUIT_FAILURES:
            self._skip_until = time.monotonic() + CIRCUIT_OPEN_S
            self._warn.warning(
                "circuit",
                "redis failed %s times: batches skip it for %.1f s",
                self._failures,
                CIRCUIT_OPEN_S,
            )

    async def _claim(
        self, valid: list[tuple[int, ImpressionIn | ClickIn, ImpressionToken]]
    ) -> list[int] | None:
        """Claim codes (``gateway._claims``) per event; None when Redis failed."""
        if not valid:
            return []
        missing = sorted(
            {
                token.poster_id
                for _, event, token in valid
                if event.type == "impression"
                and self.posters.peek(token.poster_id) is None
            }
        )
        keys: list[str] = []
        args: list[Any] = [int(self.settings.collect_pending_s * 1000)]
        for _, event, token in valid:
            id_key, slot_key = self._claim_keys(event, token)
            named = (
                self.keys.collected("impression", event.impression_id)
                if isinstance(event, ClickIn)
                else id_key
            )
            keys += (id_key, slot_key, named)
            args += (event.event_id, token.decision_id, event.type[0])

        async def both() -> tuple[Any, list[Any]]:
            claims = self._claim_script(keys=keys, args=args)
            if not missing:
                return await claims, []
            async with self.redis.pipeline(transaction=False) as pipe:
                for poster_id in missing:
                    pipe.hgetall(self.keys.poster(poster_id))
                return await asyncio.gather(claims, pipe.execute())

        try:
            fetched, posters = await self._redis(both())
        except Exception as error:  # Redis down: produce without the check
            self._warn.warning("dedupe", "cannot dedupe events: %r", error)
            metrics.COLLECTED.labels(kind="any", outcome="undeduplicated").inc(
                len(valid)
            )
            return None
        now = time.monotonic()
        for poster_id, raw in zip(missing, posters, strict=True):
            self.posters.put(poster_id, parse_poster(poster_id, raw), now)
        return [int(r) for r in fetched]

    async def _after(
        self,
        failed: list[tuple[ImpressionIn | ClickIn, ImpressionToken]],
        delivered: list[tuple[ImpressionIn | ClickIn, ImpressionToken]],
        now_ms: int,
    ) -> None:
        if not failed and not delivered:
            return
        keys = []
        for event, token in failed:
            keys += self._claim_keys(event, token)
        for event, token in delivered:
            keys += self._claim_keys(event, token)
        dedupe_s = max(1, int(self.settings.dedupe_window_s))
        slot_s = max(dedupe_s, int(self.settings.token_ttl_s) + 1)
        args: list[Any] = [
            2 * len(failed),
            len(delivered),
            now_ms,
            SEEN_TTL_S,
            EXPOSURE_TTL_S,
            dedupe_s,
            slot_s,
        ]
        for event, token in delivered:
            args += (event.event_id, token.decision_id)
        for event, token in delivered:
            if event.type != "impression":
                continue
            keys += (
                self.keys.seen(token.user_id, token.video_id),
                self.keys.exposure(token.video_id),
            )
            args += (token.poster_id, exposure_field(escape(token.poster_id), now_ms))
        try:
            await self._redis(self._after_script(keys=keys, args=args))
        except Exception as error:  # pending claims expire; the events are in Kafka
            self._warn.warning("after", "cannot confirm claims or exposure: %r", error)


class _Skipped(Exception):
    """Redis is skipped for a moment after repeated failures."""


def _other_decision(index: int, impression_id: str) -> EventError:
    return EventError(
        index=index,
        reason=f"impression_id: {impression_id} came with another token (a click "
        "carries the token of the impression it names)",
    )


def _slot_used(index: int, kind: str, other: str | None) -> EventError:
    """The token's slot for ``kind`` is taken, by event ``other`` of this batch
    or, when ``other`` is None, by an event delivered before (the claim script
    answers only that the slot is used, not by which event)."""
    backed = f"{kind} {other}" if other else f"another {kind}"
    return EventError(
        index=index,
        reason=f"token: already backs {backed} (one impression and one click "
        "per token)",
    )
