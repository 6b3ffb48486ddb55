"""The training pipeline on a real logged-bandit sample (Open Bandit Dataset).

The sample has 10,000 impressions of a uniform-random logger over 80 fashion
items in three slot positions, with about 40 clicks: too few to rank models,
enough to check that real timestamps, real placements and real feature
distributions go through the dataset builder and ONNX export exactly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ranking.dataset import build_training_set
from ranking.train import ONNX_TOLERANCE, train_model


def _obd_logs(log_csv, items_csv) -> tuple[pd.DataFrame, pd.DataFrame]:
    raw = pd.read_csv(log_csv, index_col=0)
    items = pd.read_csv(items_csv, index_col=0).set_index("item_id")
    stamps = pd.to_datetime(raw["timestamp"], utc=True) - pd.Timestamp(0, tz="UTC")
    ids = np.array([f"obd-{i}" for i in range(len(raw))])
    affinity = raw.filter(like="user-item_affinity_").to_numpy()
    item = raw["item_id"].to_numpy()
    impressions = pd.DataFrame(
        {
            "event_id": ids,
            "event_time": (stamps // pd.Timedelta(milliseconds=1)).to_numpy(np.int64),
            "video_id": "obd",
            "poster_id": item.astype(str),
            "placement": ("position-" + raw["position"].astype(str)).to_numpy(),
            "context": [{} for _ in ids],
            "poster_features": [
                {
                    "item_feature_0": float(items.loc[i, "item_feature_0"]),
                    "affinity": float(affinity[row, i]),
                }
                for row, i in enumerate(item)
            ],
        }
    )
    hit = raw["click"].to_numpy() == 1
    clicks = pd.DataFrame(
        {
            "event_id": [f"click-{i}" for i in ids[hit]],
            "event_time": impressions["event_time"].to_numpy()[hit] + 2000,
            "impression_id": ids[hit],
        }
    )
    return impressions, clicks


def test_open_bandit_sample_trains_and_exports_exactly(media) -> None:
    impressions, clicks = _obd_logs(
        media("obd_random_all.csv"), media("obd_item_context.csv")
    )
    ts = build_training_set(impressions, clicks)
    assert ts.spec.placements == ("position-1", "position-2", "position-3")
    assert ts.train.y.sum() + ts.valid.y.sum() == len(clicks)
    assert ts.train.frame["event_time"].max() < ts.valid.frame["event_time"].min()
    # A uniform logger over 80 items: the first row of each item has no history.
    first = ts.train.frame.groupby("poster_id")["poster_impressions"].min()
    assert (first == 0).all() and len(first) == 80
    for kind in ("lr", "gbdt", "fm"):
        result = train_model(kind, ts, seed=0)
        assert result.onnx_max_error <= ONNX_TOLERANCE
        assert np.isfinite(result.evaluation.log_loss)
