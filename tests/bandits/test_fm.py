"""Factorization machine: the numpy scorer agrees with river."""

from __future__ import annotations

import json

import numpy as np

from bandits.fm import FMScorer, OnlineFM, fm_features


def make_traffic(seed: int, n: int):
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for _ in range(n):
        user = {"age": float(rng.random()), "night": float(rng.integers(2))}
        pid = f"p{rng.integers(6)}"
        poster = {"dark": float(pid in ("p1", "p2")), "faces": float(rng.integers(3))}
        x = fm_features(user, poster, poster_id=pid)
        p = 0.7 if (user["night"] and poster["dark"]) else 0.1
        xs.append(x)
        ys.append(bool(rng.random() < p))
    return xs, ys


def test_numpy_scorer_matches_river_to_1e6() -> None:
    fm = OnlineFM(n_factors=5, seed=3, learning_rate=0.05)
    xs, ys = make_traffic(0, 2000)
    fm.learn_many(xs, ys)
    scorer = FMScorer.from_export(json.loads(json.dumps(fm.export())))
    test_xs, _ = make_traffic(1, 200)
    river_p = np.array([fm.model.predict_proba_one(x)[True] for x in test_xs])
    assert np.max(np.abs(scorer.predict_proba(test_xs) - river_p)) < 1e-6
    assert scorer.version == fm.version == 1


def test_fm_learns_the_user_poster_interaction() -> None:
    fm = OnlineFM(n_factors=4, seed=0, learning_rate=0.05)
    xs, ys = make_traffic(2, 6000)
    for x, y in zip(xs, ys, strict=True):
        fm.learn_one(x, y)
    scorer = FMScorer.from_export(fm.export())
    night_dark = fm_features(
        {"age": 0.5, "night": 1.0}, {"dark": 1.0, "faces": 1.0}, "p1"
    )
    day_dark = fm_features(
        {"age": 0.5, "night": 0.0}, {"dark": 1.0, "faces": 1.0}, "p1"
    )
    p = scorer.predict_proba([night_dark, day_dark])
    assert p[0] > p[1] + 0.1


def test_unseen_features_are_ignored_on_both_sides() -> None:
    fm = OnlineFM(n_factors=3, seed=0)
    fm.learn_one({"u:age": 1.0, "poster=a": 1.0}, True)
    x = {"u:age": 1.0, "poster=a": 1.0, "poster=never": 1.0}
    scorer = FMScorer.from_export(fm.export())
    assert abs(fm.predict_proba_one(x) - float(scorer.predict_proba([x])[0])) < 1e-9
    assert "poster=never" not in fm.export()["latents"]


def test_fm_features_names() -> None:
    x = fm_features({"age": 0.5}, {"id": "p9", "dark": 1.0})
    assert x == {"u:age": 0.5, "p:dark": 1.0, "poster=p9": 1.0}


def test_natural_unit_poster_features_do_not_blow_up_the_sgd() -> None:
    # Posters as the workers describe them: sharpness in the hundreds, colour
    # channels to 255, counts. Unnormalised, SGD at 0.02 overflowed within ~50
    # examples; pytest turns the overflow warnings into errors.
    rng = np.random.default_rng(4)
    posters = {
        f"p{i}": {
            "sharpness": float(rng.uniform(20, 1050)),
            "colourfulness": float(rng.uniform(0, 100)),
            "face_count": float(rng.integers(0, 5)),
            "dominant_0_r": float(rng.integers(0, 256)),
            "dominant_0_share": float(rng.random()),
        }
        for i in range(8)
    }
    fm = OnlineFM(n_factors=8, seed=0, learning_rate=0.02)
    xs = []
    for _ in range(3000):
        pid = f"p{rng.integers(8)}"
        user = {"age_18_29": float(rng.integers(2)), "gender_f": float(rng.integers(2))}
        xs.append(fm_features(user, posters[pid], poster_id=pid))
        fm.learn_one(xs[-1], bool(rng.random() < 0.05))
    export = fm.export()
    assert all(np.isfinite(w) for w in export["weights"].values())
    assert all(np.isfinite(v).all() for v in export["latents"].values())
    assert all(abs(v) <= 3.0 for x in xs for v in x.values())
    scorer = FMScorer.from_export(export)
    river_p = np.array([fm.model.predict_proba_one(x)[True] for x in xs[:200]])
    assert np.max(np.abs(scorer.predict_proba(xs[:200]) - river_p)) < 1e-6
