"""Fixtures of the ranking tests: one seeded synthetic log, each model fitted once."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ranking.dataset import TrainingSet, build_training_set
from ranking.models import ClickModel, TorchMissingError, model_class
from ranking.synthetic import SyntheticLogs, simulate_logs


@pytest.fixture(scope="session")
def logs() -> SyntheticLogs:
    return simulate_logs(20_000, n_videos=20, seed=11)


@pytest.fixture(scope="session")
def training_set(logs: SyntheticLogs) -> TrainingSet:
    return build_training_set(logs.impressions, logs.clicks, logs.catalog)


@pytest.fixture(scope="session")
def fitted(training_set: TrainingSet) -> Callable[[str], ClickModel]:
    """``fitted(kind)``: that model trained once with its declared test parameters.

    DeepFM without PyTorch fails with instructions; it never skips.
    """
    cache: dict[str, ClickModel] = {}

    def get(kind: str) -> ClickModel:
        if kind not in cache:
            try:
                cls = model_class(kind)
            except TorchMissingError as error:
                pytest.fail(
                    f"{error}. The ranking tests check every model: install the "
                    "train extra (pip install -e '.[train]') rather than skip DeepFM."
                )
            model = cls(seed=0, **cls.test_params)
            cache[kind] = model.fit(training_set.train.x, training_set.train.y)
        return cache[kind]

    return get
