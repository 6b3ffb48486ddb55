"""Factorization-machine click model: river learns it, numpy serves it.

The learner trains :class:`OnlineFM` (a thin wrapper of
``river.facto.FMClassifier``) on ``(features, clicked)`` pairs and publishes
:meth:`OnlineFM.export`, a JSON-able snapshot. The gateway scores candidates
with :class:`FMScorer`, which evaluates the same model equation with numpy and
never imports river on the serving path.

Both sides build their feature dicts with :func:`fm_features`, so the names a
model was trained on are the names it is asked about.

A feature never seen in training contributes nothing at scoring time. River's
own ``predict_proba_one`` would instead draw a random latent vector for it (and
keep it), so :meth:`OnlineFM.predict_proba_one` drops unseen features the way
the scorer does.

Examples
--------
>>> fm = OnlineFM(n_factors=4, seed=1, learning_rate=0.05)
>>> x = fm_features({"age": 0.5}, {"dark": 1.0}, poster_id="p1")
>>> for _ in range(50):
...     fm.learn_one(x, True)
>>> scorer = FMScorer.from_export(fm.export())
>>> p = float(scorer.predict_proba([x])[0])
>>> bool(abs(p - fm.predict_proba_one(x)) < 1e-6), p > 0.5
(True, True)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bandits.features import _normalise_finite

__all__ = [
    "FM_LABELS",
    "FMScorer",
    "OnlineFM",
    "ShardedFMScorer",
    "fm_features",
    "scorer_from_export",
]

MAX_FACTORS = 256
"""Most latent factors an export may declare (the learner uses 8)."""

FM_LABELS = ("plain", "fake_negative")
"""How an exported FM was labelled: one label per impression, or a negative
per impression plus a positive per click (see :class:`FMScorer`)."""


def _check_features(x: Mapping[str, float]) -> dict[str, float]:
    out = {}
    for name, value in x.items():
        if not isinstance(name, str):
            raise ValueError(f"FM feature names must be str, got {name!r}")
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            raise ValueError(f"FM feature {name!r} must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"FM feature {name!r} is not finite: {value!r}")
        out[name] = value
    return out


def fm_features(
    context: Mapping[str, float],
    poster: Mapping[str, float],
    poster_id: str | None = None,
) -> dict[str, float]:
    """The feature dict of one (user, poster) pair, shared by learner and gateway.

    User features are prefixed ``"u:"``, poster features ``"p:"``, and the
    poster id becomes the one-hot feature ``"poster=<id>"``, which lets the
    model learn each poster's own appeal and its interactions with users.
    Features equal to zero are left out.
    Values are normalised with :func:`bandits.features.normalise_value`, the
    transform LinUCB's crossed features use, so natural units (sharpness in
    the hundreds, colour channels to 255) cannot blow up the SGD steps.

    Parameters
    ----------
    context
        The user's numeric features.
    poster
        The poster's numeric features.
    poster_id
        The poster (arm) id; when omitted, ``poster["id"]`` is used if it is a
        string, else no one-hot feature is added.

    Examples
    --------
    >>> fm_features({"age": 0.5, "student": 0.0}, {"dark": 1.0}, poster_id="p7")
    {'u:age': 0.5, 'p:dark': 1.0, 'poster=p7': 1.0}
    >>> fm_features({}, {"sharpness": 1000.0, "dominant_0_r": 255.0})
    {'p:sharpness': 1.0, 'p:dominant_0_r': 1.0}
    """
    poster = dict(poster)
    own_id = poster.pop("id", None)
    if poster_id is None and isinstance(own_id, str):
        poster_id = own_id
    user = _check_features(context)
    looks = _check_features(poster)
    # A zero feature adds nothing to the model equation or to any gradient
    # (the FM has no L2 penalty), but river's FM still visits every pair of
    # features: leaving zeros out makes learning and scoring cheaper and
    # changes no prediction.
    x = {f"u:{k}": _normalise_finite(k, v, False) for k, v in user.items() if v}
    x.update({f"p:{k}": _normalise_finite(k, v, True) for k, v in looks.items() if v})
    if poster_id is not None:
        x[f"poster={poster_id}"] = 1.0
    return x


class OnlineFM:
    """Online factorization machine for click probability (river underneath).

    Parameters
    ----------
    n_factors
        Length of each feature's latent vector.
    seed
        Seed of the latent vectors' initialisation.
    learning_rate
        SGD step of the weights, the latent vectors and the intercept.
    l2
        L2 penalty on weights and latent vectors.

    Attributes
    ----------
    version
        Incremented once per :meth:`learn_one` / :meth:`learn_many` call.

    Examples
    --------
    >>> fm = OnlineFM(n_factors=2, seed=0)
    >>> fm.learn_one({"u:age": 1.0, "poster=a": 1.0}, False)
    >>> fm.version, round(fm.predict_proba_one({"poster=a": 1.0}), 3) < 0.5
    (1, True)
    """

    def __init__(
        self,
        n_factors: int = 8,
        seed: int = 0,
        learning_rate: float = 0.01,
        l2: float = 0.0,
    ) -> None:
        from river import facto, optim

        if n_factors < 1:
            raise ValueError(f"FM n_factors must be at least 1, got {n_factors}")
        if not learning_rate > 0:
            raise ValueError(f"FM learning_rate must be > 0, got {learning_rate}")
        self.n_factors = n_factors
        self.seed = seed
        self.learning_rate = learning_rate
        self.model = facto.FMClassifier(
            n_factors=n_factors,
            weight_optimizer=optim.SGD(learning_rate),
            latent_optimizer=optim.SGD(learning_rate),
            intercept_lr=learning_rate,
            l2_weight=l2,
            l2_latent=l2,
            seed=seed,
        )
        self.version = 0

    def learn_one(self, x: Mapping[str, float], y: bool) -> None:
        """Learn from one impression: its features and whether it was clicked."""
        self.model.learn_one(_check_features(x), bool(y))
        self.version += 1

    def learn_many(self, xs: Sequence[Mapping[str, float]], ys: Sequence[bool]) -> None:
        """Learn from a batch in order; ``version`` grows by one."""
        if len(xs) != len(ys):
            raise ValueError(f"FM got {len(xs)} feature dicts but {len(ys)} labels")
        checked = [_check_features(x) for x in xs]
        for x, y in zip(checked, ys, strict=True):
            self.model.learn_one(x, bool(y))
        self.version += 1

    def predict_proba_one(self, x: Mapping[str, float]) -> float:
        """Click probability; features never seen in training are ignored."""
        known = self.model.latents
        x = {k: v for k, v in _check_features(x).items() if k in known}
        return float(self.model.predict_proba_one(x)[True])

    def export(self) -> dict[str, Any]:
        """JSON-able snapshot for :meth:`FMScorer.from_export`.

        Examples
        --------
        >>> sorted(OnlineFM(n_factors=2).export())
        ['intercept', 'latents', 'n_factors', 'version', 'weights']
        """
        return {
            "intercept": float(self.model.intercept),
            "weights": {k: float(w) for k, w in self.model.weights.items()},
            "latents": {
                k: [float(v) for v in vec] for k, vec in self.model.latents.items()
            },
            "n_factors": self.n_factors,
            "version": self.version,
        }


class FMScorer:
    """Numpy-only factorization-machine scorer built from an export.

    The model equation is ``w0 + sum_i w_i x_i + sum_{i<j} <v_i, v_j> x_i x_j``,
    evaluated with the usual ``O(n k)`` identity
    ``0.5 * sum_f ((sum_i v_if x_i)^2 - sum_i v_if^2 x_i^2)``.

    An export whose ``labels`` is ``"fake_negative"`` was trained the way the
    learner trains it: every impression is a negative at once, and a credited
    click adds a positive of the same features. Such a model estimates
    ``q = p / (1 + p)`` for click probability ``p``; its logit is ``log p``,
    so :meth:`predict_proba` returns ``exp(logit)`` (at most 1).

    Examples
    --------
    >>> export = {"intercept": 0.0, "weights": {"a": 1.0},
    ...           "latents": {"a": [1.0], "b": [2.0]}, "n_factors": 1, "version": 3}
    >>> scorer = FMScorer.from_export(export)
    >>> p = scorer.predict_proba([{"a": 1.0, "b": 1.0}])  # logit 1 + 2 = 3
    >>> round(float(p[0]), 4), scorer.version
    (0.9526, 3)
    >>> export.update(intercept=-6.0, labels="fake_negative")
    >>> round(float(FMScorer.from_export(export).predict_proba([{"a": 1.0}])[0]), 4)
    0.0067
    """

    def __init__(
        self,
        intercept: float,
        names: Sequence[str],
        weights: np.ndarray,
        latents: np.ndarray,
        version: int = 0,
        labels: str = "plain",
    ) -> None:
        if labels not in FM_LABELS:
            raise ValueError(f"FM labels must be one of {FM_LABELS}, got {labels!r}")
        self.intercept = float(intercept)
        self.name_to_index = {name: i for i, name in enumerate(names)}
        self.weights = np.asarray(weights, dtype=np.float64)
        self.latents = np.asarray(latents, dtype=np.float64)
        self.version = version
        self.labels = labels

    @classmethod
    def from_export(cls, d: Mapping[str, Any]) -> FMScorer:
        """Build a scorer from :meth:`OnlineFM.export` (or its JSON round trip)."""
        try:
            n_factors = d["n_factors"]
            weights_in = d["weights"]
            latents_in = d["latents"]
            intercept = float(d["intercept"])
            version = int(d.get("version", 0))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not an FM export: {exc!r}") from exc
        if isinstance(n_factors, bool) or not isinstance(n_factors, int):
            raise ValueError(f"FM export n_factors must be an integer: {n_factors!r}")
        if not 1 <= n_factors <= MAX_FACTORS:
            raise ValueError(
                f"FM export n_factors must be in [1, {MAX_FACTORS}], got {n_factors}"
            )
        if not isinstance(weights_in, Mapping) or not isinstance(latents_in, Mapping):
            raise ValueError("FM export weights and latents must be objects by name")
        names = sorted(set(weights_in) | set(latents_in))
        if not all(isinstance(n, str) for n in names):
            raise ValueError("FM export feature names must be strings")
        try:
            weights = np.array(
                [float(weights_in.get(n, 0.0)) for n in names], dtype=np.float64
            )
            latents = np.zeros((len(names), n_factors))
            for i, name in enumerate(names):
                if name in latents_in:
                    vec = np.asarray(latents_in[name], dtype=np.float64)
                    if vec.shape != (n_factors,):
                        raise ValueError(
                            f"FM export latent of {name!r} has shape {vec.shape}, "
                            f"expected ({n_factors},)"
                        )
                    latents[i] = vec
        except TypeError as exc:
            raise ValueError(
                f"FM export holds a value that is not a number: {exc}"
            ) from exc
        if not (
            math.isfinite(intercept)
            and np.isfinite(weights).all()
            and np.isfinite(latents).all()
        ):
            raise ValueError("FM export holds NaN or infinite values")
        labels = str(d.get("labels", "plain"))
        return cls(intercept, names, weights, latents, version, labels)

    def logits(self, xs: Sequence[Mapping[str, float]]) -> np.ndarray:
        """Raw model output for each feature dict (unknown features ignored)."""
        rows, cols, vals = [], [], []
        for r, x in enumerate(xs):
            for name, value in _check_features(x).items():
                j = self.name_to_index.get(name)
                if j is not None:
                    rows.append(r)
                    cols.append(j)
                    vals.append(value)
        n = len(xs)
        r_ = np.asarray(rows, dtype=np.intp)
        used, local = np.unique(np.asarray(cols, dtype=np.intp), return_inverse=True)
        # Feature names are unique within a dict, so each cell is set once.
        dense = np.zeros((n, used.size))
        dense[r_, local] = vals
        latents = self.latents[used]
        summed = dense @ latents
        squares = (dense * dense) @ (latents * latents)
        pairwise = 0.5 * (summed * summed - squares).sum(axis=1)
        return self.intercept + dense @ self.weights[used] + pairwise

    def predict_proba(self, xs: Sequence[Mapping[str, float]]) -> np.ndarray:
        """Click probability for each feature dict, shape ``(len(xs),)``."""
        z = self.logits(xs)
        if self.labels == "fake_negative":
            return np.exp(np.minimum(z, 0.0))
        return 0.5 * (1.0 + np.tanh(0.5 * z))


class ShardedFMScorer:
    """Several FMs learnt apart, each scoring the posters it learnt from.

    The learner keeps one FM per partition of the event topics, and events are
    keyed by video, so each shard learns the videos of its partition. The
    shards' latent vectors drift apart as they learn, and an average of them
    no longer means what either one learnt: a user's vector from one shard
    paired with a poster's vector from another gives no interaction worth
    having. So each candidate is scored by the shard that knows its
    ``poster=<id>`` feature (the one with the most examples, should two know
    it). A poster no shard knows yet is scored by the shard of another
    candidate in the same call (the video's other posters), else by the
    shard with the most examples.

    A user's taste learnt on one partition's videos does not reach the videos
    of the other partitions; that is the price of the learner's exactness
    per partition.

    Parameters
    ----------
    scorers
        One :class:`FMScorer` per shard that has learnt something.
    examples
        Examples each shard learnt from (same order).
    version
        The model's version (total examples).

    Examples
    --------
    >>> one = {"intercept": 0.0, "weights": {"poster=a": 2.0}, "latents": {},
    ...        "n_factors": 1, "version": 5}
    >>> two = {"intercept": 0.0, "weights": {"poster=b": -2.0}, "latents": {},
    ...        "n_factors": 1, "version": 9}
    >>> scorer = scorer_from_export({"shards": [one, two], "version": 14})
    >>> scorer.logits([{"poster=a": 1.0}, {"poster=b": 1.0}]).tolist()
    [2.0, -2.0]
    """

    def __init__(
        self, scorers: Sequence[FMScorer], examples: Sequence[int], version: int = 0
    ) -> None:
        if not scorers or len(scorers) != len(examples):
            raise ValueError("a sharded FM needs one example count per shard")
        self.scorers = list(scorers)
        self.version = version
        self.busiest = int(np.argmax(examples))
        owner: dict[str, tuple[int, int]] = {}
        for i, (scorer, n) in enumerate(zip(scorers, examples, strict=True)):
            for name in scorer.name_to_index:
                if name.startswith("poster=") and n > owner.get(name, (-1, -1))[1]:
                    owner[name] = (i, n)
        self.poster_shard = {name: i for name, (i, _) in owner.items()}

    def _shard_of(self, x: Mapping[str, float]) -> int | None:
        # fm_features puts the poster's id last: look there first.
        for name in reversed(x) if isinstance(x, dict) else x:
            if name.startswith("poster="):
                return self.poster_shard.get(name)
        return None

    def _by_shard(self, xs: Sequence[Mapping[str, float]], method: str) -> np.ndarray:
        shards = [self._shard_of(x) for x in xs]
        known = [s for s in shards if s is not None]
        fallback = known[0] if known else self.busiest
        groups: dict[int, list[int]] = {}
        for row, shard in enumerate(shards):
            groups.setdefault(fallback if shard is None else shard, []).append(row)
        out = np.empty(len(xs))
        for shard, rows in groups.items():
            out[rows] = getattr(self.scorers[shard], method)([xs[r] for r in rows])
        return out

    def logits(self, xs: Sequence[Mapping[str, float]]) -> np.ndarray:
        """Raw output of each feature dict, from its shard."""
        return self._by_shard(xs, "logits")

    def predict_proba(self, xs: Sequence[Mapping[str, float]]) -> np.ndarray:
        """Click probability of each feature dict, from its shard."""
        return self._by_shard(xs, "predict_proba")


def scorer_from_export(d: Mapping[str, Any]) -> FMScorer | ShardedFMScorer:
    """The scorer of a published FM: one model, or shards (``"shards"``).

    Raises
    ------
    ValueError
        When ``d`` is neither layout.
    """
    if not isinstance(d, Mapping):
        raise ValueError(f"an FM export is an object, got {type(d).__name__}")
    shards = d.get("shards")
    if shards is None:
        return FMScorer.from_export(d)
    if not isinstance(shards, list) or not shards:
        raise ValueError("a sharded FM export needs a non-empty list of shards")
    if not all(isinstance(s, Mapping) for s in shards):
        raise ValueError("each shard of an FM export is an object")
    scorers = [FMScorer.from_export(s) for s in shards]
    try:
        examples = [int(s.get("examples", s.get("version", 0))) for s in shards]
        version = int(d.get("version", sum(examples)))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"FM export example counts must be integers: {exc}") from exc
    if any(n < 0 for n in examples):
        raise ValueError(f"FM export example counts must be >= 0, got {examples}")
    return ShardedFMScorer(scorers, examples, version)
