"""Cost of featurising one request's candidates for LinUCB and the FM.

Target: 20 candidates well under 1 ms. Printed beside the ceiling measured in
the same run: the bare matrix product of an already built raw-value matrix with
the cached projection (what remains once the Python dicts are read).

Run: ``python bench/bench_features.py``
"""

from __future__ import annotations

import timeit

import numpy as np

from bandits.features import cross_features_many, feature_projection
from bandits.fm import FMScorer, OnlineFM, fm_features

K, REPEAT = 20, 2000


def per_call_ms(fn) -> float:
    fn()
    return min(timeit.repeat(fn, number=REPEAT, repeat=5)) / REPEAT * 1e3


def main() -> None:
    rng = np.random.default_rng(0)
    user = {f"u{i}": float(rng.random()) for i in range(6)}
    posters = [{f"p{i}": float(rng.random()) for i in range(6)} for _ in range(K)]
    projection = feature_projection(tuple(sorted(user)), tuple(sorted(posters[0])), 64)
    raw = rng.random((K, projection.shape[0]))
    ceiling = per_call_ms(lambda: raw @ projection)
    ours = per_call_ms(lambda: cross_features_many(user, posters, 64))
    print(f"cross_features_many, {K} candidates, 6x6 features, dim 64:")
    print(f"  ours {ours:.3f} ms | ceiling (bare projection product) {ceiling:.3f} ms")

    fm = OnlineFM(n_factors=8, seed=0)
    xs = [fm_features(user, p, poster_id=f"p{i}") for i, p in enumerate(posters)]
    fm.learn_many(xs, [bool(i % 2) for i in range(K)])
    scorer = FMScorer.from_export(fm.export())
    ours_fm = per_call_ms(lambda: scorer.predict_proba(xs))
    river = per_call_ms(lambda: [fm.model.predict_proba_one(x) for x in xs])
    print(f"FMScorer.predict_proba, {K} candidates, 8 factors:")
    print(f"  ours {ours_fm:.3f} ms | river predict_proba_one loop {river:.3f} ms")


if __name__ == "__main__":
    main()
