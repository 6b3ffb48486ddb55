"""Hashed user x poster features for the shared contextual models.

A candidate poster is described to LinUCB by one fixed-length vector built from
the request's user context and the poster's own features: a bias term, every
user feature, every poster feature and every user x poster crossing. Names are
hashed into ``dim`` buckets with CRC-32 (stable across processes and machines,
unlike Python's salted ``hash()``) and a second CRC-32 picks the sign, so
colliding features cancel on average instead of piling up.

The hashing of one set of feature names is compiled once into a signed one-hot
projection matrix and cached (up to :data:`PROJECTION_CACHE_BYTES` in all), so
a request whose posters share their feature names (the usual case) costs one
small matrix product. The model itself has a fixed size whatever names
clients send: new names share the ``dim`` buckets.

Every value is normalised first (:func:`normalise_value`), here and in
:func:`bandits.fm.fm_features`, so the learner and the gateway, which both
build their vectors with this module, always see the same transform. The
workers write poster features in natural units (sharpness up to ~1000,
colour channels 0-255, counts) and clients send whatever context they like;
unscaled, those make the LinUCB crossings and the FM's SGD steps blow up. The
transform is stateless (no statistics to learn, publish or keep in step),
monotone and per value:

* a poster feature in :data:`POSTER_SCALES` is mapped by its documented
  range: ``"linear"`` divides by the scale, ``"log"`` is
  ``sign(x) log1p(|x|) / log1p(scale)``, so the usual range lands in
  ``[0, 1]``;
* any other value already within ``[-1, 1]`` (one-hots, shares, the user
  context of the demo) passes unchanged;
* any other value outside is compressed continuously:
  ``sign(x) (1 + ln|x| / ln(DEFAULT_SCALE))``, so ``DEFAULT_SCALE`` maps to 2;
* the result is clipped to ``[-CLIP, CLIP]``; NaN and infinity are refused
  with a ``ValueError`` (the learner dead-letters such events before they
  get here, the gateway answers 422).

Changing the table changes the meaning of a published model's weights:
LinUCB and the FM must be retrained (new Redis prefix or flushed models)
after an edit.

Examples
--------
>>> x = cross_features({"age": 0.3}, {"dark": 1.0}, dim=16)
>>> x.shape, x.dtype
((16,), dtype('float64'))
>>> bool(np.allclose(x, cross_features({"age": 0.3}, {"dark": 1.0}, dim=16)))
True
"""

from __future__ import annotations

import math
import threading
import zlib
from collections.abc import Mapping, Sequence
from functools import lru_cache

import numpy as np
from cachetools import LRUCache, cached

__all__ = [
    "CLIP",
    "DEFAULT_SCALE",
    "FEATURE_DIM",
    "POSTER_SCALES",
    "PROJECTION_CACHE_BYTES",
    "checked_poster_features",
    "cross_features",
    "cross_features_checked",
    "cross_features_many",
    "feature_projection",
    "feature_slot",
    "normalise_columns",
    "normalise_features",
    "normalise_value",
]

FEATURE_DIM: int = 64
"""Default length of a crossed feature vector."""

_BIAS = "bias"

CLIP: float = 3.0
"""Normalised values are clipped to ``[-CLIP, CLIP]``."""

DEFAULT_SCALE: float = 1000.0
"""A value of this size outside the table maps to 2 (1 maps to 1)."""

_COLOUR = ("linear", 255.0)
POSTER_SCALES: dict[str, tuple[str, float]] = {
    "sharpness": ("log", 1000.0),  # variance of the Laplacian, grey levels^2
    "colourfulness": ("log", 100.0),  # Hasler-Suesstrunk, ~100 is vivid
    "noise_sigma": ("log", 20.0),  # grey levels
    "face_count": ("log", 10.0),  # 1 face -> 0.29, 3 -> 0.58
    "people_count": ("log", 10.0),
    **{f"dominant_{i}_{c}": _COLOUR for i in range(3) for c in "rgb"},  # 0-255
}
"""Poster feature -> (``"linear"`` or ``"log"``, scale), from the units of
:mod:`workers.features`; features of 0 to 1 (shares, quality, crop score
parts) and -1 to 1 (warmth) need no entry."""


def feature_slot(name: str, dim: int = FEATURE_DIM) -> tuple[int, float]:
    """Bucket and sign of a feature name under the stable signed hash.

    Examples
    --------
    >>> feature_slot("u:age", 64) == feature_slot("u:age", 64)
    True
    """
    if dim < 1:
        raise ValueError(f"feature dimension must be at least 1, got {dim}")
    return _slot(name, dim)


@lru_cache(maxsize=65_536)
def _slot(name: str, dim: int) -> tuple[int, float]:
    data = name.encode()
    bucket = zlib.crc32(data) % dim
    sign = 1.0 if zlib.crc32(data, 0x5BD1E995) & 1 else -1.0
    return bucket, sign


PROJECTION_CACHE_BYTES: int = 64 * 2**20
"""Most memory the cached projections hold together.

A projection has a row for each raw value, crossings included, so one for 64
context keys and 30 poster features is about 1 MB at 64 buckets. Clients
choose the context keys, and a cache bounded by its number of entries alone
(4,096) let requests that each named new keys grow a gateway or a learner by
gigabytes; bounded by bytes, such requests only cost the time to rebuild
their projection."""


def _projection_bytes(matrix: np.ndarray) -> int:
    return int(matrix.nbytes)


_projections: LRUCache[tuple, np.ndarray] = LRUCache(
    PROJECTION_CACHE_BYTES, getsizeof=_projection_bytes
)
"""Least recently used projections, bounded by their total ``nbytes``; one
larger than the whole bound is built for its call and not kept."""


# The lock is held only to read and store: two threads missing the same key
# both build it and the first one stored is kept. The key is the call's own
# tuple of arguments, which hashes faster than cachetools' default key.
@cached(_projections, key=lambda *args: args, lock=threading.Lock())
def _projection(
    user_keys: tuple[str, ...], poster_keys: tuple[str, ...], dim: int
) -> np.ndarray:
    """Signed one-hot matrix mapping raw values to hashed buckets.

    Raw value order: bias, user features, poster features, then crossings with
    the user feature varying slowest.
    """
    names = [_BIAS]
    names += [f"u:{k}" for k in user_keys]
    names += [f"p:{k}" for k in poster_keys]
    names += [f"u:{u}*p:{p}" for u in user_keys for p in poster_keys]
    matrix = np.zeros((len(names), dim))
    for row, name in enumerate(names):
        bucket, sign = _slot(name, dim)
        matrix[row, bucket] = sign
    matrix.setflags(write=False)
    return matrix


def feature_projection(
    user_keys: tuple[str, ...], poster_keys: tuple[str, ...], dim: int = FEATURE_DIM
) -> np.ndarray:
    """Read-only signed one-hot matrix from raw values to hashed buckets.

    ``raw @ feature_projection(u_keys, p_keys, dim)`` is the crossed feature
    vector when ``raw`` is ``[1, *u, *p, *outer(u, p).ravel()]`` with ``u`` and
    ``p`` the NORMALISED (:func:`normalise_columns`) user and poster values in
    the order of the SORTED key tuples given. The learner uses it to featurise
    thousands of events in one product.

    Examples
    --------
    >>> P = feature_projection(("age",), ("dark",), 16)
    >>> raw = np.array([1.0, 0.5, 1.0, 0.5])
    >>> bool(np.allclose(raw @ P, cross_features({"age": 0.5}, {"dark": 1.0}, 16)))
    True
    """
    if dim < 1:
        raise ValueError(f"feature dimension must be at least 1, got {dim}")
    if list(user_keys) != sorted(user_keys) or list(poster_keys) != sorted(poster_keys):
        raise ValueError("feature_projection needs sorted key tuples")
    return _projection(tuple(user_keys), tuple(poster_keys), dim)


def normalise_value(name: str, value: float, poster: bool = True) -> float:
    """The model-facing value of one feature (see the module docstring).

    Parameters
    ----------
    name
        The feature's name without prefix (``"sharpness"``).
    value
        Its raw value.
    poster
        Whether it is a poster feature (only those read :data:`POSTER_SCALES`).

    Raises
    ------
    ValueError
        For NaN or infinity.

    Examples
    --------
    >>> normalise_value("sharpness", 1000.0), normalise_value("dominant_0_r", 51.0)
    (1.0, 0.2)
    >>> normalise_value("age", 0.5, poster=False), normalise_value("age", 1000.0)
    (0.5, 2.0)
    """
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"feature {name!r} is not finite: {value!r}")
    return _normalise_finite(name, value, poster)


def _normalise_finite(name: str, value: float, poster: bool) -> float:
    rule = POSTER_SCALES.get(name) if poster else None
    if rule is None and -1.0 <= value <= 1.0:
        return value
    if rule is not None:
        kind, scale = rule
        if kind == "linear":
            value = value / scale
        else:
            value = math.copysign(math.log1p(abs(value)) / math.log1p(scale), value)
    elif abs(value) > 1.0:
        value = math.copysign(1.0 + math.log(abs(value)) / _LOG_DEFAULT, value)
    return min(CLIP, max(-CLIP, value))


_LOG_DEFAULT = math.log(DEFAULT_SCALE)


def normalise_features(
    features: Mapping[str, float], poster: bool = True
) -> dict[str, float]:
    """:func:`normalise_value` of every entry of a feature dict.

    Examples
    --------
    >>> normalise_features({"sharpness": 0.0, "smile": 1.0})
    {'sharpness': 0.0, 'smile': 1.0}
    """
    return {k: normalise_value(k, v, poster) for k, v in features.items()}


def normalise_columns(
    names: Sequence[str], values: np.ndarray, poster: bool = True
) -> np.ndarray:
    """:func:`normalise_value` of a matrix whose column ``j`` is feature
    ``names[j]``, vectorised for the learner's batches (a new array).

    Raises
    ------
    ValueError
        When a value is NaN or infinite, or the shapes disagree.

    Examples
    --------
    >>> normalise_columns(["sharpness", "age"], np.array([[1000.0, 0.5]])).tolist()
    [[1.0, 0.5]]
    """
    x = np.array(values, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(names):
        raise ValueError(f"{len(names)} feature names for values of shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("feature values contain NaN or infinity")
    return _normalise_matrix(tuple(names), x, poster)


@lru_cache(maxsize=4096)
def _column_rules(names: tuple[str, ...], poster: bool):
    """Column indices and divisors of the table's linear and log features."""
    rules = [POSTER_SCALES.get(n) if poster else None for n in names]
    linear = [j for j, r in enumerate(rules) if r is not None and r[0] == "linear"]
    log = [j for j, r in enumerate(rules) if r is not None and r[0] == "log"]
    return (
        np.array(linear, dtype=np.intp),
        np.array([rules[j][1] for j in linear]),
        np.array(log, dtype=np.intp),
        np.log1p([rules[j][1] for j in log]),
    )


def _normalise_matrix(names: tuple[str, ...], x: np.ndarray, poster: bool):
    # x is finite; columns are features ``names``.
    linear, linear_scale, log, log_scale = _column_rules(names, poster)
    a = np.abs(x)
    out = np.where(
        a > 1.0, np.sign(x) * (1.0 + np.log(np.maximum(a, 1.0)) / _LOG_DEFAULT), x
    )
    if linear.size:
        out[:, linear] = x[:, linear] / linear_scale
    if log.size:
        out[:, log] = np.sign(x[:, log]) * np.log1p(a[:, log]) / log_scale
    return np.clip(out, -CLIP, CLIP, out=out)


def _checked(features: Mapping[str, float], what: str) -> tuple[tuple[str, ...], list]:
    keys = tuple(sorted(features))
    values = []
    for key in keys:
        if not isinstance(key, str):
            raise ValueError(f"{what} feature names must be str, got {key!r}")
        value = features[key]
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            raise ValueError(f"{what} feature {key!r} must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{what} feature {key!r} is not finite: {value!r}")
        values.append(value)
    return keys, values


def cross_features(
    context: Mapping[str, float], poster: Mapping[str, float], dim: int = FEATURE_DIM
) -> np.ndarray:
    """Hashed vector of bias, user, poster and user x poster crossed features.

    Values are normalised with :func:`normalise_value` before crossing.

    Parameters
    ----------
    context
        The user's features (``{"age": 0.31, "night": 1.0}``).
    poster
        The poster's features (``{"dark": 1.0, "faces": 2.0}``).
    dim
        Number of hash buckets.

    Returns
    -------
    numpy.ndarray
        float64 vector of shape ``(dim,)``.

    Raises
    ------
    ValueError
        For a non-numeric or non-finite feature value, or ``dim < 1``.

    Examples
    --------
    >>> x = cross_features({"age": 0.5}, {"dark": 1.0}, dim=8)
    >>> float(np.abs(x).sum()) <= 1 + 0.5 + 1 + 0.5
    True
    """
    return cross_features_many(context, [poster], dim)[0]


def cross_features_many(
    context: Mapping[str, float],
    posters: Sequence[Mapping[str, float]],
    dim: int = FEATURE_DIM,
) -> np.ndarray:
    """Crossed features of one user with each of ``k`` candidate posters.

    Posters that share their feature names are computed together as one matrix
    product with a cached projection, which keeps 20 candidates far below a
    millisecond.

    Returns
    -------
    numpy.ndarray
        float64 matrix of shape ``(k, dim)``; row ``i`` equals
        ``cross_features(context, posters[i], dim)``.

    Examples
    --------
    >>> X = cross_features_many({"age": 0.5}, [{"dark": 1.0}, {"dark": 0.0}], dim=8)
    >>> X.shape
    (2, 8)
    """
    if dim < 1:
        raise ValueError(f"feature dimension must be at least 1, got {dim}")
    user = _checked(context, "user")
    return _crossed(user, [_checked(poster, "poster") for poster in posters], dim)


def checked_poster_features(
    poster: Mapping[str, float],
) -> tuple[tuple[str, ...], list[float]]:
    """A poster's feature names (sorted) and values, checked as
    :func:`cross_features_many` checks them; a caller that keeps the result
    passes it to :func:`cross_features_checked` instead of checking again.

    Raises
    ------
    ValueError
        For a non-numeric or non-finite feature value.
    """
    return _checked(poster, "poster")


def cross_features_checked(
    context: Mapping[str, float],
    posters: Sequence[tuple[tuple[str, ...], list[float]]],
    dim: int = FEATURE_DIM,
) -> np.ndarray:
    """:func:`cross_features_many` of posters given as
    :func:`checked_poster_features` results: the same matrix, bit for bit."""
    if dim < 1:
        raise ValueError(f"feature dimension must be at least 1, got {dim}")
    return _crossed(_checked(context, "user"), posters, dim)


def _crossed(
    user: tuple[tuple[str, ...], list[float]],
    posters: Sequence[tuple[tuple[str, ...], list[float]]],
    dim: int,
) -> np.ndarray:
    user_keys, user_values = user
    u = np.asarray(user_values, dtype=np.float64).reshape(1, len(user_keys))
    u = _normalise_matrix(user_keys, u, False)[0]
    out = np.empty((len(posters), dim))
    groups: dict[tuple[str, ...], list[tuple[int, list]]] = {}
    for i, (keys, values) in enumerate(posters):
        groups.setdefault(keys, []).append((i, values))

    for poster_keys, members in groups.items():
        rows = [i for i, _ in members]
        p = np.asarray([values for _, values in members], dtype=np.float64)
        p = p.reshape(len(members), len(poster_keys))
        p = _normalise_matrix(poster_keys, p, True)
        crossed = (u[None, :, None] * p[:, None, :]).reshape(len(members), -1)
        raw = np.hstack(
            [
                np.ones((len(members), 1)),
                np.broadcast_to(u, (len(members), u.size)),
                p,
                crossed,
            ]
        )
        out[rows] = raw @ _projection(user_keys, poster_keys, dim)
    return out
