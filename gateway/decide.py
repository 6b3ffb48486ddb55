"""Choose one poster per video of a row, with the propensity of the whole choice.

Steps for each video, in row order (:meth:`RowDecider.decide_row`):

1. recall: the video's approved posters that are not retired and fit the
   placement, in poster-id order;
2. retirement: the sequential rule demotes or retires candidates on their
   statistics (a newly retired poster is reported to the caller);
3. rules: multipliers and masks (:mod:`gateway.rules`), including the
   similarity to posters already placed earlier in the row;
4. policy: the variant's policy (:mod:`bandits.policies`) with the rule
   multipliers turned into its additive ``bonus`` (``(m - 1)`` times the
   candidate's expected score, so a multiplier scales the expected score) and
   the rule masks as its ``mask``;
5. choice: the policy chooses and gives its propensity under that same bonus
   and mask (closed form where one exists, Monte Carlo over the same adjusted
   draws for Thompson sampling);
6. ramp-up: with probability ``ramp_share`` the choice is instead uniform over
   new posters, and the propensity is the mixture
   ``(1 - share) * p_policy + share * [new] / n_new``.

Because step 3 looks at earlier choices, a propensity is conditional on the
posters already placed in the row, which is what off-policy estimators of a
per-slot policy need.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from bandits.state import ArmStats
from gateway.config import RuleConfig
from gateway.placements import Placement, fits
from gateway.retirement import Retirement
from gateway.rules import (
    Adjustment,
    exposure_mask,
    scene_matches,
    similarity_to_row,
)
from gateway.scoring import PolicyBook
from gateway.state import PosterCache, PosterMeta, VideoState
from keyart.keys import arm_field, escape

__all__ = ["RowDecider", "VideoDecision"]

logger = logging.getLogger("gateway")


@dataclass(slots=True)
class VideoDecision:
    """What was chosen for one video, and how."""

    video_id: str
    poster: PosterMeta | None
    propensity: float
    policy: str
    model_version: int
    candidates: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)
    fallback: bool = False
    reason: str | None = None
    retired: list[tuple[str, str]] = field(default_factory=list)
    """(poster id, reason) of posters the retirement rule retired just now."""


class RowDecider:
    """Apply recall, rules, a policy and ramp-up to every video of a row.

    Parameters
    ----------
    book
        The policies of the experiment's variants.
    retirement
        The sequential retirement rule.
    posters
        Poster metadata cache (filled by the row read).
    rng
        The gateway's generator (seeded once per process).
    split_by_placement, split_by_segment
        Which arm field of the arms hash to read (see :func:`keyart.keys.arm_field`).
    """

    def __init__(
        self,
        book: PolicyBook,
        retirement: Retirement,
        posters: PosterCache,
        rng: np.random.Generator,
        split_by_placement: bool = False,
        split_by_segment: bool = False,
    ) -> None:
        self.book = book
        self.retirement = retirement
        self.posters = posters
        self.rng = rng
        self.split_by_placement = split_by_placement
        self.split_by_segment = split_by_segment

    def recall(self, state: VideoState, placement: Placement) -> list[PosterMeta]:
        """Step 1: approved, unretired posters of the video that fit the slot."""
        out = []
        for poster_id in state.poster_ids:
            if poster_id in state.retired:
                continue
            meta = self.posters.peek(poster_id)
            if meta is None or meta.status != "approved":
                continue
            if fits(placement, meta.aspect, meta.placements):
                out.append(meta)
        return out

    def _stats(
        self,
        state: VideoState,
        posters: Sequence[PosterMeta],
        placement: str,
        segment: str,
    ) -> list[ArmStats]:
        where = placement if self.split_by_placement else ""
        who = segment if self.split_by_segment else ""
        return [
            ArmStats.unpack(state.arms.get(arm_field(p.poster_id, where, who).encode()))
            for p in posters
        ]

    def decide_row(
        self,
        policy: str,
        placement: Placement,
        rules: RuleConfig,
        states: Sequence[VideoState],
        context: dict[str, float],
        cue_text: str,
        segment: str = "",
    ) -> list[VideoDecision]:
        """Decide every video of the row, in order (see the module's steps)."""
        placed: list[PosterMeta] = []
        decisions = []
        for state in states:
            decision = self._decide_video(
                policy, placement, rules, state, context, cue_text, segment, placed
            )
            if decision.poster is not None:
                placed.append(decision.poster)
            decisions.append(decision)
        return decisions

    def _decide_video(
        self,
        policy_name: str,
        placement: Placement,
        rules: RuleConfig,
        state: VideoState,
        context: dict[str, float],
        cue_text: str,
        segment: str,
        placed: list[PosterMeta],
    ) -> VideoDecision:
        posters = self.recall(state, placement)  # Step 1
        if not posters:
            return VideoDecision(
                state.video_id, None, 1.0, policy_name, 0, reason="no_candidates"
            )
        stats = self._stats(state, posters, placement.name, segment)
        k = len(posters)
        adjustment = Adjustment(k)

        retired_now = self.retirement.apply(rules, stats, adjustment)  # Step 2
        retired = [(posters[i].poster_id, reason) for i, reason in retired_now.items()]

        total = sum(state.exposure.values())  # Step 3
        counts = [state.exposure.get(escape(p.poster_id), 0) for p in posters]
        adjustment.forbid(
            "exposure_cap",
            exposure_mask(
                counts, total, rules.exposure_cap_share, rules.exposure_min_impressions
            ),
        )
        seen = np.fromiter((p.poster_id in state.seen for p in posters), bool, k)
        adjustment.scale("deweight", seen, rules.deweight_factor)
        adjustment.scale(
            "scene_match", scene_matches(posters, cue_text), rules.scene_boost
        )
        if rules.mmr_lambda > 0 and placed:
            similarity = similarity_to_row(posters, placed)
            adjustment.scale("mmr", similarity > 0, 1.0 - rules.mmr_lambda * similarity)

        name, policy, version = self.book.get(policy_name)  # Step 4
        X = self.book.features(name, policy, posters, context)
        reference = self.book.reference(name, policy, stats, X)
        bonus = (adjustment.multipliers - 1.0) * reference
        mask = adjustment.mask

        ramp = mask & np.fromiter(  # Step 6 (drawn first: it may replace step 5)
            (s.impressions < rules.ramp_min_impressions for s in stats), bool, k
        )
        share = rules.ramp_share if ramp.any() and name != "random" else 0.0
        if share > 0 and self.rng.random() < share:
            index = int(self.rng.choice(np.flatnonzero(ramp)))
            adjustment.rules.append("ramp_up")
            p_policy = policy.propensity(
                stats, index, self.rng, X=X, bonus=bonus, mask=mask
            )
        else:  # Step 5
            choice = policy.choose(stats, self.rng, X=X, bonus=bonus, mask=mask)
            index, p_policy = choice.index, choice.propensity
        propensity = (1.0 - share) * p_policy + share * float(ramp[index]) / max(
            1, int(ramp.sum())
        )

        return VideoDecision(
            video_id=state.video_id,
            poster=posters[index],
            propensity=propensity,
            policy=name,
            model_version=version or int(state.arms.get(b"_updated_ms", b"0") or 0),
            candidates=[p.poster_id for p in posters],
            scores=reference.tolist(),
            rules=adjustment.rules,
            retired=retired,
        )
