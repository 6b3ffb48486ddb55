"""Read one row's live state from Redis in a single round trip.

A Lua script takes, for every video of the row, its arms hash, approved
poster set, retired posters, exposure hash and the user's seen set, and
answers all of them in one reply: the gateway pays one network round trip per
row, and the exposure window is summed next to the data. Poster metadata
(image URL, aspect, features, tags, embedding) changes rarely and is cached
in process memory for ten minutes; only posters not in the cache cost a
second round trip.

A request's work is bounded: each video keeps at most
:attr:`RowReader.max_candidates_per_video` posters, and the whole row at most
:attr:`RowReader.max_candidates_per_row` (settings ``max_candidates_per_video``
and ``max_candidates_per_row``), the best by all-time posterior click rate with
a Beta(1, 1) prior (a poster without impressions counts as 0.5, so new art
keeps its chance against proven weak posters), ties by poster id. Posters past
the cap are not scored, not fetched and cannot be chosen: a title with more
fresh posters than the cap serves only the first of them by id until some are
retired.

The script addresses several keys of different hash slots, and builds them
from their prefixes instead of declaring them, so it needs a single Redis (or a
replica of one), not Redis Cluster.

Exposure fields are ``{poster}|{bucket}`` with ``bucket = event_ms // 600000``
(10-minute buckets); the collector increments them from impressions. A window
is rounded up to whole buckets, and buckets older than a day are deleted by
the script as it meets them.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np
import orjson
from redis.exceptions import NoScriptError

from keyart.keys import Keys, escape

__all__ = [
    "EXPOSURE_BUCKET_MS",
    "PosterCache",
    "PosterMeta",
    "VideoState",
    "best_candidates",
    "exposure_field",
    "parse_poster",
    "tag_phrase",
    "RowReader",
]

_NON_WORD = re.compile(r"[^\w]+")

EXPOSURE_BUCKET_MS = 600_000
EXPOSURE_KEEP_BUCKETS = 24 * 6  # a day

# Keys are built here from their prefixes and the escaped video ids, not passed
# as KEYS: a row's five keys per video made a ~100-argument call whose packing
# cost the gateway more CPU than the script costs Redis. For the same reason the
# ids come as one argument, separated by spaces (never part of an escaped id).
_ROW_SCRIPT = """
local out = {}
local min_bucket = tonumber(ARGV[1])
local stale_bucket = tonumber(ARGV[2])
local seen_min = ARGV[3]
local arms, posters, retired = ARGV[4], ARGV[5], ARGV[6]
local exposure, seen = ARGV[7], ARGV[8]
local ids = ARGV[9]
local start = 1
while true do
  local stop = string.find(ids, ' ', start, true)
  local video = string.sub(ids, start, (stop or 0) - 1)
  local expo_key = exposure .. video
  out[#out + 1] = redis.call('HGETALL', arms .. video)
  out[#out + 1] = redis.call('SMEMBERS', posters .. video)
  out[#out + 1] = redis.call('HKEYS', retired .. video)
  local expo = redis.call('HGETALL', expo_key)
  local sums = {}
  local order = {}
  local stale = {}
  for j = 1, #expo, 2 do
    local field = expo[j]
    local sep = string.find(field, '|', 1, true)
    if sep then
      local bucket = tonumber(string.sub(field, sep + 1))
      local poster = string.sub(field, 1, sep - 1)
      if bucket and bucket >= min_bucket then
        if not sums[poster] then
          sums[poster] = 0
          order[#order + 1] = poster
        end
        sums[poster] = sums[poster] + tonumber(expo[j + 1])
      elseif bucket and bucket < stale_bucket then
        stale[#stale + 1] = field
      end
    end
  end
  if #stale > 0 then
    redis.call('HDEL', expo_key, unpack(stale))
  end
  local flat = {}
  for _, poster in ipairs(order) do
    flat[#flat + 1] = poster
    flat[#flat + 1] = tostring(sums[poster])
  end
  out[#out + 1] = flat
  out[#out + 1] = redis.call('ZRANGEBYSCORE', seen .. video, seen_min, '+inf')
  if not stop then
    break
  end
  start = stop + 1
end
return out
"""


def exposure_field(escaped_poster: str, event_ms: int) -> str:
    """The exposure hash field of a poster (already escaped) at ``event_ms``."""
    return f"{escaped_poster}|{event_ms // EXPOSURE_BUCKET_MS}"


@dataclass(slots=True)
class PosterMeta:
    """What the gateway needs to know about one poster."""

    poster_id: str
    video_id: str
    image_url: str
    aspect: str
    placements: tuple[str, ...]
    features: dict[str, float]
    tags: frozenset[str]
    embedding: np.ndarray | None
    status: str
    created_ms: int
    tag_phrases: tuple[str, ...] = ()
    """Tags normalised for scene matching (see :func:`gateway.rules.tag_phrase`)."""


def _text(value: Any, default: str = "") -> str:
    if value is None:
        return default
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_poster(poster_id: str, raw: dict[bytes, bytes]) -> PosterMeta | None:
    """Parse a ``{p}:poster:{id}`` hash; None when it is absent or unreadable."""
    if not raw:
        return None
    try:
        embedding_raw = raw.get(b"embedding") or b""
        embedding = None
        if embedding_raw and len(embedding_raw) % 4 == 0:
            vector = np.frombuffer(embedding_raw, dtype="<f4").astype(np.float64)
            norm = float(np.linalg.norm(vector))
            embedding = vector / norm if norm > 0 else None
        features = orjson.loads(raw.get(b"features") or b"{}")
        tags = frozenset(
            str(t).casefold() for t in orjson.loads(raw.get(b"tags") or b"[]")
        )
        return PosterMeta(
            poster_id=poster_id,
            video_id=_text(raw.get(b"video_id")),
            image_url=_text(raw.get(b"image_url")),
            aspect=_text(raw.get(b"aspect")),
            placements=tuple(orjson.loads(raw.get(b"placements") or b"[]")),
            features={str(k): float(v) for k, v in features.items()},
            tags=tags,
            embedding=embedding,
            status=_text(raw.get(b"status"), "approved"),
            created_ms=int(_text(raw.get(b"created_ms"), "0") or 0),
            tag_phrases=tuple(tag_phrase(t) for t in tags),
        )
    except (ValueError, TypeError, AttributeError):
        return None


def tag_phrase(tag: str) -> str:
    """A tag lower-cased, its words padded by spaces, for whole-word matching
    against :func:`gateway.rules.cue_text`."""
    words = _NON_WORD.sub(" ", tag.casefold()).split()
    return f" {' '.join(words)} " if words else ""


@dataclass(slots=True)
class VideoState:
    """One video's live state as read for one request."""

    video_id: str
    arms: dict[bytes, bytes]
    poster_ids: list[str]
    retired: frozenset[str]
    exposure: dict[str, int]
    """Escaped poster id -> impressions inside the exposure window."""
    seen: frozenset[str]
    """Poster ids this user was shown recently."""

    @classmethod
    def empty(cls, video_id: str) -> VideoState:
        return cls(video_id, {}, [], frozenset(), {}, frozenset())


def best_candidates(
    poster_ids: list[str], arms: dict[bytes, bytes], limit: int
) -> list[str]:
    """The ``limit`` best posters by posterior click rate, in poster id order.

    Arm fields split by placement or segment (``poster|placement|segment``)
    are summed per poster.

    Examples
    --------
    >>> arms = {b"a": b"100,1,100,1", b"b": b"100,20,100,20", b"_updated_ms": b"1"}
    >>> best_candidates(["a", "b", "c"], arms, 2)
    ['b', 'c']
    """
    if len(poster_ids) <= limit:
        return sorted(poster_ids)
    totals: dict[str, list[int]] = {}
    for field, value in arms.items():
        name = field.decode(errors="replace").split("|", 1)[0]
        if name.startswith("_"):
            continue
        parts = value.split(b",")
        try:
            impressions, clicks = int(parts[0]), int(parts[1])
        except (ValueError, IndexError):
            continue
        total = totals.setdefault(name, [0, 0])
        total[0] += impressions
        total[1] += clicks

    def rank(poster_id: str) -> tuple[float, str]:
        impressions, clicks = totals.get(escape(poster_id), (0, 0))
        return -(clicks + 1) / (impressions + 2), poster_id

    return sorted(sorted(poster_ids, key=rank)[:limit])


_expiry = itemgetter(0)


class PosterCache:
    """Poster metadata by id, each entry kept for ``ttl_s`` seconds."""

    def __init__(self, ttl_s: float, max_entries: int = 200_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, PosterMeta | None]] = {}
        self.version = 0
        """Number of :meth:`put` calls so far: while it stays the same, every
        entry :meth:`entries` returns stays the same."""

    def get(self, poster_id: str, now: float) -> tuple[bool, PosterMeta | None]:
        """``(found, meta)``; a found None means the poster hash is absent."""
        entry = self._entries.get(poster_id)
        if entry is None or entry[0] < now:
            return False, None
        return True, entry[1]

    def entries(self, poster_ids: list[str]) -> list[object]:
        """Each poster's cache entry however old, None when absent: an entry
        is replaced, never changed, so an unchanged entry means unchanged
        metadata."""
        return list(map(self._entries.get, poster_ids))

    def missing(self, poster_ids: list[str], now: float) -> list[str]:
        """The ids of ``poster_ids`` that :meth:`get` would not find."""
        entries = self._entries
        found = list(map(entries.get, poster_ids))
        if None not in found and min(map(_expiry, found), default=now) >= now:
            return []  # the usual case, checked without a Python loop
        missing = []
        for poster_id in poster_ids:
            entry = entries.get(poster_id)
            if entry is None or entry[0] < now:
                missing.append(poster_id)
        return missing

    def peek(self, poster_id: str) -> PosterMeta | None:
        """The cached metadata however old (for the fallback path)."""
        entry = self._entries.get(poster_id)
        return entry[1] if entry else None

    def put(self, poster_id: str, meta: PosterMeta | None, now: float) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()  # rare; cheaper than tracking recency per hit
        self._entries[poster_id] = (now + self.ttl_s, meta)
        self.version += 1


class RowReader:
    """Read rows with one script call, plus poster metadata not yet cached."""

    max_candidates_per_video = 50
    max_candidates_per_row = 1000

    def __init__(self, redis: Any, keys: Keys, posters: PosterCache) -> None:
        self.redis = redis
        self.keys = keys
        self.posters = posters
        script = _ROW_SCRIPT.encode()
        self._sha = hashlib.sha1(script, usedforsecurity=False).hexdigest()

    async def raw(
        self,
        user_id: str,
        video_ids: list[str],
        exposure_window_s: float,
        seen_recency_s: float,
    ) -> list[Any]:
        """The row script's reply: five lists per video (see :meth:`read`)."""
        now_ms = int(time.time() * 1000)
        keys = self.keys
        window_buckets = int(np.ceil(exposure_window_s * 1000 / EXPOSURE_BUCKET_MS))
        current = now_ms // EXPOSURE_BUCKET_MS
        args = (
            current - window_buckets + 1,
            current - EXPOSURE_KEEP_BUCKETS,
            now_ms - int(seen_recency_s * 1000),
            keys.arms(""),
            keys.posters(""),
            keys.retired(""),
            keys.exposure(""),
            keys.seen(user_id, ""),
            " ".join(map(escape, video_ids)),
        )
        # EVALSHA through execute_command: redis-py's Script object adds an
        # import, a deprecation wrapper and tuple copies to every row. A Redis
        # that lost its scripts (a restart, SCRIPT FLUSH) answers NOSCRIPT
        # once, and the script is loaded again.
        try:
            return await self.redis.execute_command(  # type: ignore[no-any-return]
                "EVALSHA", self._sha, 0, *args
            )
        except NoScriptError:
            self._sha = await self.redis.script_load(_ROW_SCRIPT)
            return await self.redis.execute_command(  # type: ignore[no-any-return]
                "EVALSHA", self._sha, 0, *args
            )

    async def read(
        self,
        user_id: str,
        video_ids: list[str],
        exposure_window_s: float,
        seen_recency_s: float,
    ) -> list[VideoState]:
        """Every video's state, in the order asked."""
        reply = await self.raw(user_id, video_ids, exposure_window_s, seen_recency_s)
        per_video = max(
            1,
            min(
                self.max_candidates_per_video,
                self.max_candidates_per_row // max(1, len(video_ids)),
            ),
        )
        states = []
        empty: frozenset[str] = frozenset()
        decode = bytes.decode
        replies = iter(reply)
        # C-level maps and positional construction: this loop runs for every
        # video of every row.
        for video, arms, members, retired, expo, seen in zip(
            video_ids, replies, replies, replies, replies, replies, strict=True
        ):
            arm_fields = dict(zip(arms[::2], arms[1::2], strict=True))
            poster_ids = list(map(decode, members))
            states.append(
                VideoState(
                    video,
                    arm_fields,
                    sorted(poster_ids)
                    if len(poster_ids) <= per_video
                    else best_candidates(poster_ids, arm_fields, per_video),
                    frozenset(map(decode, retired)) if retired else empty,
                    dict(zip(map(decode, expo[::2]), map(int, expo[1::2]), strict=True))
                    if expo
                    else {},
                    frozenset(map(decode, seen)) if seen else empty,
                )
            )
        await self._fill_posters(states)
        return states

    async def _fill_posters(self, states: list[VideoState]) -> None:
        now = time.monotonic()
        missing = self.posters.missing(
            [p for state in states for p in state.poster_ids], now
        )
        if not missing:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for poster_id in missing:
                pipe.hgetall(self.keys.poster(poster_id))
            replies = await pipe.execute()
        for poster_id, raw in zip(missing, replies, strict=True):
            self.posters.put(poster_id, parse_poster(poster_id, raw), now)
