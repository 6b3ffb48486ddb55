"""A live web dashboard of posters, their numbers and the pipeline's health.

The gateway includes :data:`router` when this module imports. One page, plain
HTML and JavaScript without a build step, polls three JSON endpoints:

=================================  ===========================================
path                               what
=================================  ===========================================
``/dashboard``                     the page
``/dashboard/api/videos``          videos with posters or arm state, busiest
                                   first
``/dashboard/api/videos/{id}``     one video's posters: image, status (active,
                                   retired, pending review), all-time and
                                   window CTR, the Beta posterior's 95 %
                                   interval, traffic share per 10-minute
                                   exposure bucket, and the share each
                                   experiment variant's policy gives each
                                   poster now, per placement, and the
                                   decisions the gateway made for each
                                   variant (every worker, every video)
``/dashboard/api/ops``             consumer lag of the learner and the poster
                                   workers, and the learner's state age
=================================  ===========================================

Who may read. The page and its JSON are read-only and open without the admin
token: the numbers (click rates, lag) are meant for an internal page, and
every route that changes anything (rules, experiments, poster review) lives
under ``/admin`` and wants the token (a test walks the application's routes
to hold that). Deploy the gateway's port behind the network boundary when
click rates are not for everyone. Because anyone who reaches the port may call
them, the reads are bounded: each answer is kept for ``ANSWER_CACHE_S``
seconds per process (a burst of calls costs one Redis scan), the video list
holds at most ``MAX_VIDEOS`` titles and one video's answer at most
``MAX_POSTERS_SHOWN`` posters (the most shown first; ``posters_total`` says how
many there are), so a title with thousands of posters is as cheap as one with
two hundred.

Everything here only reads (Redis, the catalog, the broker). Approving or
rejecting a pending poster goes through the review API under ``/admin``, which
wants the admin token; the page offers those buttons only once a token is
entered, and the server still checks it.

Traffic share per variant: see :mod:`gateway._shares`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, Response
from fastapi.routing import APIRoute
from redis.exceptions import RedisError
from scipy.stats import beta

from bandits.state import ArmStats
from gateway._shares import arm_stats, recall, sum_stats, variant_shares
from gateway.placements import PLACEMENTS
from gateway.state import EXPOSURE_BUCKET_MS, best_candidates
from keyart.keys import escape

__all__ = ["router"]

logger = logging.getLogger("gateway")


class _RedisRoute(APIRoute):
    """A route that answers 503 naming Redis when Redis fails under it.

    Every JSON answer here reads Redis; unreachable or hung, it raised
    through the route as an unhandled 500. The admin routes answer 503 with
    the setting to check, and so do these (the error's type only: the page
    is open without a token, so the address stays out of the answer).
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except RedisError as error:
                detail = f"redis (KEYART_REDIS_URL): {type(error).__name__}"
                logger.warning("dashboard cannot read %s", detail)
                raise HTTPException(503, detail) from None

        return answer


router = APIRouter(
    prefix="/dashboard",
    tags=["dashboard"],
    include_in_schema=False,
    route_class=_RedisRoute,
)

_PAGE = Path(__file__).with_name("dashboard.html")
_SCRIPT = Path(__file__).with_name("dashboard.js")
HISTORY_BUCKETS = 36  # six hours of 10-minute exposure buckets
MAX_VIDEOS = 500
MAX_POSTERS_SHOWN = 200
LAG_CACHE_S = 5.0
ANSWER_CACHE_S = 2.0
_MAX_CACHED = 256


def _cached(gateway: Any, key: str) -> Any:
    cache = gateway.__dict__.setdefault("_dashboard_answers", {})
    entry = cache.get(key)
    if entry is not None and time.monotonic() - entry[0] < ANSWER_CACHE_S:
        return entry[1]
    return None


def _remember(gateway: Any, key: str, answer: Any) -> Any:
    cache = gateway.__dict__.setdefault("_dashboard_answers", {})
    if len(cache) >= _MAX_CACHED:
        cache.clear()
    cache[key] = (time.monotonic(), answer)
    return answer


def _gateway(request: Request) -> Any:
    gateway = getattr(request.app.state, "gateway", None)
    if gateway is None or gateway.redis is None:
        raise HTTPException(503, "the gateway is starting")
    return gateway


def _json(body: Any) -> Response:
    import orjson

    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def _safe_url(url: str) -> str:
    """Only relative and http(s) image URLs reach the page."""
    return url if url.startswith(("/", "http://", "https://")) else ""


@router.get("")
async def page() -> FileResponse:
    return FileResponse(_PAGE, media_type="text/html")


@router.get("/app.js")
async def script() -> FileResponse:
    return FileResponse(_SCRIPT, media_type="text/javascript")


# Videos -------------------------------------------------------------------------


async def _scan_videos(redis: Any, prefix: str) -> list[str]:
    found: set[str] = set()
    for kind in ("posters", "arms"):
        pattern = f"{prefix}:{kind}:*"
        async for key in redis.scan_iter(match=pattern, count=500):
            name = key.decode() if isinstance(key, bytes) else key
            found.add(unquote(name[len(prefix) + len(kind) + 2 :]))
            if len(found) >= MAX_VIDEOS:
                return sorted(found)
    return sorted(found)


@router.get("/api/videos")
async def videos(request: Request) -> Response:
    gateway = _gateway(request)
    cached = _cached(gateway, "videos")
    if cached is not None:
        return _json(cached)
    ids = await _scan_videos(gateway.redis, gateway.keys.prefix)
    async with gateway.redis.pipeline(transaction=False) as pipe:
        for video_id in ids:
            pipe.hgetall(gateway.keys.arms(video_id))
            pipe.scard(gateway.keys.posters(video_id))
        replies = await pipe.execute()
    rows = []
    for i, video_id in enumerate(ids):
        arms, posters = replies[2 * i], replies[2 * i + 1]
        total = sum_stats(arm_stats(arms).values())
        rows.append(
            {
                "video_id": video_id,
                "posters": posters,
                "impressions": total.impressions,
                "clicks": total.clicks,
                "updated_ms": int(arms.get(b"_updated_ms", 0) or 0),
            }
        )
    rows.sort(key=lambda r: (-r["impressions"], r["video_id"]))
    answer = {"videos": rows, "generated_ms": int(time.time() * 1000)}
    return _json(_remember(gateway, "videos", answer))


# One video ------------------------------------------------------------------------


def _ratio(clicks: int, impressions: int) -> float | None:
    return clicks / impressions if impressions else None


def _pending(gateway: Any, video_id: str) -> list[dict[str, Any]]:
    """Candidates of the video waiting for review, from the catalog."""
    try:
        import sqlalchemy as sa

        from workers.catalog import CandidateRow, make_engine
    except ImportError:
        return []
    url = gateway.settings.database_url
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).exists():
        return []  # no catalog here; do not create one by reading
    engine = getattr(gateway, "_dashboard_engine", None)
    if engine is None:
        engine = make_engine(url)
        gateway._dashboard_engine = engine
    query = (
        sa.select(CandidateRow.poster_id, CandidateRow.image_url, CandidateRow.score)
        .where(CandidateRow.video_id == video_id)
        .where(CandidateRow.status == "pending_review")
        .order_by(CandidateRow.score.desc())
        .limit(50)
    )
    with engine.connect() as conn:
        return [
            {"poster_id": r[0], "image_url": _safe_url(r[1] or ""), "score": r[2]}
            for r in conn.execute(query)
        ]


def _history(expo: dict[bytes, bytes], now_ms: int) -> dict[str, Any]:
    """Impressions per poster and exposure bucket, the last HISTORY_BUCKETS."""
    last = now_ms // EXPOSURE_BUCKET_MS
    buckets = list(range(last - HISTORY_BUCKETS + 1, last + 1))
    counts: dict[str, list[int]] = {}
    for field, value in expo.items():
        poster, _, bucket = field.decode().rpartition("|")
        if not bucket.isdigit() or not buckets[0] <= int(bucket) <= last:
            continue
        row = counts.setdefault(unquote(poster), [0] * len(buckets))
        row[int(bucket) - buckets[0]] += int(value)
    return {"bucket_ms": [b * EXPOSURE_BUCKET_MS for b in buckets], "counts": counts}


@router.get("/api/videos/{video_id}")
async def video(video_id: str, request: Request) -> Response:
    gateway = _gateway(request)
    cached = _cached(gateway, "video:" + video_id)
    if cached is not None:
        return _json(cached)
    keys, redis, settings = gateway.keys, gateway.redis, gateway.settings
    now_ms = int(time.time() * 1000)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.arms(video_id))
        pipe.smembers(keys.posters(video_id))
        pipe.hgetall(keys.retired(video_id))
        pipe.hgetall(keys.exposure(video_id))
        arms, members, retired_raw, expo = await pipe.execute()
    stats = arm_stats(arms)
    retired = {k.decode(): v.decode() for k, v in retired_raw.items()}
    approved = sorted(m.decode() for m in members)
    known = {escape(p) for p in approved} | {escape(p) for p in retired}
    orphans = sorted(unquote(e) for e in stats if e not in known)
    poster_ids = approved + sorted(set(retired) - set(approved)) + orphans
    total = len(poster_ids)
    if total > MAX_POSTERS_SHOWN:
        shown = set(
            sorted(
                poster_ids,
                key=lambda p: (-stats.get(escape(p), ArmStats()).impressions, p),
            )[:MAX_POSTERS_SHOWN]
        )
        poster_ids = [p for p in poster_ids if p in shown]
    limit = min(settings.max_candidates_per_video, settings.max_candidates_per_row)
    considered = best_candidates(approved, arms, limit)
    fetched = poster_ids + sorted(set(considered) - set(poster_ids))
    async with redis.pipeline(transaction=False) as pipe:
        for poster_id in fetched:
            pipe.hgetall(keys.poster(poster_id))
        poster_hashes = dict(zip(fetched, await pipe.execute(), strict=True))
    metas = [poster_hashes[p] for p in poster_ids]
    recalled = recall(
        settings, video_id, arms, considered, frozenset(retired), poster_hashes
    )
    pending = await asyncio.to_thread(_pending_or_note, gateway, video_id)

    for poster_id in poster_ids:
        stats.setdefault(escape(poster_id), ArmStats())
    window_total = sum(s.window_impressions for s in stats.values())
    shown_stats = [stats[escape(p)] for p in poster_ids]
    a = settings.prior_alpha + np.array([s.window_clicks for s in shown_stats])
    b = settings.prior_beta + np.array(
        [
            s.window_impressions - min(s.window_clicks, s.window_impressions)
            for s in shown_stats
        ]
    )
    lows, highs = beta.ppf(0.025, a, b), beta.ppf(0.975, a, b)
    posters = []
    for i, (poster_id, meta) in enumerate(zip(poster_ids, metas, strict=True)):
        s = shown_stats[i]
        low, high = lows[i], highs[i]
        status = "retired" if poster_id in retired else "active"
        if poster_id not in retired and poster_id not in approved:
            status = "unlisted"  # arm state without a poster in the video's set
        posters.append(
            {
                "poster_id": poster_id,
                "image_url": _safe_url(meta.get(b"image_url", b"").decode()),
                "aspect": meta.get(b"aspect", b"").decode(),
                "status": status,
                "retired_reason": retired.get(poster_id, ""),
                "impressions": s.impressions,
                "clicks": s.clicks,
                "window_impressions": s.window_impressions,
                "window_clicks": s.window_clicks,
                "ctr": _ratio(s.clicks, s.impressions),
                "window_ctr": _ratio(s.window_clicks, s.window_impressions),
                "interval": [float(low), float(high)],
                "window_share": (
                    s.window_impressions / window_total if window_total else None
                ),
            }
        )
    updated_ms = int(arms.get(b"_updated_ms", 0) or 0)
    answer = _remember(
        gateway,
        "video:" + video_id,
        {
            "video_id": video_id,
            "posters_total": total,
            "generated_ms": now_ms,
            "updated_ms": updated_ms,
            "state_age_s": (now_ms - updated_ms) / 1000 if updated_ms else None,
            "prior": [settings.prior_alpha, settings.prior_beta],
            "posters": posters,
            "pending": pending["rows"],
            "catalog_note": pending["note"],
            "history": _history(expo, now_ms),
            "placements": [
                {
                    "name": name,
                    "aspect": PLACEMENTS[name].aspect,
                    "candidates": ids,
                }
                for name, (ids, _) in recalled.items()
            ],
            "variants": variant_shares(
                gateway, recalled, getattr(request.app.state, "metrics_dir", None)
            ),
        },
    )
    return _json(answer)


def _pending_or_note(gateway: Any, video_id: str) -> dict[str, Any]:
    try:
        return {"rows": _pending(gateway, video_id), "note": ""}
    except Exception as error:  # the catalog is optional for this page
        logger.warning("dashboard cannot read the catalog: %s", error)
        return {"rows": [], "note": f"catalog (KEYART_DATABASE_URL): {error}"}


# Operations -------------------------------------------------------------------------


def _lag(gateway: Any) -> dict[str, Any]:
    from keyart.lag import LagError, measure_lag

    cached = getattr(gateway, "_dashboard_lag", None)
    if cached is not None and time.monotonic() - cached[0] < LAG_CACHE_S:
        return cached[1]
    settings = gateway.settings
    groups = [settings.streams_app_id, settings.poster_group_id]
    try:
        rows = measure_lag(settings.kafka_bootstrap, groups, timeout=3.0)
        result: dict[str, Any] = {"rows": [r.as_dict() for r in rows], "error": ""}
    except LagError as error:
        result = {"rows": [], "error": str(error)}
    gateway._dashboard_lag = (time.monotonic(), result)
    return result


@router.get("/api/ops")
async def ops(request: Request) -> Response:
    from streams.state_keys import StreamKeys

    gateway = _gateway(request)
    settings = gateway.settings
    keys = StreamKeys(settings.redis_prefix)
    partitions = range(settings.topic_partitions)
    async with gateway.redis.pipeline(transaction=False) as pipe:
        for partition in partitions:
            pipe.hget(keys.learner(partition), "updated_ms")
        updated = await pipe.execute()
    now_ms = int(time.time() * 1000)
    freshness = [
        {
            "partition": partition,
            "updated_ms": int(value) if value else None,
            "age_s": (now_ms - int(value)) / 1000 if value else None,
        }
        for partition, value in zip(partitions, updated, strict=True)
    ]
    ages = [f["age_s"] for f in freshness if f["age_s"] is not None]
    return _json(
        {
            "generated_ms": now_ms,
            "lag": await asyncio.to_thread(_lag, gateway),
            "freshness": freshness,
            "worst_state_age_s": max(ages) if ages else None,
            "admin_enabled": bool(settings.admin_token),
        }
    )
