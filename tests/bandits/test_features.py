"""Hashed crossed features: stable, signed, consistent between one and many."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from bandits.features import cross_features, cross_features_many, feature_slot

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


def test_vector_is_the_signed_sum_of_hashed_terms() -> None:
    dim = 16
    expected = np.zeros(dim)
    terms = {"bias": 1.0, "u:age": 0.5, "p:dark": 2.0, "u:age*p:dark": 1.0}
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
