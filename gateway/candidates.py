"""Each video's recalled candidates, prepared once and reused across requests.

A row of 20 videos has about a hundred candidates; rebuilding their arm
fields, escaped ids, tag columns and embedding matrix on every request cost
more than the policy itself. :class:`CandidateCache` keeps them per video and
placement, valid while the video's poster set, its retired set and every
poster's poster cache entry stay the same (a metadata refresh stores a new
entry, which invalidates the block).

Examples
--------
>>> from gateway.state import PosterCache
>>> cache = CandidateCache(PosterCache(ttl_s=60.0))
>>> cache.similarity([], []).shape
(0, 0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from operator import is_

import numpy as np

from bandits.features import checked_poster_features
from gateway.placements import Placement, fits
from gateway.rules import row_similarity
from gateway.state import PosterCache, PosterMeta, VideoState
from keyart.keys import arm_field, escape

__all__ = ["CandidateBlock", "CandidateCache"]

MAX_ENTRIES = 100_000
MAX_TAGS = 1_000_000
_BITS = 64


@dataclass(slots=True, eq=False)
class CandidateBlock:
    """One video's candidates for one placement and arm split."""

    poster_ids: list[str]
    """The video's poster set the block was built from (sorted)."""
    retired: frozenset[str]
    sources: list[object]
    """The poster cache entry of every poster in ``poster_ids`` at build time
    (:meth:`~gateway.state.PosterCache.entries`)."""
    metas: list[PosterMeta]
    """Recalled candidates, in poster-id order."""
    ids: list[str]
    escaped: list[str]
    fields: list[bytes]
    """Encoded arm fields of the candidates."""
    unit: np.ndarray | None
    """``(k, d)`` unit embeddings when every candidate has one of length d."""
    tag_counts: list[int]
    """Number of tags of each candidate."""
    tag_cols: np.ndarray
    """Global tag column of each (candidate, tag) pair, candidate by candidate."""
    tag_bits: np.ndarray | None
    """Each candidate's tags as bits of one ``uint64`` (bit = global tag
    column), when every column is below 64; None otherwise."""
    feature_rows: list[tuple[tuple[str, ...], list[float]]] | None = None
    """The candidates' checked features for LinUCB, made on first use
    (:func:`bandits.features.checked_poster_features`)."""
    checked: int = -1
    """The poster cache's :attr:`~gateway.state.PosterCache.version` when
    ``sources`` were last found current."""

    def checked_features(self) -> list[tuple[tuple[str, ...], list[float]]]:
        """The candidates' features as LinUCB's crossing checks them.

        Raises
        ------
        ValueError
            When a candidate's features are not finite numbers (then nothing
            is kept, and the next use raises again).
        """
        if self.feature_rows is None:
            self.feature_rows = [
                checked_poster_features(m.features) for m in self.metas
            ]
        return self.feature_rows


class CandidateCache:
    """Recall (step 1 of :mod:`gateway.decide`) with its results cached."""

    def __init__(self, posters: PosterCache) -> None:
        self.posters = posters
        self._blocks: dict[tuple[str, str, str, str], CandidateBlock] = {}
        self._tags: dict[str, int] = {}

    def block(
        self, state: VideoState, placement: Placement, where: str, who: str
    ) -> CandidateBlock:
        """The video's approved, unretired candidates that fit the placement."""
        key = (state.video_id, placement.name, where, who)
        found = self._blocks.get(key)
        if found is not None and self._valid(found, state):
            return found
        if len(self._blocks) >= MAX_ENTRIES or len(self._tags) >= MAX_TAGS:
            self._blocks.clear()
            self._tags.clear()
        built = self._build(state, placement, where, who)
        self._blocks[key] = built
        return built

    def _valid(self, block: CandidateBlock, state: VideoState) -> bool:
        if block.poster_ids != state.poster_ids or block.retired != state.retired:
            return False
        # No poster cache entry was replaced since the last check: the
        # sources are still current without looking at each of them.
        version = self.posters.version
        if block.checked == version:
            return True
        if all(map(is_, self.posters.entries(block.poster_ids), block.sources)):
            block.checked = version
            return True
        return False

    def _build(
        self, state: VideoState, placement: Placement, where: str, who: str
    ) -> CandidateBlock:
        sources = self.posters.entries(state.poster_ids)
        metas = [
            meta
            for poster_id, meta in zip(
                state.poster_ids, map(self.posters.peek, state.poster_ids), strict=True
            )
            if poster_id not in state.retired
            and meta is not None
            and meta.status == "approved"
            and fits(placement, meta.aspect, meta.placements)
        ]
        ids = [m.poster_id for m in metas]
        unit = None
        lengths = {m.embedding.shape[0] for m in metas if m.embedding is not None}
        if metas and len(lengths) == 1 and all(m.embedding is not None for m in metas):
            unit = np.stack([m.embedding for m in metas]).astype(np.float64)  # type: ignore[misc]
        cols = []
        bits = []
        for meta in metas:
            mask = 0
            for tag in meta.tags:
                col = self._tags.setdefault(tag, len(self._tags))
                cols.append(col)
                mask |= 1 << col
            bits.append(mask)
        return CandidateBlock(
            poster_ids=list(state.poster_ids),
            retired=state.retired,
            sources=sources,
            checked=self.posters.version,
            metas=metas,
            ids=ids,
            escaped=[escape(p) for p in ids],
            fields=[arm_field(p, where, who).encode() for p in ids],
            unit=unit,
            tag_counts=[len(m.tags) for m in metas],
            tag_cols=np.array(cols, dtype=np.intp),
            tag_bits=np.array(bits, dtype=np.uint64)
            if all(c < _BITS for c in cols)
            else None,
        )

    def similarity(
        self, blocks: Sequence[CandidateBlock], flat: Sequence[PosterMeta]
    ) -> np.ndarray:
        """:func:`gateway.rules.row_similarity` of the row, from cached parts.

        Falls back to the direct computation when the row's embeddings are
        not all of one length (that function then ignores the odd ones).
        """
        if not blocks:
            return np.zeros((0, 0))
        units = [b.unit for b in blocks]
        dims = {u.shape[1] for u in units if u is not None}
        if any(u is None for u in units) or len(dims) > 1:
            return row_similarity(flat)
        k = len(flat)
        counts = [c for b in blocks for c in b.tag_counts]
        if any(counts):
            bits = [b.tag_bits for b in blocks]
            if all(b is not None for b in bits):
                # A small tag vocabulary (keyart's composition tags are about
                # ten): shared tags are the set bits both posters have.
                row_bits = np.concatenate(bits)  # type: ignore[arg-type]
                pairs = np.bitwise_and.outer(row_bits, row_bits)
                shared = np.bitwise_count(pairs).astype(np.float64)
            else:
                cols = np.concatenate([b.tag_cols for b in blocks])
                used, columns = np.unique(cols, return_inverse=True)
                incidence = np.zeros((k, used.size))
                incidence[np.repeat(np.arange(k), counts), columns] = 1.0
                shared = incidence @ incidence.T
            # A poster's tags are a set, so its row of the incidence sums to
            # its tag count; with a tag on every poster no union is empty.
            sizes = np.array(counts, dtype=np.float64)
            union = np.add.outer(sizes, sizes) - shared
            if min(counts) > 0:
                similarity = shared / union
            else:
                similarity = np.divide(
                    shared, union, out=np.zeros((k, k)), where=union > 0
                )
        else:
            similarity = np.zeros((k, k))
        if dims:
            unit = np.concatenate(units)  # type: ignore[arg-type]
            cosine = unit @ unit.T
            # As clipping to [0, 1]: the tag similarity is never negative, so
            # the maximum below already ignores a negative cosine.
            np.minimum(cosine, 1.0, out=cosine)
            np.maximum(similarity, cosine, out=similarity)
        return similarity
