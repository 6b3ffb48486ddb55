"""Answers without Redis: the process's last view of each video.

Successful row reads are remembered per video (its approved posters, the
retired ones and the arm counts), each video's at most every 30 seconds.
When Redis is down or over its budget, a video is answered with its
remembered poster of highest all-time posterior mean click-through rate
(Beta(1, 1) prior; ties go to the smaller poster id), among those that fit
the placement. That choice is deterministic: the same
process gives every user the same poster until Redis is back, and the
decision carries ``fallback=true`` and propensity 1.

A video this process has never read gets ``poster_id: null`` with the reason
``<why>:no_cached_posters``; the client shows its default art. A process that
started while Redis was down therefore serves only nulls until Redis answers
once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from bandits.state import ArmStats
from gateway.decide import VideoDecision
from gateway.placements import Placement, fits
from gateway.state import PosterCache, PosterMeta, VideoState
from keyart.keys import arm_field

__all__ = ["FallbackCache"]


class FallbackCache:
    """The last live state seen of each video, bounded in count."""

    def __init__(
        self, posters: PosterCache, max_videos: int = 200_000, every_s: float = 30.0
    ) -> None:
        self.posters = posters
        self.max_videos = max_videos
        self.every_s = every_s
        self._videos: dict[str, VideoState] = {}
        self._until: dict[str, float] = {}

    def remember(self, states: Sequence[VideoState], now: float | None = None) -> None:
        """Keep each video's state, replacing it at most every ``every_s``.

        A fallback up to ``every_s`` old serves about as well as the newest
        one, though a poster rejected or retired in that time may still be
        served while Redis is down. Keeping every row's states made twenty
        states and their containers a row outlive the garbage collector's
        young generation: its pauses grew with them, and the gateway's
        slowest answers with its pauses.
        """
        now = time.monotonic() if now is None else now
        if len(self._videos) + len(states) > self.max_videos:
            self._videos.clear()
            self._until.clear()
        videos, until = self._videos, self._until
        for state in states:
            video_id = state.video_id
            if until.get(video_id, 0.0) > now:
                continue
            videos[video_id] = state
            until[video_id] = now + self.every_s

    def _best(self, state: VideoState, placement: Placement) -> PosterMeta | None:
        best: tuple[float, str] | None = None
        chosen = None
        for poster_id in state.poster_ids:
            meta = self.posters.peek(poster_id)
            if poster_id in state.retired or meta is None or meta.status != "approved":
                continue
            if not fits(placement, meta.aspect, meta.placements):
                continue
            stats = ArmStats.unpack(state.arms.get(arm_field(poster_id).encode()))
            mean = (stats.clicks + 1) / (stats.impressions + 2)
            key = (-mean, poster_id)
            if best is None or key < best:
                best, chosen = key, meta
        return chosen

    def decide(
        self, video_ids: Sequence[str], placement: Placement, reason: str
    ) -> list[VideoDecision]:
        """One fallback decision per video."""
        out = []
        for video_id in video_ids:
            state = self._videos.get(video_id)
            poster = self._best(state, placement) if state is not None else None
            out.append(
                VideoDecision(
                    video_id=video_id,
                    poster=poster,
                    propensity=1.0,
                    policy="fallback",
                    model_version=0,
                    candidates=[poster.poster_id] if poster else [],
                    fallback=True,
                    reason=reason if poster else f"{reason}:no_cached_posters",
                )
            )
        return out
