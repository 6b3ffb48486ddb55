"""Cached candidate blocks give the row similarity of the direct computation,
with a small tag vocabulary (bit masks) and a large one (an incidence)."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.candidates import CandidateCache
from gateway.placements import PLACEMENTS
from gateway.rules import row_similarity
from gateway.state import PosterCache, PosterMeta, VideoState


def _poster(
    rng: np.random.Generator, video: str, i: int, tags: list[str]
) -> PosterMeta:
    embedding = rng.normal(size=8)
    return PosterMeta(
        poster_id=f"{video}-p{i}",
        video_id=video,
        image_url="",
        aspect="2:3",
        placements=(),
        features={},
        tags=frozenset(tags),
        embedding=embedding / np.linalg.norm(embedding),
        status="approved",
        created_ms=0,
    )


@pytest.mark.parametrize("vocabulary", [5, 200])
def test_similarity_equals_the_direct_computation(vocabulary):
    rng = np.random.default_rng(vocabulary)
    posters = PosterCache(ttl_s=60.0)
    cache = CandidateCache(posters)
    states = []
    for v in range(40):
        video = f"v{v}"
        ids = []
        for i in range(int(rng.integers(1, 6))):
            count = int(rng.integers(0, 4))  # some posters have no tag
            tags = [f"t{rng.integers(vocabulary)}" for _ in range(count)]
            meta = _poster(rng, video, i, tags)
            posters.put(meta.poster_id, meta, 0.0)
            ids.append(meta.poster_id)
        states.append(VideoState(video, {}, sorted(ids), frozenset(), {}, frozenset()))
    blocks = [cache.block(s, PLACEMENTS["home_row"], "", "") for s in states]
    flat = [m for b in blocks for m in b.metas]
    masked = [b.tag_bits is not None for b in blocks]
    assert all(masked) if vocabulary <= 64 else not all(masked)
    assert np.array_equal(cache.similarity(blocks, flat), row_similarity(flat))


def test_a_block_is_rebuilt_when_a_poster_entry_is_replaced():
    rng = np.random.default_rng(7)
    posters = PosterCache(ttl_s=60.0)
    cache = CandidateCache(posters)
    home = PLACEMENTS["home_row"]
    first = _poster(rng, "v", 0, ["a"])
    posters.put(first.poster_id, first, 0.0)
    state = VideoState("v", {}, [first.poster_id], frozenset(), {}, frozenset())
    block = cache.block(state, home, "", "")
    assert cache.block(state, home, "", "") is block  # nothing changed

    other = _poster(rng, "w", 0, ["b"])
    posters.put(other.poster_id, other, 0.0)  # another video's poster
    assert cache.block(state, home, "", "") is block

    refreshed = _poster(rng, "v", 0, ["c"])
    posters.put(refreshed.poster_id, refreshed, 1.0)
    rebuilt = cache.block(state, home, "", "")
    assert rebuilt is not block and rebuilt.metas[0] is refreshed
    assert cache.block(state, home, "", "") is rebuilt
