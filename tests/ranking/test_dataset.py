"""The training set: labels, time split and behaviour statistics without leakage."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ranking.dataset import build_training_set, counts_before
from ranking.synthetic import SyntheticLogs, simulate_logs


def _brute_counts(groups, times, event_groups, event_times) -> np.ndarray:
    return np.array(
        [
            int(np.sum((event_groups == g) & (event_times < t)))
            for g, t in zip(groups, times, strict=True)
        ]
    )


def test_counts_before_matches_a_direct_count() -> None:
    rng = np.random.default_rng(4)
    groups = rng.integers(0, 5, 300)
    times = rng.integers(0, 50, 300)  # many ties
    event_groups = rng.integers(0, 5, 200)
    event_times = rng.integers(0, 50, 200)
    expected = _brute_counts(groups, times, event_groups, event_times)
    got = counts_before(groups, times, event_groups, event_times)
    np.testing.assert_array_equal(got, expected)


def test_split_is_by_time_and_every_impression_is_used_once(
    logs: SyntheticLogs, training_set
) -> None:
    ts = training_set
    assert ts.train.frame["event_time"].max() < ts.valid.frame["event_time"].min()
    assert len(ts.train) + len(ts.valid) == len(logs.impressions)
    assert abs(len(ts.valid) / len(logs.impressions) - 0.2) < 0.01
    assert ts.train.y.sum() + ts.valid.y.sum() == len(logs.clicks)


def test_behaviour_features_count_only_the_past(logs: SyntheticLogs, training_set):
    frame = pd.concat([training_set.train.frame, training_set.valid.frame])
    imps = logs.impressions.set_index("event_id").loc[frame["event_id"]]
    clicks = logs.clicks
    rows = np.random.default_rng(0).choice(len(frame), 200, replace=False)
    for i in rows:
        row = frame.iloc[i]
        earlier = imps[
            (imps["poster_id"] == row["poster_id"])
            & (imps["event_time"] < row["event_time"])
        ]
        assert row["poster_impressions"] == len(earlier)
        clicked_before = clicks[
            (clicks["poster_id"] == row["poster_id"])
            & (clicks["event_time"] < row["event_time"])
        ]
        assert row["poster_clicks"] == len(clicked_before)


def test_future_clicks_do_not_change_past_features() -> None:
    logs = simulate_logs(3000, seed=5)
    ts = build_training_set(logs.impressions, logs.clicks, logs.catalog)
    later = logs.clicks["event_time"] > logs.impressions["event_time"].quantile(0.5)
    fewer = build_training_set(
        logs.impressions, logs.clicks[~later.to_numpy()], logs.catalog
    )
    cut = logs.clicks.loc[later, "event_time"].min()
    early = ts.train.frame["event_time"].to_numpy() < cut
    # Same prior, so the first half of the rows must be identical.
    assert fewer.spec.context_keys == ts.spec.context_keys
    if fewer.spec.prior_ctr == ts.spec.prior_ctr:
        np.testing.assert_array_equal(fewer.train.x[early], ts.train.x[early])
    np.testing.assert_array_equal(
        fewer.train.frame[["poster_impressions", "poster_clicks"]].to_numpy()[early],
        ts.train.frame[["poster_impressions", "poster_clicks"]].to_numpy()[early],
    )


def test_duplicates_count_once_and_late_clicks_are_not_credited() -> None:
    logs = simulate_logs(2000, seed=6)
    doubled = pd.concat([logs.impressions, logs.impressions.iloc[:300]])
    clicks = pd.concat([logs.clicks, logs.clicks.iloc[:10]])
    base = build_training_set(logs.impressions, logs.clicks, logs.catalog)
    dup = build_training_set(doubled, clicks, logs.catalog)
    assert len(dup.train) + len(dup.valid) == 2000
    assert dup.train.y.sum() == base.train.y.sum()

    late = logs.clicks.copy()
    late["event_time"] = late["event_time"] + 3_600_000
    none = build_training_set(logs.impressions, late, attribution_window_s=1800)
    assert none.train.y.sum() == 0 and none.valid.y.sum() == 0


def test_catalog_fills_features_the_impressions_lack() -> None:
    bare = simulate_logs(2000, seed=8, log_poster_features=False)
    full = simulate_logs(2000, seed=8)
    from_catalog = build_training_set(bare.impressions, bare.clicks, bare.catalog)
    logged = build_training_set(full.impressions, full.clicks, full.catalog)
    np.testing.assert_array_equal(from_catalog.train.x, logged.train.x)
    without = build_training_set(bare.impressions, bare.clicks)
    assert without.spec.poster_keys == ()


def test_training_rows_equal_serving_rows(training_set) -> None:
    """The gateway's matrix for a logged impression is the one trained on."""
    ts = training_set
    frame = ts.valid.frame
    for i in range(0, len(frame), 397):
        row = frame.iloc[i]
        poster = {
            "features": row["poster_features"],
            "impressions": row["poster_impressions"],
            "clicks": row["poster_clicks"],
            "video_impressions": row["video_impressions"],
            "video_clicks": row["video_clicks"],
        }
        served = ts.spec.serving_matrix(row["context"], [poster], row["placement"])
        np.testing.assert_allclose(served[0], ts.valid.x[i], rtol=1e-6)
