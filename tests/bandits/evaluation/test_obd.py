"""The Open Bandit Dataset sample: estimates of the logging policy equal its CTR.

The random logger of the sample showed each of 80 items with propensity
1/80, so every estimator evaluating that very policy must agree with the
click-through rate it observed, within its interval.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bandits.evaluation.feedback import LoggedBandit, impressions_to_bandit
from bandits.evaluation.logs import load_obd
from bandits.evaluation.ope import ESTIMATORS, evaluate, observed_value
from bandits.evaluation.reports import slice_table
from bandits.evaluation.targets import GreedyPolicy, LoggingPolicy, UniformPolicy

ITEMS = [str(i) for i in range(80)]


@pytest.fixture(scope="module")
def random_log(media: Callable[[str], Path]) -> pd.DataFrame:
    return load_obd(media("obd_random_all.csv"), "random")


def test_obd_loads_in_the_impression_shape(random_log: pd.DataFrame) -> None:
    assert len(random_log) == 10_000
    assert random_log["clicked"].sum() == 38
    assert np.allclose(random_log["propensity"], 1 / 80)
    assert set(random_log["placement"]) == {"position-1", "position-2", "position-3"}
    assert random_log["event_time"].is_monotonic_increasing
    table = slice_table(random_log, ["placement"])
    assert table["impressions"].sum() == 10_000 and table["clicks"].sum() == 38


def test_every_estimator_of_the_logging_policy_covers_its_ctr(
    random_log: pd.DataFrame,
) -> None:
    log = impressions_to_bandit(random_log, candidates=ITEMS, name="random")
    seen = observed_value(log).estimate
    assert seen == pytest.approx(0.0038)
    table = evaluate(
        log, [LoggingPolicy(), UniformPolicy()], ESTIMATORS, bootstrap=200, seed=1
    )
    for row in table.itertuples():
        assert row.low <= seen <= row.high or row.estimator == "dm", row
        if row.estimator in ("ips", "snips"):
            assert row.estimate == pytest.approx(seen, abs=1e-12)
            assert row.boot_low <= seen <= row.boot_high
        if row.estimator == "dr":
            assert row.estimate == pytest.approx(seen, abs=0.0005)
    # The uniform target is the random logger itself on this sample.
    assert np.allclose(table.iloc[:5]["estimate"], table.iloc[5:]["estimate"])


def test_bts_logging_policy_and_a_fitted_greedy(media: Callable[[str], Path]) -> None:
    bts = load_obd(media("obd_bts_all.csv"), "bts")
    log: LoggedBandit = impressions_to_bandit(bts, candidates=ITEMS, name="bts")
    seen = observed_value(log).estimate
    table = evaluate(log, [LoggingPolicy()], ["ips", "snips", "dr"])
    assert np.allclose(table["estimate"].iloc[:2], seen)
    assert (table["low"] <= seen).all() and (seen <= table["high"]).all()
    first = log.subset(np.arange(log.n) < log.n // 2)
    second = log.subset(np.arange(log.n) >= log.n // 2)
    greedy = evaluate(second, [GreedyPolicy.fit(first)], ["ips", "dr"])
    # A deterministic policy spreads the 5,000 decisions over few matches.
    assert (greedy["ess"] < 100).all()
    assert (greedy["high"] > greedy["low"]).all()
