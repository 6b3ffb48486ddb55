"""Maximal marginal relevance: keep look-alike posters apart within a row.

A row of titles whose posters all share one composition (the same close-up, the
same dark palette) or the same tags looks monotonous. :func:`mmr_order` orders
the candidates greedily: each next one maximises
``lam * relevance - (1 - lam) * max similarity to those already placed``, where
relevance is the score min-max scaled to [0, 1] within the row so both terms
share a scale.

Similarity is the cosine of the posters' embeddings (clipped at 0: opposite
embeddings count as unrelated), the Jaccard index of their tag sets, or, when
both are given, the larger of the two.

Examples
--------
>>> scores = np.array([0.9, 0.85, 0.5])
>>> tags = [{"dark", "face"}, {"dark", "face"}, {"bright"}]
>>> mmr_order(scores, None, tags, lam=0.5)
[0, 2, 1]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["mmr_order", "similarity_matrix"]


def similarity_matrix(
    embeddings: np.ndarray | None = None, tags: Sequence[set[str]] | None = None
) -> np.ndarray:
    """Pairwise similarity in [0, 1] of ``k`` posters.

    Examples
    --------
    >>> similarity_matrix(tags=[{"a", "b"}, {"b", "c"}])[0, 1].round(3)
    np.float64(0.333)
    >>> similarity_matrix(np.array([[1.0, 0.0], [1.0, 1.0]]))[0, 1].round(3)
    np.float64(0.707)
    """
    if embeddings is None and tags is None:
        raise ValueError("similarity needs embeddings, tags or both")
    sims = []
    if embeddings is not None:
        e = np.asarray(embeddings, dtype=np.float64)
        if e.ndim != 2:
            raise ValueError(f"embeddings must be a (k, d) matrix, got shape {e.shape}")
        if not np.all(np.isfinite(e)):
            raise ValueError("embeddings contain NaN or infinity")
        norms = np.linalg.norm(e, axis=1, keepdims=True)
        unit = np.divide(e, norms, out=np.zeros_like(e), where=norms > 0)
        sims.append(np.clip(unit @ unit.T, 0.0, 1.0))
    if tags is not None:
        k = len(tags)
        jac = np.zeros((k, k))
        for i in range(k):
            for j in range(i, k):
                union = len(tags[i] | tags[j])
                jac[i, j] = jac[j, i] = len(tags[i] & tags[j]) / union if union else 0.0
        sims.append(jac)
    if len(sims) == 2 and sims[0].shape != sims[1].shape:
        raise ValueError(
            f"{sims[0].shape[0]} embeddings but {sims[1].shape[0]} tag sets"
        )
    return np.maximum.reduce(sims)


def mmr_order(
    scores: np.ndarray,
    embeddings: np.ndarray | None,
    tags: Sequence[set[str]] | None,
    lam: float = 0.7,
    k: int | None = None,
) -> list[int]:
    """Candidate indices in maximal-marginal-relevance order.

    Parameters
    ----------
    scores
        Relevance of each candidate (a policy's scores), shape ``(k,)``.
    embeddings
        Optional ``(k, d)`` poster embeddings (composition descriptors).
    tags
        Optional tag set per candidate.
    lam
        Weight of relevance against novelty; ``1.0`` keeps the score order.
    k
        How many indices to return (all by default).

    Examples
    --------
    >>> mmr_order(np.array([0.3, 0.2, 0.1]), None, None)
    [0, 1, 2]
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"scores must be 1-d, got shape {s.shape}")
    if np.any(np.isnan(s)):
        raise ValueError("scores contain NaN")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be within [0, 1], got {lam}")
    n = s.size
    take = n if k is None else min(k, n)
    if take < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    finite = np.isfinite(s)
    s = np.where(finite, s, np.where(s > 0, np.inf, -np.inf))
    lo, hi = (s[finite].min(), s[finite].max()) if finite.any() else (0.0, 0.0)
    relevance = np.clip((s - lo) / (hi - lo) if hi > lo else np.zeros(n), -1.0, 2.0)
    relevance = np.where(finite, relevance, np.where(s > 0, 2.0, -1.0))
    if embeddings is None and tags is None:
        sim = np.zeros((n, n))
    else:
        sim = similarity_matrix(embeddings, tags)
        if sim.shape != (n, n):
            raise ValueError(f"{n} scores but similarity for {sim.shape[0]} posters")

    order: list[int] = []
    closest = np.zeros(n)  # max similarity to the posters already placed
    left = np.ones(n, dtype=bool)
    for _ in range(take):
        gain = np.where(left, lam * relevance - (1 - lam) * closest, -np.inf)
        i = int(np.argmax(gain))
        order.append(i)
        left[i] = False
        closest = np.maximum(closest, sim[i])
    return order
