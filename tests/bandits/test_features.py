"""Hashed crossed features: stable, signed, consistent between one and many."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

from bandits import features
from bandits.features import (
    CLIP,
    POSTER_SCALES,
    PROJECTION_CACHE_BYTES,
    checked_poster_features,
    cross_features,
    cross_features_checked,
    cross_features_many,
    feature_slot,
    normalise_columns,
    normalise_value,
)

USER = {"age": 0.31, "night": 1.0}
POSTERS = [{"dark": 1.0, "faces": 2.0}, {"dark": 0.0, "faces": 1.0}, {"text": 1.0}]


def test_same_vector_in_another_process() -> None:
    code = (
        "from bandits.features import cross_features;"
        "print(cross_features({'age': 0.31, 'night': 1.0},"
        " {'dark': 1.0, 'faces': 2.0}).tolist())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    here = cross_features(USER, POSTERS[0]).tolist()
    assert eval(out.stdout) == here  # noqa: S307 - our own subprocess's list


def test_many_equals_one_by_one_with_mixed_feature_names() -> None:
    X = cross_features_many(USER, POSTERS, dim=32)
    assert X.shape == (3, 32) and X.dtype == np.float64
    for row, poster in zip(X, POSTERS, strict=True):
        assert np.array_equal(row, cross_features(USER, poster, dim=32))


def test_checked_posters_give_the_same_matrix_bit_for_bit() -> None:
    checked = [checked_poster_features(p) for p in POSTERS * 3]
    X = cross_features_checked(USER, checked, dim=32)
    assert X.tobytes() == cross_features_many(USER, POSTERS * 3, dim=32).tobytes()
    with pytest.raises(ValueError, match="not finite"):
        checked_poster_features({"dark": float("nan")})


def test_vector_is_the_signed_sum_of_hashed_terms() -> None:
    dim = 16
    expected = np.zeros(dim)
    dark = normalise_value("dark", 2.0)
    terms = {"bias": 1.0, "u:age": 0.5, "p:dark": dark, "u:age*p:dark": 0.5 * dark}
    for name, value in terms.items():
        bucket, sign = feature_slot(name, dim)
        expected[bucket] += sign * value
    assert np.allclose(cross_features({"age": 0.5}, {"dark": 2.0}, dim), expected)


def test_signs_are_mixed_so_collisions_cancel_on_average() -> None:
    signs = [feature_slot(f"u:f{i}", 64)[1] for i in range(400)]
    assert 120 < signs.count(1.0) < 280


def test_user_features_change_poster_ranking_through_crossings() -> None:
    a = cross_features_many({"age": 1.0}, POSTERS[:2])
    b = cross_features_many({"age": 0.0}, POSTERS[:2])
    assert not np.allclose(a[0] - a[1], b[0] - b[1])


# The workers' features at the top of their documented ranges.
NATURAL_TOPS = {
    "sharpness": 1050.0,
    "colourfulness": 100.0,
    "noise_sigma": 20.0,
    "face_count": 10.0,
    "people_count": 10.0,
    "dominant_0_r": 255.0,
    "dominant_2_b": 255.0,
}


def test_documented_poster_ranges_land_in_unit_interval() -> None:
    for name, top in NATURAL_TOPS.items():
        assert 0.95 <= normalise_value(name, top) <= 1.01, name
        assert normalise_value(name, 0.0) == 0.0
    assert 0.2 < normalise_value("face_count", 1.0) < normalise_value("face_count", 2)


def test_unit_values_pass_and_others_are_compressed_monotonically() -> None:
    for v in (-1.0, -0.3, 0.0, 0.5, 1.0):
        assert normalise_value("anything", v, poster=False) == v
    grid = np.concatenate([-np.logspace(9, -3, 300), np.logspace(-3, 9, 300)])
    out = [normalise_value("anything", v, poster=False) for v in grid]
    assert np.all(np.diff(out) >= 0)
    assert max(map(abs, out)) == CLIP
    # Continuous where the pass-through ends.
    assert abs(normalise_value("u", 1.0 + 1e-9) - 1.0) < 1e-6


def test_the_scale_table_is_for_poster_features_only() -> None:
    assert normalise_value("sharpness", 0.5, poster=False) == 0.5
    assert normalise_value("sharpness", 0.5) != 0.5


def test_non_finite_values_are_refused() -> None:
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match="finite"):
            normalise_value("sharpness", bad)
        with pytest.raises(ValueError, match="NaN"):
            normalise_columns(["sharpness"], np.array([[bad]]))


def test_columns_equal_value_by_value() -> None:
    rng = np.random.default_rng(5)
    names = [*POSTER_SCALES, "quality", "warmth", "other"]
    values = rng.normal(0, 300, (50, len(names))) * rng.random((50, len(names)))
    for poster in (True, False):
        got = normalise_columns(names, values, poster=poster)
        want = [
            [normalise_value(n, v, poster) for n, v in zip(names, row, strict=True)]
            for row in values
        ]
        assert np.allclose(got, want)


def test_crossed_vector_of_a_real_poster_is_bounded() -> None:
    poster = {"sharpness": 1050.0, "dominant_0_r": 255.0, "colourfulness": 80.0}
    x = cross_features({"age_18_29": 1.0, "visits": 40.0}, poster, dim=64)
    terms = 1 + 2 + 3 + 6
    assert np.abs(x).max() <= terms * CLIP * CLIP
    assert np.abs(x).max() < 10


def test_new_context_keys_on_every_request_hold_bounded_memory() -> None:
    """Each set of context keys compiles its own projection (about 1 MB for 64
    keys and 30 poster features): 160 requests naming new keys would keep
    165 MB if the cache only counted entries."""
    rng = np.random.default_rng(3)
    poster = {f"look_{i}": 0.5 for i in range(30)}
    letters = list("abcdefghijklmnop")
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(160):
            context = {"k" + "".join(rng.choice(letters, 40)): 0.5 for _ in range(64)}
            X = cross_features_many(context, [poster], 64)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert X.shape == (1, 64)
    # The name-hash cache holds its 65,536 names (about 20 MB) on top.
    assert grown < PROJECTION_CACHE_BYTES + 32 * 2**20
    held = sum(matrix.nbytes for matrix in features._projections.values())
    assert held == features._projections.currsize <= PROJECTION_CACHE_BYTES
