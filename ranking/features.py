"""The feature layout a ranker was trained on, shared by training and serving.

A :class:`FeatureSpec` names every column of the matrix a click model sees, in
order: the user's context features, the poster's features, the behaviour
statistics of the poster and of its video known before the impression, and the
placement as one-hot columns. Training builds the matrix from a log with
:meth:`FeatureSpec.training_matrix`; the gateway builds the same columns for the
recalled candidates with :meth:`FeatureSpec.serving_matrix`. The spec travels
inside the ONNX file (``keyart.spec`` metadata), so a served model can never be
paired with the wrong layout.

Behaviour statistics are smoothed toward the training period's click rate:
``ctr = (clicks + prior_ctr * m) / (impressions + m)`` with ``m`` the prior
strength, so a new poster starts at the base rate, not at 0 or 0.5.

Examples
--------
>>> spec = FeatureSpec(("age",), ("brightness",), ("home",), prior_ctr=0.05)
>>> spec.names[:2]
('ctx.age', 'poster.brightness')
>>> spec.serving_matrix({"age": 0.5}, [{"features": {"brightness": 0.9}}]).shape
(1, 7)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["BEHAVIOUR_NAMES", "FeatureSpec"]

_EMPTY: Mapping[str, float] = {}
BEHAVIOUR_NAMES = (
    "beh.poster_log_impressions",
    "beh.poster_ctr",
    "beh.video_log_impressions",
    "beh.video_ctr",
)


def _number(value: object) -> float:
    """A count from a candidate mapping; anything else than a number raises."""
    if isinstance(value, int | float | np.number) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f"expected a number, got {value!r}")


@dataclass(frozen=True)
class FeatureSpec:
    """Ordered feature columns of a click model.

    Parameters
    ----------
    context_keys
        Names of the user context features (the impression's ``context`` map).
    poster_keys
        Names of the poster features (``poster_features`` / catalog ``features``).
    placements
        Placements seen in training; any other placement gets all-zero columns.
    prior_ctr
        Click rate of the training period, the value a poster without history
        is smoothed toward.
    prior_strength
        Pseudo-impressions of that prior in the smoothed click rates.
    """

    context_keys: tuple[str, ...]
    poster_keys: tuple[str, ...]
    placements: tuple[str, ...]
    prior_ctr: float
    prior_strength: float = 20.0

    def __post_init__(self) -> None:
        if not 0.0 < self.prior_ctr < 1.0:
            raise ValueError(f"prior_ctr must be in (0, 1), got {self.prior_ctr}")
        if self.prior_strength <= 0:
            raise ValueError(f"prior_strength must be > 0, got {self.prior_strength}")

    @property
    def names(self) -> tuple[str, ...]:
        """Column names, in matrix order."""
        return (
            *(f"ctx.{k}" for k in self.context_keys),
            *(f"poster.{k}" for k in self.poster_keys),
            *BEHAVIOUR_NAMES,
            *(f"placement={p}" for p in self.placements),
        )

    @property
    def n_features(self) -> int:
        return (
            len(self.context_keys)
            + len(self.poster_keys)
            + len(BEHAVIOUR_NAMES)
            + len(self.placements)
        )

    def smoothed_ctr(self, impressions: np.ndarray, clicks: np.ndarray) -> np.ndarray:
        """Click rate shrunk toward ``prior_ctr`` by ``prior_strength``."""
        m = self.prior_strength
        return (clicks + self.prior_ctr * m) / (impressions + m)

    def behaviour_columns(
        self,
        poster_impressions: np.ndarray,
        poster_clicks: np.ndarray,
        video_impressions: np.ndarray,
        video_clicks: np.ndarray,
    ) -> np.ndarray:
        """The four behaviour columns from raw counts, shape ``(n, 4)``."""
        return np.column_stack(
            [
                np.log1p(poster_impressions),
                self.smoothed_ctr(poster_impressions, poster_clicks),
                np.log1p(video_impressions),
                self.smoothed_ctr(video_impressions, video_clicks),
            ]
        )

    def training_matrix(
        self,
        context: Sequence[Mapping[str, float]],
        poster_features: Sequence[Mapping[str, float]],
        counts: np.ndarray,
        placements: Sequence[str],
    ) -> np.ndarray:
        """Matrix for logged impressions, float32 of shape ``(n, n_features)``.

        ``counts`` has four columns: poster impressions, poster clicks, video
        impressions and video clicks known before each impression.
        """
        n = len(context)
        x = np.zeros((n, self.n_features), dtype=np.float64)
        col = 0
        for keys, maps in (
            (self.context_keys, context),
            (self.poster_keys, poster_features),
        ):
            for j, key in enumerate(keys):
                x[:, col + j] = [float(m.get(key, 0.0)) for m in maps]
            col += len(keys)
        x[:, col : col + 4] = self.behaviour_columns(*counts.T)
        col += 4
        index = {p: i for i, p in enumerate(self.placements)}
        for row, placement in enumerate(placements):
            i = index.get(placement)
            if i is not None:
                x[row, col + i] = 1.0
        return x.astype(np.float32)

    def serving_counts(self, posters: Sequence[Mapping[str, object]]) -> np.ndarray:
        """Behaviour counts of the candidates, shape ``(n, 4)``.

        Columns: the arm's ``impressions`` and ``clicks``, then the video's
        ``video_impressions`` and ``video_clicks``; a video's counts that are
        not given are the sums over the candidates of the same ``video_id``.
        """
        n = len(posters)
        counts = np.zeros((n, 4), dtype=np.float64)
        if n == 0:
            return counts
        counts[:, :2] = [
            (_number(p.get("impressions", 0)), _number(p.get("clicks", 0)))
            for p in posters
        ]
        video_to_index: dict[object, int] = {}
        video_index = np.array(
            [video_to_index.setdefault(p.get("video_id"), len(video_to_index))
             for p in posters]
        )  # fmt: skip
        for j in (0, 1):
            totals = np.bincount(video_index, weights=counts[:, j])
            counts[:, 2 + j] = totals[video_index]
        for row, poster in enumerate(posters):
            if "video_impressions" in poster:
                counts[row, 2] = _number(poster["video_impressions"])
                counts[row, 3] = _number(poster.get("video_clicks", 0))
        return counts

    def serving_matrix(
        self,
        context: Mapping[str, float],
        posters: Sequence[Mapping[str, object]],
        placement: str = "",
        counts: np.ndarray | None = None,
    ) -> np.ndarray:
        """Matrix for one request's recalled candidates, float32.

        Each poster mapping may carry ``features`` (a map of poster features),
        and the counts :meth:`serving_counts` reads (``impressions``,
        ``clicks``, ``video_id``, ``video_impressions``, ``video_clicks``),
        unless ``counts`` gives them. Missing features are 0, as in training.
        """
        n = len(posters)
        x = np.zeros((n, self.n_features), dtype=np.float32)
        if n == 0:
            return x
        n_ctx = len(self.context_keys)
        end = n_ctx + len(self.poster_keys)
        if n_ctx:
            x[:, :n_ctx] = [context.get(k, 0.0) for k in self.context_keys]
        if end > n_ctx:
            maps: list[Mapping[str, float]] = []
            for row, poster in enumerate(posters):
                features = poster.get("features") or _EMPTY
                if not isinstance(features, Mapping):
                    raise TypeError(f"candidate {row}: 'features' must be a map")
                maps.append(features)
            x[:, n_ctx:end] = [[f.get(k, 0.0) for k in self.poster_keys] for f in maps]
        if counts is None:
            counts = self.serving_counts(posters)
        m = self.prior_strength
        prior = self.prior_ctr * m
        x[:, end] = np.log1p(counts[:, 0])
        x[:, end + 1] = (counts[:, 1] + prior) / (counts[:, 0] + m)
        x[:, end + 2] = np.log1p(counts[:, 2])
        x[:, end + 3] = (counts[:, 3] + prior) / (counts[:, 2] + m)
        if placement in self.placements:
            x[:, end + 4 + self.placements.index(placement)] = 1.0
        return x

    def to_json(self) -> str:
        return json.dumps(
            {
                "context_keys": list(self.context_keys),
                "poster_keys": list(self.poster_keys),
                "placements": list(self.placements),
                "prior_ctr": self.prior_ctr,
                "prior_strength": self.prior_strength,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> FeatureSpec:
        """Parse :meth:`to_json` output.

        Raises
        ------
        ValueError
            When the text is not a feature spec.
        """
        try:
            data = json.loads(text)
            return cls(
                context_keys=tuple(str(k) for k in data["context_keys"]),
                poster_keys=tuple(str(k) for k in data["poster_keys"]),
                placements=tuple(str(p) for p in data["placements"]),
                prior_ctr=float(data["prior_ctr"]),
                prior_strength=float(data["prior_strength"]),
            )
        except (KeyError, TypeError, json.JSONDecodeError) as error:
            raise ValueError(f"not a keyart feature spec: {error}") from None
