"""Choose one poster per video of a row, with the propensity of the whole choice.

Steps of :meth:`RowDecider.decide_row`:

1. recall: each video's approved posters that are not retired and fit the
   placement, in poster-id order; the row's candidates are laid out flat;
2. rules (:mod:`gateway.rules`, :mod:`gateway.retirement`): a multiplier and
   a mask per candidate;
3. policy scores for the whole row at once: the expected score that rule
   multipliers act on, and for Thompson sampling one matrix of posterior
   draws (:func:`bandits.policies._beta.beta_draws`), the first row of which
   chooses and the others estimate the propensity;
4. choice, video by video in row order: the similarity to posters already
   placed adds the MMR multiplier; multipliers become the policy's additive
   ``bonus`` (``(m - 1)`` times the expected score, so a multiplier scales the
   expected score) and masks its ``mask``; ramp-up
   (:func:`bandits.ramp.ramp_up_bonus`) may replace the policy's choice;
5. propensities: Thompson sampling's by Monte Carlo over the same adjusted
   draws for all videos at once, with the add-one smoothing of
   :func:`bandits.propensity.monte_carlo_propensities`; the other policies'
   from :meth:`bandits.policies.Policy.choose` (closed forms; LinUCB scores
   the whole row in one product and splits ties with the same
   :func:`bandits.policies.base.argmax_choice`, the uniform control draws the
   same generator call as :class:`bandits.policies.UniformRandom`); then mixed
   with ramp-up.

Because step 4 looks at earlier choices, a propensity is conditional on the
posters already placed in the row, which is what off-policy estimators of a
per-slot policy need.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from bandits.policies import UniformRandom
from bandits.policies._beta import beta_draws
from bandits.policies.base import argmax_choice
from bandits.ramp import RampUp
from bandits.state import ArmStats
from gateway._arm_counts import ArmCounts
from gateway.candidates import CandidateBlock, CandidateCache
from gateway.config import RuleConfig
from gateway.placements import Placement
from gateway.retirement import Retirement
from gateway.scoring import PolicyBook, posterior_counts
from gateway.state import PosterCache, PosterMeta, VideoState
from ranking.serving import Ranker

__all__ = ["RowDecider", "VideoDecision"]


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


@dataclass(slots=True)
class _Segment:
    """One video's candidates: ``posters`` are ``flat[start:end]``."""

    index: int
    state: VideoState
    block: CandidateBlock
    start: int
    end: int
    rules: list[str]
    retired: list[tuple[str, str]]


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
        Which arm field to read (see :func:`keyart.keys.arm_field`).
    """

    def __init__(
        self,
        book: PolicyBook,
        retirement: Retirement,
        posters: PosterCache,
        rng: np.random.Generator,
        split_by_placement: bool = False,
        split_by_segment: bool = False,
        ranker: Ranker | None = None,
        ranker_strength: float = 20.0,
    ) -> None:
        self.ranker = ranker
        self.ranker_strength = ranker_strength
        self.book = book
        self.retirement = retirement
        self.posters = posters
        self.rng = rng
        self.split_by_placement = split_by_placement
        self.split_by_segment = split_by_segment
        self.candidates = CandidateCache(posters)
        self.arm_counts = ArmCounts()

    def recall(self, state: VideoState, placement: Placement) -> list[PosterMeta]:
        """Step 1: approved, unretired posters of the video that fit the slot."""
        return list(self.candidates.block(state, placement, "", "").metas)

    def decide_row(
        self,
        policy_name: str,
        placement: Placement,
        rules: RuleConfig,
        states: Sequence[VideoState],
        context: dict[str, float],
        cue_text: str,
        segment: str = "",
    ) -> list[VideoDecision]:
        """Decide every video of the row, in order (see the module's steps)."""
        out: list[VideoDecision | None] = [None] * len(states)
        flat: list[PosterMeta] = []
        segments: list[_Segment] = []
        raw: list[bytes | None] = []
        where = placement.name if self.split_by_placement else ""
        who = segment if self.split_by_segment else ""
        blocks: list[CandidateBlock] = []
        for i, state in enumerate(states):  # Step 1
            block = self.candidates.block(state, placement, where, who)
            posters = block.metas
            if not posters:
                out[i] = VideoDecision(
                    state.video_id, None, 1.0, policy_name, 0, reason="no_candidates"
                )
                continue
            segments.append(
                _Segment(i, state, block, len(flat), len(flat) + len(posters), [], [])
            )
            blocks.append(block)
            flat += posters
            arms = state.arms
            raw += map(arms.get, block.fields)
        if not flat:
            return [d for d in out if d is not None]

        counts = self.arm_counts.matrix(raw)
        multipliers, mask = self._rules(rules, flat, segments, counts, cue_text)

        name, policy, version = self.book.get(policy_name)  # Step 3
        checked = None
        if name == "linucb":
            checked = [row for block in blocks for row in block.checked_features()]
        X = self.book.features(name, policy, flat, context, checked)
        raw = None
        if name == "linucb":  # one product for the row, not one per video
            raw = np.asarray(policy.scores(None, X), dtype=np.float64)  # type: ignore[attr-defined]
            reference = np.abs(raw)
        else:
            reference = self.book.reference_counts(name, policy, counts, X)
        uniform = name == "random" and type(policy) is UniformRandom
        stats = None
        if name not in ("thompson", "thompson_alltime") and raw is None and not uniform:
            stats = [ArmStats(*map(int, row)) for row in counts]
        draws = None
        prior = None
        if name in ("thompson", "thompson_alltime"):
            n, c = posterior_counts(name, counts)
            prior_a, prior_b = policy.prior_alpha, policy.prior_beta  # type: ignore[attr-defined]
            prior = self._ranker_prior(flat, counts, context, placement.name)
            if prior is not None:  # warm start: the ranker's pseudo-counts
                prior_a, prior_b = prior
                reference = (c + prior_a) / (n + prior_a + prior_b)
            samples = 1 + policy.n_propensity  # type: ignore[attr-defined]
            draws = beta_draws(prior_a + c, prior_b + n - c, self.rng, samples)

        similarity = None  # Step 4
        if rules.mmr_lambda > 0 and len(segments) > 1:
            similarity = self.candidates.similarity(blocks, flat)
        bonus = (multipliers - 1.0) * reference
        # The loop below works on Python lists: a video has a handful of
        # candidates, and a numpy call on five numbers costs more than the
        # arithmetic. The float operations are the same, so are the results.
        bonus_row = bonus.tolist()
        mask_row = mask.tolist()
        multipliers_row = multipliers.tolist()
        reference_row = reference.tolist()
        first = None
        if draws is not None:
            first_draws = draws[0].tolist()
            first = [
                d + b if m else -np.inf
                for d, b, m in zip(first_draws, bonus_row, mask_row, strict=True)
            ]
        ramping_all = (mask & (counts[:, 0] < rules.ramp_min_impressions)).tolist()
        can_ramp = rules.ramp_share > 0 and name != "random"
        no_ramp = RampUp(np.zeros(0, dtype=bool), 0.0)
        ramps: list[RampUp] = []
        chosen: list[int] = []
        p_policy = np.zeros(len(segments))
        # Each candidate's largest similarity to a poster already placed,
        # updated with one column per placement (similarities are >= 0).
        closest_all = np.zeros(len(flat)) if similarity is not None else None
        lam = rules.mmr_lambda
        mmr_moved = False
        for j, seg in enumerate(segments):
            s, e = seg.start, seg.end
            if closest_all is not None and j:
                closest = closest_all[s:e].tolist()
                if any(closest):
                    for i, c in zip(range(s, e), closest, strict=True):
                        b = (
                            multipliers_row[i] * (1.0 - lam * c) - 1.0
                        ) * reference_row[i]
                        bonus_row[i] = b
                        if first is not None:
                            first[i] = first_draws[i] + b if mask_row[i] else -np.inf
                    mmr_moved = True
                    if first is None:  # the choice below reads the array
                        bonus[s:e] = bonus_row[s:e]
                    seg.rules.append("mmr")
            ramp = no_ramp
            if can_ramp and any(ramping_all[s:e]):
                ramp = RampUp(np.array(ramping_all[s:e]), rules.ramp_share)
            ramps.append(ramp)
            explores = ramp.explores(self.rng)
            if first is not None:
                seg_first = first[s:e]
                index = seg_first.index(max(seg_first))  # the first best, as argmax
            elif raw is not None:  # as ArgmaxPolicy.choose: ties split evenly
                adjusted = np.where(mask[s:e], raw[s:e] + bonus[s:e], -np.inf)
                index, ties = argmax_choice(adjusted, self.rng)
                p_policy[j] = 1.0 / ties.size
            elif uniform:  # as UniformRandom.choose, whose rng.choice is this draw
                eligible = [i for i in range(e - s) if mask_row[s + i]]
                index = eligible[int(self.rng.integers(0, len(eligible)))]
                p_policy[j] = 1.0 / len(eligible)
            else:
                seg_x = X[s:e] if X is not None else None
                assert stats is not None
                choice = policy.choose(
                    stats[s:e], self.rng, X=seg_x, bonus=bonus[s:e], mask=mask[s:e]
                )
                index, p_policy[j] = choice.index, choice.propensity
            if explores:
                index = ramp.pick(self.rng)
                seg.rules.append("ramp_up")
                if raw is not None:
                    adjusted = np.where(mask[s:e], raw[s:e] + bonus[s:e], -np.inf)
                    ties = np.flatnonzero(adjusted == adjusted.max())
                    p_policy[j] = 1.0 / ties.size if index in ties else 0.0
                elif first is None:
                    p_policy[j] = policy.propensity(
                        stats[s:e],  # type: ignore[index]
                        index,
                        self.rng,
                        X=X[s:e] if X is not None else None,
                        bonus=bonus[s:e],
                        mask=mask[s:e],
                    )
            chosen.append(s + index)
            if closest_all is not None:
                np.maximum(closest_all, similarity[:, s + index], out=closest_all)  # type: ignore[index]

        if draws is not None:  # Step 5
            if mmr_moved:  # Thompson sampling chose from the lists alone
                bonus = np.array(bonus_row)
            p_policy = _thompson_propensities(draws[1:], bonus, mask, segments, chosen)
        if prior is not None and self.ranker is not None:
            for seg in segments:
                seg.rules.append(f"ranker:{self.ranker.version}")
        propensities = p_policy.tolist()
        for j, seg in enumerate(segments):
            index = chosen[j] - seg.start
            out[seg.index] = VideoDecision(
                video_id=seg.state.video_id,
                poster=flat[chosen[j]],
                propensity=ramps[j].propensity(index, propensities[j])
                if ramps[j].share
                else propensities[j],
                policy=name,
                model_version=version
                or int(seg.state.arms.get(b"_updated_ms", b"0") or 0),
                candidates=list(seg.block.ids),
                scores=reference_row[seg.start : seg.end],
                rules=seg.rules,
                retired=seg.retired,
            )
        return [d for d in out if d is not None]

    def _ranker_prior(
        self,
        flat: list[PosterMeta],
        counts: np.ndarray,
        context: dict[str, float],
        placement: str,
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Beta pseudo-counts from the offline ranker; None without one."""
        if self.ranker is None:
            return None
        rows = [
            {"features": p.features, "video_id": p.video_id,
             "impressions": counts[i, 0], "clicks": counts[i, 1]}
            for i, p in enumerate(flat)
        ]  # fmt: skip
        return self.ranker.prior(context, rows, placement, self.ranker_strength)

    def _rules(
        self,
        rules: RuleConfig,
        flat: list[PosterMeta],
        segments: list[_Segment],
        counts: np.ndarray,
        cue_text: str,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Step 2: every rule except MMR, as multipliers and a mask.

        Plain Python over each video's handful of candidates: cheaper than
        many numpy calls on arrays of five.
        """
        k = len(flat)
        multipliers = [1.0] * k
        mask = [True] * k
        ids = [p for seg in segments for p in seg.block.ids]
        impressions = counts[:, 0].tolist()
        clicks = counts[:, 1].tolist()
        scene = [False] * k
        if rules.scene_boost != 1.0 and cue_text:
            # as gateway.rules.scene_matches, without an array to convert back
            for i, poster in enumerate(flat):
                for phrase in poster.tag_phrases:
                    if phrase and phrase in cue_text:
                        scene[i] = True
                        break
        cap = rules.exposure_cap_share
        row_statuses = self.retirement.row_statuses(
            rules,
            [seg.state.video_id for seg in segments],
            ids,
            impressions,
            clicks,
            [(seg.start, seg.end) for seg in segments],
        )
        for seg, statuses in zip(segments, row_statuses, strict=True):
            s, e = seg.start, seg.end
            if statuses is not None:
                self._retirement(rules, seg, statuses, ids, mask, multipliers)

            exposure = seg.state.exposure
            if cap < 1.0 and exposure:
                total = sum(exposure.values())
                # x / total grows with x, so when the largest share is within
                # the cap every candidate's is: no list to build.
                if (
                    total > 0
                    and total >= rules.exposure_min_impressions
                    and max(exposure.values()) / total > cap
                ):
                    over = [exposure.get(p, 0) / total > cap for p in seg.block.escaped]
                    if any(over):
                        remaining = [
                            m and not o for m, o in zip(mask[s:e], over, strict=True)
                        ]
                        if any(remaining):
                            mask[s:e] = remaining
                            seg.rules.append("exposure_cap")

            seen = seg.state.seen
            if seen and rules.deweight_factor != 1.0:
                hit = False
                for i in range(s, e):
                    if ids[i] in seen:
                        multipliers[i] *= rules.deweight_factor
                        hit = True
                if hit:
                    seg.rules.append("deweight")
            if any(scene[s:e]):
                for i in range(s, e):
                    if scene[i]:
                        multipliers[i] *= rules.scene_boost
                seg.rules.append("scene_match")
        return np.array(multipliers), np.array(mask)

    def _retirement(
        self,
        rules: RuleConfig,
        seg: _Segment,
        statuses: list[str],
        ids: list[str],
        mask: list[bool],
        multipliers: list[float],
    ) -> None:
        s = seg.start
        retired = [st == "retired" for st in statuses] if "retired" in statuses else []
        if retired and not all(retired):
            for j, r in enumerate(retired):
                if r:
                    mask[s + j] = False
            seg.retired = [
                (ids[s + j], "retirement rule: credibly below the best poster")
                for j, r in enumerate(retired)
                if r
            ]
            seg.rules.append("retired")
        if "demoted" in statuses and rules.demote_factor != 1.0:
            for j, st in enumerate(statuses):
                if st == "demoted":
                    multipliers[s + j] *= rules.demote_factor
            seg.rules.append("demoted")


_FEW_CANDIDATES = 8
"""Longest candidate list for which :func:`_thompson_propensities` takes each
video's maximum column by column."""


def _thompson_propensities(
    draws: np.ndarray,
    bonus: np.ndarray,
    mask: np.ndarray,
    segments: Sequence[_Segment],
    chosen: list[int],
) -> np.ndarray:
    """Smoothed probability that each video's chosen poster wins its draws."""
    adjusted = draws + bonus
    if not mask.all():
        adjusted[:, ~mask] = -np.inf
    starts = [seg.start for seg in segments]
    longest = max(seg.end - seg.start for seg in segments)
    if longest <= _FEW_CANDIDATES:
        # Each video's best draw as the maximum over the videos' first, second,
        # ... candidates (a shorter video repeats its last): a few column
        # gathers cost far less than reduceat along rows, and a maximum is the
        # same whatever the order.
        ends = [seg.end - 1 for seg in segments]
        best = adjusted[:, starts]
        for offset in range(1, longest):
            columns = [min(s + offset, e) for s, e in zip(starts, ends, strict=True)]
            np.maximum(best, adjusted[:, columns], out=best)
    else:
        best = np.maximum.reduceat(adjusted, starts, axis=1)
    wins = (adjusted[:, chosen] == best).sum(axis=0)
    eligible = np.add.reduceat(mask.astype(np.int64), starts)
    return (wins + 1.0) / (draws.shape[0] + eligible)
