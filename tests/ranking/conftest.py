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


TORCH_MISSING = (
    "PyTorch is not installed: the ranking tests check DeepFM too. Install the "
    "train extra (pip install -e '.[dev,train]', torch==2.13.0 CPU build) "
    "rather than skip them."
)


@pytest.fixture(scope="session")
def require_torch() -> None:
    """Fail, never skip, when DeepFM's PyTorch is absent."""
    try:
        import torch  # noqa: F401
    except ModuleNotFoundError:
        pytest.fail(TORCH_MISSING)


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
            except TorchMissingError:
                pytest.fail(TORCH_MISSING)
            model = cls(seed=0, **cls.test_params)
            cache[kind] = model.fit(training_set.train.x, training_set.train.y)
        return cache[kind]

    return get
