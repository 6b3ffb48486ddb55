"""Held-out scores: AUC, log loss, calibration and the online baselines."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from ranking.dataset import build_training_set
from ranking.evaluate import comparison_table, evaluate, reliability_table
from ranking.synthetic import simulate_logs
from ranking.train import evaluate_online

MODULES = [
    "ranking.dataset",
    "ranking.evaluate",
    "ranking.export",
    "ranking.features",
    "ranking.serving",
    "ranking.synthetic",
    "ranking.train",
    "ranking.models.fm",
    "ranking.models.gbdt",
    "ranking.models.lr",
    "ranking.models.deepfm",
]


def test_calibrated_predictions_have_small_ece_and_shifted_ones_large() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0.01, 0.3, 50_000)
    y = (rng.random(50_000) < p).astype(int)
    calibrated = evaluate("calibrated", y, p)
    doubled = evaluate("doubled", y, np.minimum(2 * p, 0.99))
    assert calibrated.ece < 0.005
    assert doubled.ece > 0.1
    assert calibrated.log_loss < doubled.log_loss
    assert abs(calibrated.auc - doubled.auc) < 1e-9  # a monotone map keeps AUC


def test_reliability_bins_hold_equal_counts_and_cover_every_row() -> None:
    p = np.linspace(0.0, 1.0, 1000)
    y = (p > 0.5).astype(int)
    table = reliability_table(y, p, bins=10)
    assert table["impressions"].tolist() == [100] * 10
    assert table["click_rate"].iloc[0] == 0.0 and table["click_rate"].iloc[-1] == 1.0


def test_held_out_period_without_clicks_is_refused() -> None:
    with pytest.raises(ValueError, match="clicks and misses"):
        evaluate("none", np.zeros(10), np.full(10, 0.1))


def test_online_models_are_scored_on_the_same_period() -> None:
    logs = simulate_logs(4000, seed=3)
    ts = build_training_set(logs.impressions, logs.clicks, logs.catalog)
    evaluations = {e.name: e for e in evaluate_online(ts)}
    assert set(evaluations) == {"online beta", "online fm"}
    for e in evaluations.values():
        assert e.impressions == len(ts.valid)
    # The arm mean knows each poster's history: better than chance.
    assert evaluations["online beta"].auc > 0.55
    table = comparison_table(list(evaluations.values()))
    assert table.row_count == 2


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str, request: pytest.FixtureRequest) -> None:
    import doctest

    if name.endswith("deepfm"):
        request.getfixturevalue("require_torch")
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
