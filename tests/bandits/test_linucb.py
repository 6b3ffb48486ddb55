"""Shared-parameter LinUCB: exact incremental inverse, persistence, learning."""

from __future__ import annotations

import numpy as np

from bandits.features import cross_features_many
from bandits.linucb import LinUCB


def test_sherman_morrison_equals_direct_inverse() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(600, 8))
    model = LinUCB(dim=8, ridge=0.5, refresh_every=10**9)
    for x in X:
        model.update(x, 1.0)
    direct = np.linalg.inv(0.5 * np.eye(8) + X.T @ X)
    assert np.allclose(model.a_inv, direct, rtol=0, atol=1e-8)


def test_update_many_equals_sequential_updates() -> None:
    rng = np.random.default_rng(2)
    X, r = rng.normal(size=(300, 6)), rng.random(300)
    one, batch = LinUCB(dim=6, refresh_every=100), LinUCB(dim=6, refresh_every=100)
    for x, reward in zip(X, r, strict=True):
        one.update(x, reward)
    batch.update_many(X[:150], r[:150])
    batch.update_many(X[150:], r[150:])
    assert np.allclose(one.a_inv, batch.a_inv, rtol=0, atol=1e-8)
    assert np.allclose(one.theta, batch.theta, rtol=0, atol=1e-8)
    assert one.n_updates == batch.n_updates == 300
    assert (one.version, batch.version) == (300, 2)


def test_refresh_recomputes_inverse_from_a() -> None:
    rng = np.random.default_rng(3)
    model = LinUCB(dim=5, refresh_every=7)
    model.update_many(rng.normal(size=(21, 5)), np.ones(21))
    assert np.array_equal(model.a_inv, np.linalg.inv(model.a))


def test_mapping_round_trip_is_exact_with_bytes_keys() -> None:
    rng = np.random.default_rng(4)
    model = LinUCB(dim=7, alpha=0.3, ridge=2.0)
    model.update_many(rng.normal(size=(40, 7)), rng.random(40))
    stored = {k.encode(): v for k, v in model.to_mapping().items()}
    back = LinUCB.from_mapping(stored)
    assert np.array_equal(back.a_inv, model.a_inv)
    assert np.array_equal(back.a, model.a) and np.array_equal(back.b, model.b)
    assert (back.alpha, back.ridge, back.version, back.n_updates) == (
        0.3,
        2.0,
        model.version,
        40,
    )
    X = rng.normal(size=(3, 7))
    assert np.array_equal(back.ucb(X), model.ucb(X))


def test_learns_planted_linear_click_model_on_crossed_features() -> None:
    rng = np.random.default_rng(5)
    true_theta = rng.normal(scale=0.1, size=32)

    def traffic(n: int) -> np.ndarray:
        rows = []
        for _ in range(n):
            user = {"age": float(rng.random()), "night": float(rng.integers(2))}
            posters = [
                {"dark": float(rng.random()), "faces": float(rng.integers(3))}
                for _ in range(4)
            ]
            rows.append(cross_features_many(user, posters, dim=32))
        return np.vstack(rows)

    model = LinUCB(dim=32)
    X = traffic(300)
    model.update_many(X, X @ true_theta + rng.normal(scale=0.01, size=len(X)))
    held_out = traffic(50)
    mean, width = model.score(held_out)
    assert np.max(np.abs(mean - held_out @ true_theta)) < 0.01
    assert np.all(width > 0)


def test_width_shrinks_where_data_was_seen() -> None:
    model = LinUCB(dim=3, alpha=2.0)
    seen = np.array([1.0, 0.0, 0.0])
    for _ in range(50):
        model.update(seen, 0.0)
    _, width = model.score(np.eye(3))
    assert width[0] < 0.2 < width[1]
    assert np.allclose(model.ucb(np.eye(3)), model.score(np.eye(3))[0] + 2.0 * width)
