"""What each experiment variant's policy would serve of a video, for the dashboard.

Traffic share per variant is the probability each poster has of being chosen
by that variant's policy from the current window statistics, for policies
that need no user features; for contextual ones (LinUCB, FM) it depends on each
user and is not shown. It is worked out per placement, as the gateway chooses:
among the posters its recall gives there (approved, not retired, of the
placement's aspect and, when a poster lists placements, listed for it; at most
``max_candidates_per_video``), from the arm statistics it reads there (the
placement's own arms with ``split_by_placement``). With ``split_by_segment``
the gateway reads each user's segment; the dashboard has no user and sums
the segments. A share is the policy's alone: rules (masks, multipliers,
diversity) and ramp-up, which act on each request, are left out.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from bandits.state import ArmStats
from gateway.candidates import CandidateCache
from gateway.placements import PLACEMENTS
from gateway.state import PosterCache, VideoState, parse_poster
from keyart.keys import escape

__all__ = ["arm_stats", "recall", "sum_stats", "variant_shares"]

logger = logging.getLogger("gateway")


def arm_stats(
    arms: dict[bytes, bytes], placement: str | None = None, by_segment: bool = True
) -> dict[str, ArmStats]:
    """Escaped poster id -> its statistics summed over the arms it has.

    With ``placement`` None, every arm of the poster counts. Otherwise only
    the fields :func:`keyart.keys.arm_field` makes for that placement part
    (``""`` when arms are not split by placement): ``poster`` and
    ``poster|placement|segment``, with a segment only when ``by_segment``.
    """
    out: dict[str, ArmStats] = {}
    for field, value in arms.items():
        name = field.decode()
        if name.startswith("_"):
            continue
        if placement is not None:
            where, _, segment = name.partition("|")[2].partition("|")
            if where != placement or (segment and not by_segment):
                continue
        try:
            stats = ArmStats.unpack(value)
        except ValueError:
            logger.warning("unreadable arm %s: %r", name, value[:40])
            continue
        poster = name.split("|", 1)[0]
        out[poster] = sum_stats([out.get(poster, ArmStats()), stats])
    return out


def sum_stats(items: Any) -> ArmStats:
    n = c = wn = wc = 0
    for s in items:
        n, c = n + s.impressions, c + s.clicks
        wn, wc = wn + s.window_impressions, wc + s.window_clicks
    return ArmStats(n, c, wn, wc)


def recall(
    settings: Any,
    video_id: str,
    arms: dict[bytes, bytes],
    considered: list[str],
    retired: frozenset[str],
    poster_hashes: dict[str, dict[bytes, bytes]],
) -> dict[str, tuple[list[str], list[ArmStats]]]:
    """Each placement's candidates as the gateway recalls them, with the arm
    statistics it reads for them there; placements without any are left out.

    ``considered`` are the approved posters a request reads
    (:func:`gateway.state.best_candidates`), ``poster_hashes`` their
    ``{p}:poster:{id}`` hashes.
    """
    posters = PosterCache(ttl_s=60.0)
    now = time.monotonic()
    for poster_id in considered:
        meta = parse_poster(poster_id, poster_hashes.get(poster_id, {}))
        posters.put(poster_id, meta, now)
    state = VideoState(video_id, arms, considered, retired, {}, frozenset())
    cache = CandidateCache(posters)
    where_to_stats: dict[str, dict[str, ArmStats]] = {}
    out = {}
    for placement in PLACEMENTS.values():
        ids = cache.block(state, placement, "", "").ids
        if not ids:
            continue
        where = placement.name if settings.split_by_placement else ""
        if where not in where_to_stats:
            where_to_stats[where] = arm_stats(arms, where, settings.split_by_segment)
        stats = where_to_stats[where]
        out[placement.name] = (ids, [stats.get(escape(p), ArmStats()) for p in ids])
    return out


def variant_shares(
    gateway: Any,
    recalled: dict[str, tuple[list[str], list[ArmStats]]],
    metrics_dir: str | None = None,
) -> list[dict[str, Any]]:
    """Each variant's share per poster and placement (see the module docstring).

    ``share`` is the share in the first placement of ``recalled``, for readers
    of the answer from before shares were per placement; ``shares`` has them
    all. ``decisions`` counts the posters the gateway chose for the variant,
    over all videos, summed over its workers when ``metrics_dir`` holds their
    metrics (``keyart gateway --workers N``), so every worker answers the same.
    """
    from bandits.policies import make_policy
    from gateway import metrics

    served = metrics.variant_decisions(metrics_dir)
    out = []
    for variant in gateway.experiments.variants:
        shares: dict[str, dict[str, float]] | None = None
        note = ""
        try:
            policy = make_policy(variant.policy, gateway.settings)
            if policy.needs_features:
                note = "depends on each user's features"
            else:
                shares = {}
                # Placements of one aspect usually recall the same posters
                # with the same arms: their shares are worked out once.
                done: dict[tuple[Any, ...], dict[str, float]] = {}
                for placement, (ids, stats) in recalled.items():
                    key = (tuple(ids), tuple(stats))
                    if key not in done:
                        rng = np.random.default_rng(gateway.settings.seed)
                        p = policy.propensities(stats, rng)
                        done[key] = dict(zip(ids, map(float, p), strict=True))
                    shares[placement] = done[key]
        except (ValueError, KeyError, TypeError) as error:
            note = f"cannot compute: {error}"
        first = next(iter(recalled), None)
        out.append(
            {
                "name": variant.name,
                "policy": variant.policy,
                "weight": variant.weight,
                "decisions": served.get(variant.name, 0.0),
                "share": shares.get(first) if shares and first else None,
                "shares": shares,
                "note": note,
            }
        )
    return out
