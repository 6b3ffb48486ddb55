"""Reward models for the direct-method part of doubly robust estimation.

A reward model predicts the click probability of every candidate pair of a
log. :func:`cross_fit` fits it on all folds but one and predicts the held-out
fold, so no row's prediction has seen its own reward (which would otherwise
bias doubly robust estimates towards the observed rewards).

Examples
--------
>>> import numpy as np
>>> from bandits.evaluation.feedback import LoggedBandit
>>> log = LoggedBandit.from_arrays(np.array([0, 0, 1, 1]),
...                                np.array([1.0, 1.0, 0.0, 0.0]), np.full(4, 0.5), 2)
>>> ActionMeanModel(prior_strength=0).fit(log).predict(log).tolist()
[1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd
from scipy import sparse

from bandits.evaluation.feedback import LoggedBandit

__all__ = ["ActionMeanModel", "LogisticModel", "RewardModel", "cross_fit", "make_model"]


class RewardModel(Protocol):
    """Fits on a log's logged pairs, predicts any log's candidate pairs."""

    def fit(self, log: LoggedBandit) -> RewardModel:
        """Learn from the logged actions and their rewards."""
        ...

    def predict(self, log: LoggedBandit) -> np.ndarray:
        """Expected reward of each candidate pair of ``log``."""
        ...


@dataclass
class ActionMeanModel:
    """Mean reward per action, shrunk towards the overall mean.

    ``(clicks + s * mean) / (impressions + s)`` with ``s = prior_strength``, so
    actions seldom logged are predicted near the overall click-through rate.
    """

    prior_strength: float = 10.0
    action_to_mean: dict[str, float] = field(default_factory=dict)
    overall: float = 0.0

    def fit(self, log: LoggedBandit) -> ActionMeanModel:
        """Count impressions and rewards per action."""
        self.overall = float(log.rewards.mean()) if log.n else 0.0
        shown = np.bincount(log.actions, minlength=log.n_actions)
        total = np.bincount(log.actions, weights=log.rewards, minlength=log.n_actions)
        s = self.prior_strength
        with np.errstate(invalid="ignore", divide="ignore"):
            means = (total + s * self.overall) / (shown + s)
        means = np.where(shown + s > 0, means, self.overall)
        self.action_to_mean = dict(zip(log.action_names, means.tolist(), strict=True))
        return self

    def predict(self, log: LoggedBandit) -> np.ndarray:
        """Each pair's action mean (the overall mean for unseen actions)."""
        per_action = np.array(
            [self.action_to_mean.get(a, self.overall) for a in log.action_names]
        )
        return per_action[log.pair_action]


@dataclass
class LogisticModel:
    """Logistic regression on context features plus a one-hot of the action.

    Numeric context columns are standardised, text columns one-hot encoded.
    The model has no context-action interactions: it shifts every action's
    rate by the context, which lowers the variance of doubly robust estimates
    but does not rank actions per context.
    """

    c: float = 1.0
    seed: int = 0
    _model: Any = None
    _encoder: Any = None
    _actions: list[str] = field(default_factory=list)

    def _design(self, log: LoggedBandit, pairs: bool) -> sparse.csr_matrix:
        context = (
            self._encoder.transform(log.contexts)
            if self._encoder is not None
            else sparse.csr_matrix((log.n, 0))
        )
        context = sparse.csr_matrix(context)
        code_of = {a: i for i, a in enumerate(self._actions)}
        names = log.action_names
        mapped = np.array([code_of.get(a, -1) for a in names], dtype=np.int64)
        rows = log.pair_row if pairs else np.arange(log.n)
        acts = mapped[log.pair_action if pairs else log.actions]
        known = acts >= 0
        onehot = sparse.csr_matrix(
            (np.ones(int(known.sum())), (np.flatnonzero(known), acts[known])),
            shape=(rows.size, len(self._actions)),
        )
        return sparse.hstack([context[rows], onehot], format="csr")

    def fit(self, log: LoggedBandit) -> LogisticModel:
        """Fit on the logged actions; a log with one reward value fits a constant."""
        from sklearn.compose import ColumnTransformer
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import OneHotEncoder, StandardScaler

        self._actions = list(log.action_names)
        frame = log.contexts
        if frame.shape[1]:
            numeric = [
                c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])
            ]
            text = [c for c in frame.columns if c not in numeric]
            self._encoder = ColumnTransformer(
                [
                    ("num", StandardScaler(), numeric),
                    ("cat", OneHotEncoder(handle_unknown="ignore"), text),
                ],
                sparse_threshold=1.0,
            ).fit(frame)
        labels = (log.rewards > 0).astype(int)
        if labels.min(initial=0) == labels.max(initial=0):
            self._model = float(labels.mean()) if log.n else 0.0
            return self
        self._model = LogisticRegression(
            C=self.c, max_iter=2000, random_state=self.seed
        ).fit(self._design(log, pairs=False), labels)
        return self

    def predict(self, log: LoggedBandit) -> np.ndarray:
        """Predicted click probability of each candidate pair."""
        if isinstance(self._model, float):
            return np.full(log.pair_row.size, self._model)
        return self._model.predict_proba(self._design(log, pairs=True))[:, 1]


def make_model(kind: str, seed: int = 0) -> RewardModel:
    """A fresh reward model by name: ``action_mean`` or ``logistic``."""
    if kind == "action_mean":
        return ActionMeanModel()
    if kind == "logistic":
        return LogisticModel(seed=seed)
    raise ValueError(f"reward model must be action_mean or logistic, got {kind!r}")


def _cross_fit_action_mean(
    log: LoggedBandit, fold_of_row: np.ndarray, folds: int
) -> np.ndarray:
    """:class:`ActionMeanModel` cross-fitted with counts only (no copies)."""
    strength = ActionMeanModel().prior_strength
    k = log.n_actions
    cell = fold_of_row * k + log.actions
    shown = np.bincount(cell, minlength=folds * k).reshape(folds, k)
    clicks = np.bincount(cell, weights=log.rewards, minlength=folds * k)
    clicks = clicks.reshape(folds, k)
    # Each fold is predicted from the counts of all the other folds.
    shown_out = shown.sum(axis=0) - shown
    clicks_out = clicks.sum(axis=0) - clicks
    overall = clicks_out.sum(axis=1) / np.maximum(shown_out.sum(axis=1), 1)
    means = (clicks_out + strength * overall[:, None]) / (shown_out + strength)
    return means[fold_of_row[log.pair_row], log.pair_action]


def cross_fit(
    log: LoggedBandit, kind: str = "action_mean", folds: int = 2, seed: int = 0
) -> np.ndarray:
    """Out-of-fold reward predictions for every candidate pair of ``log``.

    Rows are dealt into ``folds`` random folds (seeded); ``folds=1`` fits and
    predicts on the whole log (in-sample).
    """
    if folds < 1:
        raise ValueError(f"folds must be at least 1, got {folds}")
    if folds == 1 or log.n < 2 * folds:
        return make_model(kind, seed).fit(log).predict(log)
    rng = np.random.default_rng(seed)
    fold_of_row = rng.permutation(np.arange(log.n) % folds)
    if kind == "action_mean":
        return _cross_fit_action_mean(log, fold_of_row, folds)
    out = np.empty(log.pair_row.size)
    for k in range(folds):
        held = fold_of_row == k
        model = make_model(kind, seed).fit(log.subset(~held))
        out[held[log.pair_row]] = model.predict(log.subset(held))
    return out
