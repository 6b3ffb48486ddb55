"""The training set of the click models, built from the event logs and the catalog.

One row per logged impression: the user's context features, the poster's
features (the impression's own ``poster_features``, completed from the
catalog), the behaviour statistics of the poster and of its video known
*before* the impression, the placement, and the click label.

Steps:

1. Drop repeated impressions and clicks (same ``event_id``).
2. Label: an impression is clicked when a click names it and arrives within
   the attribution window (:func:`bandits.evaluation.logs.join_clicks`, the
   same join the offline evaluation uses).
3. Order rows by time and split: the last ``valid_fraction`` of impressions in
   time order is the validation period; rows sharing the cut-off time all go
   to validation, so no training row is later than a validation row.
4. Behaviour statistics: for a row at time t, the poster's impressions with
   time strictly before t and its credited clicks whose *click* time is
   strictly before t (what the streaming learner had published then), and the
   same for the video. A tie in time never counts, so nothing of the row's own
   moment or its future leaks in.
5. The feature matrix, through :class:`ranking.features.FeatureSpec`, whose
   smoothing prior is the training period's click rate.

Examples
--------
>>> from ranking.synthetic import simulate_logs
>>> logs = simulate_logs(n_impressions=2000, seed=3)
>>> ts = build_training_set(logs.impressions, logs.clicks, logs.catalog)
>>> ts.train.x.shape[1] == ts.spec.n_features, len(ts.valid.y) == 400
(True, True)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bandits.evaluation.logs import join_clicks
from ranking.features import FeatureSpec

__all__ = ["IMPRESSION_COLUMNS", "CLICK_COLUMNS", "Split", "TrainingSet"]
__all__ += ["build_training_set", "counts_before"]

IMPRESSION_COLUMNS = (
    "event_id",
    "event_time",
    "video_id",
    "poster_id",
    "placement",
    "context",
    "poster_features",
)
CLICK_COLUMNS = ("event_id", "event_time", "impression_id")
_META = ("event_id", "event_time", "user_id", "video_id", "poster_id", "placement")


@dataclass(frozen=True)
class Split:
    """One period of the training set: features, labels and row metadata.

    ``frame`` holds, per row, the ids, time, placement, the ``context`` and
    ``poster_features`` maps, and the raw behaviour counts the features were
    made from (``poster_impressions``, ``poster_clicks``, ``video_impressions``,
    ``video_clicks``).
    """

    x: np.ndarray
    y: np.ndarray
    frame: pd.DataFrame

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class TrainingSet:
    spec: FeatureSpec
    train: Split
    valid: Split


def _require(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} log lacks column(s) {missing}")


def counts_before(
    row_groups: np.ndarray,
    row_times: np.ndarray,
    event_groups: np.ndarray,
    event_times: np.ndarray,
) -> np.ndarray:
    """For each row, how many events of its group happened strictly before it.

    Groups are integer codes, times integers (ms). Runs in O((n + m) log m)
    with one sort, by packing (group, time) into one sortable integer.

    Examples
    --------
    >>> counts_before(np.array([0, 0, 1]), np.array([5, 9, 9]),
    ...               np.array([0, 0, 0, 1]), np.array([1, 5, 8, 9])).tolist()
    [1, 3, 0]
    """
    if len(event_times) == 0:
        return np.zeros(len(row_times), dtype=np.int64)
    t0 = min(int(np.min(row_times)), int(np.min(event_times)))
    span = max(int(np.max(row_times)), int(np.max(event_times))) - t0 + 1
    if span >= 1 << 42:
        raise ValueError("event times span more than 139 years")
    events = np.sort((event_groups.astype(np.int64) << 42) | (event_times - t0))
    rows = (row_groups.astype(np.int64) << 42) | (row_times - t0)
    starts = np.searchsorted(events, row_groups.astype(np.int64) << 42, side="left")
    return np.searchsorted(events, rows, side="left") - starts


def _poster_features(
    impressions: pd.DataFrame, catalog: pd.DataFrame | None
) -> list[Mapping[str, float]]:
    if catalog is None or catalog.empty:
        return list(impressions["poster_features"])
    _require(catalog, ("poster_id", "features"), "catalog")
    known = dict(zip(catalog["poster_id"], catalog["features"], strict=True))
    return [
        {**known.get(pid, {}), **(own or {})}
        for pid, own in zip(
            impressions["poster_id"], impressions["poster_features"], strict=True
        )
    ]


def build_training_set(
    impressions: pd.DataFrame,
    clicks: pd.DataFrame,
    catalog: pd.DataFrame | None = None,
    *,
    attribution_window_s: float = 1800.0,
    valid_fraction: float = 0.2,
    prior_strength: float = 20.0,
) -> TrainingSet:
    """Build the labelled, time-split feature matrices (see the module steps).

    Parameters
    ----------
    impressions, clicks
        DataFrames with the fields of the ``impression`` and ``click`` Avro
        records (at least :data:`IMPRESSION_COLUMNS` / :data:`CLICK_COLUMNS`).
    catalog
        Optional poster catalog with ``poster_id`` and ``features`` columns;
        it fills the poster features an impression did not carry.

    Raises
    ------
    ValueError
        When a column is missing, or a period would have no impressions.
    """
    _require(impressions, IMPRESSION_COLUMNS, "impression")
    _require(clicks, CLICK_COLUMNS, "click")
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in (0, 1), got {valid_fraction}")

    # Steps 1-3: deduplicate, label (the evaluation's own join), order, split.
    imps = join_clicks(
        impressions.drop(columns=["clicked", "click_time"], errors="ignore"),
        clicks,
        attribution_window_s,
    )
    imps["event_time"] = imps["event_time"].astype(np.int64)
    imps = imps.sort_values(["event_time", "event_id"], kind="stable")
    imps = imps.reset_index(drop=True)
    if "user_id" not in imps.columns:
        imps["user_id"] = ""
    label = imps["clicked"].to_numpy().astype(np.int8)
    click_time = imps["click_time"].to_numpy(dtype=np.float64)
    times = imps["event_time"].to_numpy()
    cut = times[int(len(times) * (1.0 - valid_fraction))] if len(times) else 0
    is_train = times < cut
    if not is_train.any() or is_train.all():
        raise ValueError(
            f"cannot split {len(times)} impressions into training and validation "
            "periods: the log needs impressions at more than one time"
        )

    # Step 4: behaviour counts known strictly before each row.
    poster_code = pd.factorize(imps["poster_id"])[0]
    video_code = pd.factorize(imps["video_id"])[0]
    clicked = label.astype(bool)
    counts = np.column_stack(
        [
            counts_before(poster_code, times, poster_code, times),
            counts_before(
                poster_code,
                times,
                poster_code[clicked],
                click_time[clicked].astype(np.int64),
            ),
            counts_before(video_code, times, video_code, times),
            counts_before(
                video_code,
                times,
                video_code[clicked],
                click_time[clicked].astype(np.int64),
            ),
        ]
    ).astype(np.float64)

    # Step 5: the spec, from the training period, and the matrix.
    context = list(imps["context"])
    posters = _poster_features(imps, catalog)
    train_idx = np.flatnonzero(is_train)
    spec = FeatureSpec(
        context_keys=tuple(sorted({k for i in train_idx for k in context[i]})),
        poster_keys=tuple(sorted({k for i in train_idx for k in posters[i]})),
        placements=tuple(sorted(set(imps["placement"].iloc[train_idx]))),
        prior_ctr=float(np.clip(label[is_train].mean(), 1e-4, 0.5)),
        prior_strength=prior_strength,
    )
    x = spec.training_matrix(context, posters, counts, list(imps["placement"]))
    frame = imps[[c for c in _META]].copy()
    frame["context"] = context
    frame["poster_features"] = posters
    for j, name in enumerate(
        ("poster_impressions", "poster_clicks", "video_impressions", "video_clicks")
    ):
        frame[name] = counts[:, j]
    valid_idx = np.flatnonzero(~is_train)
    return TrainingSet(
        spec=spec,
        train=Split(x[train_idx], label[train_idx], frame.iloc[train_idx]),
        valid=Split(
            x[valid_idx], label[valid_idx], frame.iloc[valid_idx].reset_index(drop=True)
        ),
    )
