"""Thompson propensities of a row: the column-by-column maximum of short
candidate lists gives what reduceat along rows gives, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.decide import _FEW_CANDIDATES, _Segment, _thompson_propensities


def _by_reduceat(draws, bonus, mask, starts, chosen):
    adjusted = draws + bonus
    adjusted[:, ~mask] = -np.inf
    best = np.maximum.reduceat(adjusted, starts, axis=1)
    wins = (adjusted[:, chosen] == best).sum(axis=0)
    eligible = np.add.reduceat(mask.astype(np.int64), starts)
    return (wins + 1.0) / (draws.shape[0] + eligible)


@pytest.mark.parametrize("longest", [1, 4, _FEW_CANDIDATES, _FEW_CANDIDATES + 3])
def test_every_layout_gives_the_reduceat_propensities(longest):
    rng = np.random.default_rng(longest)
    for trial in range(50):
        lengths = rng.integers(1, longest + 1, rng.integers(1, 21)).tolist()
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).tolist()
        segments = [
            _Segment(i, None, None, s, s + n, [], [])  # type: ignore[arg-type]
            for i, (s, n) in enumerate(zip(starts, lengths, strict=True))
        ]
        k = sum(lengths)
        draws = rng.random((64, k), dtype=np.float32)
        if trial % 2:
            draws = np.round(draws * 4) / 4  # many ties
        bonus = rng.random(k) * 0.01 * (trial % 3)
        mask = rng.random(k) > 0.2
        pairs = zip(starts, lengths, strict=True)
        chosen = [s + int(rng.integers(n)) for s, n in pairs]
        got = _thompson_propensities(draws, bonus, mask, segments, chosen)
        want = _by_reduceat(draws, bonus, mask, starts, chosen)
        assert got.tobytes() == want.tobytes()
