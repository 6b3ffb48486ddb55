"""Fast Beta posterior draws for Thompson sampling and its propensity.

``numpy``'s Beta sampler costs about 0.15 us a draw, too slow for the 20,000
draws a Monte Carlo propensity needs inside a request. Draws here come from
standard normals ``z``:

* an arm with at least 30 clicks and 30 misses (``min(a, b) >= 30``) is drawn
  from the normal distribution with the Beta posterior's mean and variance;
* any other arm is drawn exactly as ``Ga / (Ga + Gb)``, each Gamma variable
  being the Gamma quantile of ``Phi(z)`` (shape < 30) or its Wilson-Hilferty
  cube transform (shape >= 30).

Choices and their propensities share this sampler, so a logged propensity is
the probability of the distribution the choice really came from.

Requests of up to 32,768 draws (20 candidates x 1,000 draws) take their
normals from a fixed pool of 65,536 drawn once from a fixed seed, at an offset
picked by the caller's generator, and reuse the Gamma quantiles of the whole
pool, computed once per small shape (a few tens of shapes occur, since shapes
are the prior plus small counts; each costs 256 KiB and tens of milliseconds
the first time it is seen). Larger requests, up to 2 million draws, slice a
second pool of 4 million normals (16 MiB, made on first use) and use an
interpolated Gamma quantile table; the smallest requests draw fresh normals.
Results are reproducible for a seeded generator.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.special import gammaincinv, ndtr

NORMAL_ABOVE = 30.0
_POOL = np.random.default_rng(0x6B657961).standard_normal(1 << 16, dtype=np.float32)
_POOL.setflags(write=False)
_FRESH_BELOW = 512
_BIG_POOL_SIZE = 1 << 22
_Z_LIMIT = 6.0
_GRID = 1024
_Z_GRID = np.linspace(-_Z_LIMIT, _Z_LIMIT, _GRID + 1)


@lru_cache(maxsize=1)
def _big_pool() -> np.ndarray:
    pool = np.random.default_rng(0x706F6F6C).standard_normal(
        _BIG_POOL_SIZE, dtype=np.float32
    )
    pool.setflags(write=False)
    return pool


@lru_cache(maxsize=256)
def _gamma_table(shape: float) -> np.ndarray:
    table = gammaincinv(shape, ndtr(_Z_GRID)).astype(np.float32)
    table.setflags(write=False)
    return table


@lru_cache(maxsize=128)
def _gamma_pool(shape: float) -> np.ndarray:
    pool = gammaincinv(shape, ndtr(_POOL.astype(np.float64))).astype(np.float32)
    pool.setflags(write=False)
    return pool


def _wilson_hilferty(shape: float | np.ndarray, z: np.ndarray) -> np.ndarray:
    s = np.asarray(shape, dtype=z.dtype)
    root = (1.0 - 1.0 / (9.0 * s)).astype(z.dtype) + z * (1.0 / (3.0 * np.sqrt(s)))
    np.maximum(root, 0.0, out=root)
    return s * (root * root * root)


def _gamma_from_tables(shapes: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Gamma draws of small shapes (one per column) by interpolated quantiles."""
    tables = np.stack([_gamma_table(float(shape)) for shape in shapes])
    pos = (np.clip(z, -_Z_LIMIT, _Z_LIMIT) + _Z_LIMIT) * (_GRID / (2 * _Z_LIMIT))
    i = np.minimum(pos.astype(np.intp), _GRID - 1)
    cols = np.arange(shapes.size)
    lo = tables[cols, i]
    return lo + (pos - i) * (tables[cols, i + 1] - lo)


def _ratio(ga: np.ndarray, gb: np.ndarray) -> np.ndarray:
    total = ga + gb
    return np.divide(
        ga, total, out=np.full(ga.shape, 0.5, dtype=total.dtype), where=total > 0
    )


def beta_draws(
    a: np.ndarray, b: np.ndarray, rng: np.random.Generator, n: int
) -> np.ndarray:
    """``(n, k)`` float32 draws of the Beta(a_j, b_j) posterior of each column."""
    k = a.size
    size = n * k
    pooled = _FRESH_BELOW < 2 * size <= _POOL.size
    offset = 0
    if pooled:
        offset = int(rng.integers(0, _POOL.size - 2 * size + 1))
        z = _POOL[offset : offset + 2 * size].reshape(2, n, k)
    elif _FRESH_BELOW < 2 * size <= _BIG_POOL_SIZE:
        big_pool = _big_pool()
        start = int(rng.integers(0, big_pool.size - 2 * size + 1))
        z = big_pool[start : start + 2 * size].reshape(2, n, k)
    else:
        z = rng.standard_normal((2, n, k), dtype=np.float32)

    small = np.flatnonzero(np.minimum(a, b) < NORMAL_ABOVE)
    if small.size < k:
        total = a + b
        sd = np.sqrt(a * b / (total * total * (total + 1.0))).astype(np.float32)
        out = sd * z[0]
        out += (a / total).astype(np.float32)
    else:
        out = np.empty((n, k), dtype=np.float32)
    if small.size == 0:
        return out
    sides = []
    for side, shapes in ((0, a[small]), (1, b[small])):
        g = np.empty((n, small.size), dtype=np.float32)
        big = shapes >= NORMAL_ABOVE
        if big.any():
            g[:, big] = _wilson_hilferty(shapes[big], z[side][:, small[big]])
        low = np.flatnonzero(~big)
        if low.size and pooled:
            # Python ints and floats: numpy scalars would make each slice of
            # this per-column loop several times dearer.
            base = offset + side * size
            shape_list, column_list = shapes.tolist(), small.tolist()
            g[:, low] = np.stack(
                [
                    _gamma_pool(float(shape_list[j]))[
                        base + column_list[j] : base + size : k
                    ]
                    for j in low.tolist()
                ],
                axis=1,
            )
        elif low.size:
            g[:, low] = _gamma_from_tables(shapes[low], z[side][:, small[low]])
        sides.append(g)
    if small.size == k:
        return _ratio(sides[0], sides[1])
    out[:, small] = _ratio(sides[0], sides[1])
    return out
