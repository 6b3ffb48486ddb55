"""LinUCB as a policy: upper confidence bounds of the shared linear model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bandits.features import FEATURE_DIM
from bandits.linucb import LinUCB
from bandits.policies.base import ArgmaxPolicy
from bandits.state import ArmStats

__all__ = ["LinUCBPolicy"]


class LinUCBPolicy(ArgmaxPolicy):
    """Choose the candidate with the highest ``mean + alpha * width``.

    ``X`` is the ``(k, dim)`` matrix of crossed features of the candidates
    (:func:`bandits.features.cross_features_many`). The model is the shared
    :class:`bandits.linucb.LinUCB` the learner publishes; assign a fresh copy to
    :attr:`model` whenever its version changes. Without data every candidate's
    mean is 0 and the widths (larger for unusual feature vectors) decide, so
    posters are explored from the start. Deterministic: ties split evenly.

    Parameters
    ----------
    model
        The model to score with (a fresh one of ``dim`` when omitted).
    alpha
        Width multiplier; ``None`` uses the model's own ``alpha``.

    Examples
    --------
    >>> from bandits.linucb import LinUCB
    >>> model = LinUCB(dim=2)
    >>> for _ in range(20):
    ...     model.update(np.array([1.0, 0.0]), 1.0)
    ...     model.update(np.array([0.0, 1.0]), 0.0)
    >>> LinUCBPolicy(model).choose(None, np.random.default_rng(0), X=np.eye(2)).index
    0
    """

    name = "linucb"
    needs_features = True

    def __init__(
        self,
        model: LinUCB | None = None,
        alpha: float | None = None,
        dim: int = FEATURE_DIM,
    ) -> None:
        if alpha is not None and not alpha >= 0:
            raise ValueError(f"LinUCB alpha must be >= 0, got {alpha}")
        self.model = model if model is not None else LinUCB(dim=dim)
        self.alpha = alpha

    def scores(self, stats: Sequence[ArmStats] | None, X: Any = None) -> np.ndarray:
        if X is None:
            raise ValueError("policy 'linucb' needs candidate features X")
        mean, width = self.model.score(np.asarray(X, dtype=np.float64))
        alpha = self.model.alpha if self.alpha is None else self.alpha
        return mean + alpha * width
