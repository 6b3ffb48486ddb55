"""The event collector: batches of impressions and clicks from clients to Kafka.

Steps of :meth:`Collector.collect`:

1. parse the batch and validate each event on its own (a bad event is listed
   in the answer, the others go on);
2. verify each event's impression token and fill the record from it, so the
   user, video, poster, policy and propensity are what the gateway decided;
3. claim each event id with ``SET NX`` (kept ``dedupe_window_s``), all in
   one script call (the metadata of posters not cached is fetched alongside);
   an id already claimed is a duplicate and is not produced again;
4. encode with the schemas codec and produce, keyed by video id, and wait for
   the broker's acknowledgement;
5. release the claims of events the broker refused (the client may resend
   them) and, for delivered impressions, record the exposure bucket and the
   user's seen set that the exposure-cap and deweighting rules read.

When Redis is down, events are produced without the duplicate check (the
learner drops duplicates by id again) rather than refused.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Annotated, Any

import orjson
from pydantic import Field, TypeAdapter, ValidationError

from gateway import metrics
from gateway._ratelimit import RateLimitedLog
from gateway.broker import GatewayProducer
from gateway.models import ClickIn, EventError, ImpressionIn
from gateway.state import PosterCache, exposure_field, parse_poster
from gateway.token import ImpressionToken, TokenError, TokenSigner
from keyart.keys import Keys, escape
from keyart.settings import Settings
from schemas.codec import Codec, get_codec

__all__ = ["BatchError", "Collector", "SEEN_TTL_S"]

logger = logging.getLogger("gateway")

SEEN_TTL_S = 30 * 86_400
EXPOSURE_TTL_S = 2 * 86_400
FUTURE_SLACK_MS = 300_000

_EVENT = TypeAdapter(Annotated[ImpressionIn | ClickIn, Field(discriminator="type")])


# One round trip per batch, whatever its size: claim every event id.
_CLAIM = """
local out = {}
for i = 1, #KEYS do
  out[i] = redis.call('SET', KEYS[i], '1', 'NX', 'EX', ARGV[1]) and 1 or 0
end
return out
"""

# Release the claims of undelivered events (the first ARGV[1] keys), then
# for each delivered impression: its user's seen set and its exposure bucket.
_AFTER = """
local released = tonumber(ARGV[1])
for i = 1, released do
  redis.call('DEL', KEYS[i])
end
local arg = 5
for i = released + 1, #KEYS, 2 do
  redis.call('ZADD', KEYS[i], ARGV[2], ARGV[arg])
  redis.call('EXPIRE', KEYS[i], ARGV[3])
  redis.call('HINCRBY', KEYS[i + 1], ARGV[arg + 1], 1)
  redis.call('EXPIRE', KEYS[i + 1], ARGV[4])
  arg = arg + 2
end
return 0
"""


class BatchError(ValueError):
    """The batch as a whole is unusable; the message names the field."""


def _reason(error: ValidationError) -> str:
    first = error.errors(include_url=False)[0]
    where = ".".join(str(p) for p in first["loc"]) or "event"
    return f"{where}: {first['msg']}"


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
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.redis = redis
        self.producer = producer
        self.signer = signer
        self.posters = posters
        self.codec = codec or get_codec()
        self._warn = RateLimitedLog(logger)
        self._claim_script = redis.register_script(_CLAIM)
        self._after_script = redis.register_script(_AFTER)

    def _parse(self, body: bytes) -> list[Any]:
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as error:
            raise BatchError(f"body is not JSON: {error}") from None
        if not isinstance(document, dict) or not isinstance(
            document.get("events"), list
        ):
            raise BatchError('events: expected {"events": [...]}')
        events = document["events"]
        if len(events) > self.settings.max_events_per_batch:
            raise BatchError(
                f"events: {len(events)} events, at most "
                f"{self.settings.max_events_per_batch} (KEYART_MAX_EVENTS_PER_BATCH)"
            )
        return events

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

    async def collect(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """Take one batch; return the HTTP status and the answer body."""
        events = self._parse(body)
        now_ms = int(time.time() * 1000)
        ttl_ms = int(self.settings.token_ttl_s * 1000)
        errors: list[EventError] = []
        outcomes: Counter[tuple[str, str]] = Counter()
        valid: list[tuple[int, ImpressionIn | ClickIn, ImpressionToken]] = []
        seen_ids: set[str] = set()
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
            if event.event_time > now_ms + FUTURE_SLACK_MS:
                errors.append(
                    EventError(index=index, reason="event_time: in the future")
                )
                outcomes[kind, "invalid"] += 1
                continue
            if event.event_id in seen_ids:
                duplicates += 1
                outcomes[kind, "duplicate"] += 1
                continue
            seen_ids.add(event.event_id)
            valid.append((index, event, token))

        claimed = await self._claim(valid)  # Step 3
        pending = []
        unusable: list[str] = []
        records = []
        for (index, event, token), fresh in zip(valid, claimed, strict=True):
            if not fresh:
                duplicates += 1
                outcomes[event.type, "duplicate"] += 1
                continue
            kind, record = self._record(event, token)  # Step 4
            try:
                value = self.codec.encode(kind, record)
            except ValueError as error:
                unusable.append(event.event_id)
                errors.append(EventError(index=index, reason=str(error)))
                outcomes[event.type, "invalid"] += 1
                continue
            records.append((kind, value, record["video_id"]))
            pending.append((index, event, token))
        results = await self.producer.produce_many(records)

        accepted = 0
        failed = []
        delivered = []
        for (index, event, token), outcome in zip(pending, results, strict=True):
            if outcome is None:
                accepted += 1
                delivered.append((event, token))
                outcomes[event.type, "produced"] += 1
            else:
                failed.append(event.event_id)
                errors.append(
                    EventError(index=index, reason=f"broker: {outcome}", retry=True)
                )
                outcomes[event.type, "failed"] += 1
        await self._after(failed + unusable, delivered, now_ms)  # Step 5

        for (kind, outcome), count in outcomes.items():
            metrics.COLLECTED.labels(kind=kind, outcome=outcome).inc(count)
        errors.sort(key=lambda e: e.index)
        status = 503 if failed and not accepted else 200
        return status, {
            "accepted": accepted,
            "duplicates": duplicates,
            "errors": [e.model_dump() for e in errors],
        }

    async def _claim(
        self, valid: list[tuple[int, ImpressionIn | ClickIn, ImpressionToken]]
    ) -> list[bool]:
        if not valid:
            return []
        ttl = max(1, int(self.settings.dedupe_window_s))
        missing = sorted(
            {
                token.poster_id
                for _, event, token in valid
                if event.type == "impression"
                and self.posters.peek(token.poster_id) is None
            }
        )
        try:
            claims = self._claim_script(
                keys=[self.keys.collected(event.event_id) for _, event, _ in valid],
                args=[ttl],
            )
            if missing:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for poster_id in missing:
                        pipe.hgetall(self.keys.poster(poster_id))
                    fetched, posters = await asyncio.wait_for(
                        asyncio.gather(claims, pipe.execute()), 2.0
                    )
            else:
                fetched, posters = await asyncio.wait_for(claims, 2.0), []
        except Exception as error:  # Redis down: produce without the check
            self._warn.warning("dedupe", "cannot dedupe events: %r", error)
            metrics.COLLECTED.labels(kind="any", outcome="undeduplicated").inc(
                len(valid)
            )
            return [True] * len(valid)
        now = time.monotonic()
        for poster_id, raw in zip(missing, posters, strict=True):
            self.posters.put(poster_id, parse_poster(poster_id, raw), now)
        return [bool(r) for r in fetched]

    async def _after(
        self,
        failed: list[str],
        delivered: list[tuple[ImpressionIn | ClickIn, ImpressionToken]],
        now_ms: int,
    ) -> None:
        impressions = [t for e, t in delivered if e.type == "impression"]
        if not failed and not impressions:
            return
        keys = [self.keys.collected(event_id) for event_id in failed]
        args: list[Any] = [len(failed), now_ms, SEEN_TTL_S, EXPOSURE_TTL_S]
        for token in impressions:
            keys += (
                self.keys.seen(token.user_id, token.video_id),
                self.keys.exposure(token.video_id),
            )
            args += (token.poster_id, exposure_field(escape(token.poster_id), now_ms))
        try:
            await asyncio.wait_for(self._after_script(keys=keys, args=args), 2.0)
        except Exception as error:  # the rules then lag; the events are in Kafka
            self._warn.warning("after", "cannot record exposure: %r", error)
