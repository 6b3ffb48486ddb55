"""Per-partition shards of the global models, and how they are merged.

LinUCB's sufficient statistics are additive: ``A = ridge * I + sum x x^T``
over impressions and ``b = sum x`` over credited clicks. Each partition keeps
its own ``(A_p, b_p)`` delta, written to Redis in the same transaction as the
partition's offsets, so a shard is exact through restarts and rebalances
whoever owns the partition. The worker that owns partition 0 sums the shards
and publishes the merged model, inverse included, under ``{p}:model:linucb``
in the :meth:`bandits.linucb.LinUCB.to_mapping` layout.

An impression adds ``x x^T`` to ``A`` as soon as it is seen and its click
later adds ``x`` to ``b``; the order never matters, so the learner needs no
label delay for LinUCB.

Examples
--------
>>> shard = LinUCBShard(dim=4)
>>> X = feature_rows([({"a": 1.0}, {"b": 0.5})], dim=4)
>>> shard.add_impressions(X)
>>> shard.add_clicks(X)
>>> merged = merge_linucb([shard], alpha=1.0, ridge=1.0)
>>> merged.n_updates, merged.dim
(1, 4)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

# The normalisation and hashing the gateway scores with.
from bandits.features import feature_projection, normalise_columns
from bandits.linucb import LinUCB

__all__ = ["LinUCBShard", "feature_rows", "merge_linucb"]


def feature_rows(
    pairs: Sequence[tuple[Mapping[str, float], Mapping[str, float]]], dim: int
) -> np.ndarray:
    """Crossed features of many (context, poster features) pairs at once.

    Row ``i`` equals ``bandits.features.cross_features(*pairs[i], dim)``;
    pairs that share their feature names are projected together in one
    matrix product, which is what makes a batch of thousands cheap.
    """
    out = np.empty((len(pairs), dim))
    groups: dict[tuple[tuple[str, ...], tuple[str, ...]], list[int]] = {}
    for i, (context, poster) in enumerate(pairs):
        groups.setdefault((tuple(context), tuple(poster)), []).append(i)
    for (user_keys, poster_keys), rows in groups.items():
        n = len(rows)
        members = [pairs[i] for i in rows]
        u = np.array([v for c, _ in members for v in c.values()], dtype=float)
        p = np.array([v for _, q in members for v in q.values()], dtype=float)
        # Columns in sorted name order, the order the projection was built in.
        u = u.reshape(n, len(user_keys))[:, np.argsort(user_keys)]
        p = p.reshape(n, len(poster_keys))[:, np.argsort(poster_keys)]
        u = normalise_columns(sorted(user_keys), u, poster=False)
        p = normalise_columns(sorted(poster_keys), p)
        crossed = (u[:, :, None] * p[:, None, :]).reshape(n, -1)
        raw = np.hstack([np.ones((n, 1)), u, p, crossed])
        projection = feature_projection(
            tuple(sorted(user_keys)), tuple(sorted(poster_keys)), dim
        )
        if n == len(pairs):
            out[:] = raw @ projection
        else:
            out[rows] = raw @ projection
    return out


class LinUCBShard:
    """One partition's additive share of the global LinUCB statistics.

    Parameters
    ----------
    dim
        Length of the crossed feature vectors.

    Attributes
    ----------
    a, b
        ``sum x x^T`` over the partition's impressions, ``sum x`` over its
        credited clicks.
    n
        Impressions learnt from.
    version
        Grows with every change, so a flush writes the shard only when needed.
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.a = np.zeros((dim, dim))
        self.b = np.zeros(dim)
        self.n = 0
        self.clicks = 0
        self.version = 0
        self.written_version = 0

    def add_impressions(self, X: np.ndarray) -> None:
        if len(X):
            self.a += X.T @ X
            self.n += len(X)
            self.version += 1

    def add_clicks(self, X: np.ndarray) -> None:
        if len(X):
            self.b += X.sum(axis=0)
            self.clicks += len(X)
            self.version += 1

    def to_mapping(self) -> dict[str, bytes]:
        return {
            "a": self.a.astype("<f8").tobytes(),
            "b": self.b.astype("<f8").tobytes(),
            "n": str(self.n).encode(),
            "clicks": str(self.clicks).encode(),
            "dim": str(self.dim).encode(),
        }

    @classmethod
    def from_mapping(cls, m: Mapping[bytes, bytes], dim: int) -> LinUCBShard:
        """Rebuild a shard; an empty mapping gives an empty shard.

        Raises
        ------
        ValueError
            When the stored shard has another dimension.
        """
        shard = cls(dim)
        if not m:
            return shard
        stored = int(m[b"dim"])
        if stored != dim:
            raise ValueError(f"LinUCB shard has dim {stored}, the learner uses {dim}")
        shard.a = np.frombuffer(m[b"a"], dtype="<f8").reshape(dim, dim).copy()
        shard.b = np.frombuffer(m[b"b"], dtype="<f8").copy()
        shard.n = int(m[b"n"])
        shard.clicks = int(m.get(b"clicks", 0))
        return shard


def merge_linucb(shards: Iterable[LinUCBShard], alpha: float, ridge: float) -> LinUCB:
    """Sum shards into one :class:`bandits.linucb.LinUCB` (inverse recomputed).

    ``n_updates`` is the total impressions learnt from and ``version`` the
    total impressions plus credited clicks, so both only grow as the shards
    do, and any change of ``A`` or ``b`` changes ``version``.
    """
    shards = list(shards)
    dim = shards[0].dim
    model = LinUCB(dim=dim, alpha=alpha, ridge=ridge)
    model.a = np.eye(dim) * ridge + sum((s.a for s in shards), np.zeros((dim, dim)))
    model.b = sum((s.b for s in shards), np.zeros(dim))
    model.a_inv = np.linalg.inv(model.a)
    model.n_updates = sum(s.n for s in shards)
    model.version = model.n_updates + sum(s.clicks for s in shards)
    return model
