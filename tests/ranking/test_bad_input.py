"""Logs and candidates keyart cannot use give errors that say what is wrong."""

from __future__ import annotations

import pandas as pd
import pytest

from ranking.dataset import build_training_set
from ranking.features import FeatureSpec
from ranking.synthetic import simulate_logs


def test_missing_columns_are_named() -> None:
    logs = simulate_logs(500, seed=1)
    with pytest.raises(
        ValueError, match=r"impression log lacks column\(s\) \['context'\]"
    ):
        build_training_set(logs.impressions.drop(columns=["context"]), logs.clicks)
    with pytest.raises(ValueError, match="click log lacks"):
        build_training_set(
            logs.impressions, logs.clicks.drop(columns=["impression_id"])
        )


def test_a_log_at_one_instant_cannot_be_split() -> None:
    logs = simulate_logs(500, seed=1)
    same = logs.impressions.assign(event_time=1_700_000_000_000)
    with pytest.raises(ValueError, match="more than one time"):
        build_training_set(same, logs.clicks)


def test_bad_valid_fraction_and_spec() -> None:
    logs = simulate_logs(500, seed=1)
    with pytest.raises(ValueError, match="valid_fraction"):
        build_training_set(logs.impressions, logs.clicks, valid_fraction=1.0)
    with pytest.raises(ValueError, match="prior_ctr"):
        FeatureSpec((), (), (), prior_ctr=0.0)
    with pytest.raises(ValueError, match="not a keyart feature spec"):
        FeatureSpec.from_json('{"context_keys": []}')


def test_non_numeric_candidate_features_raise() -> None:
    spec = FeatureSpec(("age",), ("dark",), (), prior_ctr=0.1)
    with pytest.raises(ValueError):
        spec.serving_matrix({"age": "old"}, [{}])
    with pytest.raises(TypeError, match="'features' must be a map"):
        spec.serving_matrix({}, [{"features": [1.0]}])


def test_empty_clicks_give_an_unscorable_held_out_period() -> None:
    logs = simulate_logs(500, seed=1)
    empty = pd.DataFrame(columns=["event_id", "event_time", "impression_id"])
    ts = build_training_set(logs.impressions, empty)
    assert ts.train.y.sum() == 0
    from ranking.models import model_class

    with pytest.raises(ValueError, match="both clicks and misses"):
        model_class("lr")(seed=0).fit(ts.train.x, ts.train.y)
