"""Business rules: how one video's candidate scores are adjusted before a choice.

Each rule reads the candidates and the live state and contributes either a
score multiplier per candidate or a mask (candidates it forbids).
:mod:`gateway.decide` hands both to the policy, which applies them to every
score it draws, so the logged propensity is that of the whole pipeline.
Ramp-up is not a score adjustment but a mixture over the choice; it lives in
:mod:`gateway.decide` too.

Rules, in the order they apply:

``retired``
    Posters in the video's retired hash, or with status ``retired``, are masked.
``demoted``
    Posters the sequential retirement rule demoted get ``demote_factor``.
``exposure_cap``
    Once the video has ``exposure_min_impressions`` impressions in the window,
    a poster whose share exceeds ``exposure_cap_share`` is masked.
``deweight``
    Posters this user saw within ``deweight_recency_s`` get ``deweight_factor``.
``scene_match``
    Posters with a tag found in the UI text cues get ``scene_boost``.
``mmr``
    A poster similar to one already placed in the row gets
    ``1 - mmr_lambda * similarity`` (cosine of embeddings, else Jaccard of tags).

A mask never removes every candidate: when a rule would, it stands down for
that video (the poster is still served) and does not count as a hit.

Examples
--------
>>> cue_text(["Starring: Keanu Reeves"])
' starring keanu reeves '
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from gateway.state import PosterMeta

__all__ = [
    "Adjustment",
    "cue_text",
    "exposure_mask",
    "scene_matches",
    "similarity_to_row",
]

_NON_WORD = re.compile(r"[^\w]+")


class Adjustment:
    """Multipliers and a mask for ``k`` candidates, and the rules that fired."""

    __slots__ = ("mask", "multipliers", "rules")

    def __init__(self, k: int) -> None:
        self.multipliers = np.ones(k)
        self.mask = np.ones(k, dtype=bool)
        self.rules: list[str] = []

    def scale(self, rule: str, hits: np.ndarray, factor: float | np.ndarray) -> None:
        """Multiply the candidates in ``hits`` by ``factor``; note the rule."""
        if (np.isscalar(factor) and factor == 1.0) or not hits.any():
            return
        self.multipliers = np.where(hits, self.multipliers * factor, self.multipliers)
        self.rules.append(rule)

    def forbid(self, rule: str, hits: np.ndarray) -> None:
        """Mask the candidates in ``hits`` unless that would leave none."""
        if not hits.any():
            return
        remaining = self.mask & ~hits
        if not remaining.any():
            return
        self.mask = remaining
        self.rules.append(rule)


def exposure_mask(
    exposure: Sequence[int], video_total: int, cap_share: float, min_total: int
) -> np.ndarray:
    """Candidates whose share of the video's windowed impressions exceeds the cap."""
    counts = np.asarray(exposure, dtype=np.float64)
    if cap_share >= 1.0 or video_total <= 0 or video_total < min_total:
        return np.zeros(counts.shape, dtype=bool)
    return counts / video_total > cap_share


def cue_text(cues: Sequence[str]) -> str:
    """Normalise UI text cues for tag matching: lower case, words padded by spaces."""
    words = " ".join(_NON_WORD.sub(" ", c.casefold()) for c in cues).split()
    return f" {' '.join(words)} " if words else ""


def scene_matches(posters: Sequence[PosterMeta], text: str) -> np.ndarray:
    """Posters with a tag that appears as whole words in the cue text."""
    if not text:
        return np.zeros(len(posters), dtype=bool)
    hits = []
    for poster in posters:
        found = False
        for tag in poster.tags:
            words = _NON_WORD.sub(" ", tag).split()
            if words and f" {' '.join(words)} " in text:
                found = True
                break
        hits.append(found)
    return np.asarray(hits, dtype=bool)


def similarity_to_row(
    posters: Sequence[PosterMeta], placed: Sequence[PosterMeta]
) -> np.ndarray:
    """Each candidate's largest similarity to a poster already placed in the row.

    Cosine similarity of embeddings (clipped at 0) when both have one, else the
    Jaccard similarity of their tags, else 0.
    """
    out = np.zeros(len(posters))
    if not placed:
        return out
    placed_vectors = [p.embedding for p in placed if p.embedding is not None]
    matrix = np.vstack(placed_vectors) if placed_vectors else None
    for i, poster in enumerate(posters):
        best = 0.0
        if poster.embedding is not None and matrix is not None:
            if matrix.shape[1] == poster.embedding.shape[0]:
                best = float(np.max(matrix @ poster.embedding))
        if poster.tags:
            for other in placed:
                if other.tags and (poster.embedding is None or other.embedding is None):
                    union = len(poster.tags | other.tags)
                    best = max(best, len(poster.tags & other.tags) / union)
        out[i] = max(0.0, min(1.0, best))
    return out
