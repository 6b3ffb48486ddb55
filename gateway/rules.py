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
    ``1 - mmr_lambda * similarity`` (:func:`row_similarity`).

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
    "scene_matches",
    "row_similarity",
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


def cue_text(cues: Sequence[str]) -> str:
    """Normalise UI text cues for tag matching: lower case, words padded by spaces."""
    words = " ".join(_NON_WORD.sub(" ", c.casefold()) for c in cues).split()
    return f" {' '.join(words)} " if words else ""


def scene_matches(posters: Sequence[PosterMeta], text: str) -> np.ndarray:
    """Posters with a tag that appears as whole words in the cue text
    (tags are normalised once, by :func:`gateway.state.tag_phrase`)."""
    if not text:
        return np.zeros(len(posters), dtype=bool)
    return np.array(
        [any(p and p in text for p in poster.tag_phrases) for poster in posters],
        dtype=bool,
    )


def row_similarity(posters: Sequence[PosterMeta]) -> np.ndarray:
    """Pairwise similarity of a row's candidates, in [0, 1].

    The definition of :func:`bandits.diversity.similarity_matrix` (the larger
    of the embeddings' cosine, clipped at 0, and the tags' Jaccard index),
    computed with two matrix products so that a 100-candidate row costs well
    under a millisecond. Embeddings of another length than the most common
    one are ignored.
    """
    k = len(posters)
    vocabulary: dict[str, int] = {}
    rows, cols = [], []
    for i, poster in enumerate(posters):
        for tag in poster.tags:
            rows.append(i)
            cols.append(vocabulary.setdefault(tag, len(vocabulary)))
    similarity = np.zeros((k, k))
    if vocabulary:
        incidence = np.zeros((k, len(vocabulary)))
        incidence[rows, cols] = 1.0
        shared = incidence @ incidence.T
        sizes = incidence.sum(axis=1)
        union = sizes[:, None] + sizes[None, :] - shared
        similarity = np.divide(shared, union, out=similarity, where=union > 0)
    lengths = [p.embedding.shape[0] for p in posters if p.embedding is not None]
    if lengths:
        dim = max(set(lengths), key=lengths.count)
        unit = np.zeros((k, dim))
        for i, poster in enumerate(posters):
            e = poster.embedding
            if e is not None and e.shape[0] == dim:
                unit[i] = e  # parse_poster stores embeddings normalised
        similarity = np.maximum(similarity, np.clip(unit @ unit.T, 0.0, 1.0))
    return similarity
