"""The interface every offline click model implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
import onnx

__all__ = ["ClickModel"]


class ClickModel(ABC):
    """A click model trained on a feature matrix and exported to ONNX.

    Subclasses declare ``kind`` (the name ``keyart train`` knows them by),
    ``defaults`` (their training parameters) and ``test_params`` (small,
    fast parameters the shared behavioural tests train them with).
    Every model takes a ``seed`` and owns its random generator.
    """

    kind: ClassVar[str]
    defaults: ClassVar[dict[str, Any]] = {}
    test_params: ClassVar[dict[str, Any]] = {}

    def __init__(self, seed: int = 0, **params: Any) -> None:
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise ValueError(f"{self.kind}: unknown parameter(s) {sorted(unknown)}")
        self.seed = seed
        self.params: dict[str, Any] = {**self.defaults, **params}
        self.n_features: int | None = None

    @abstractmethod
    def fit(self, x: np.ndarray, y: np.ndarray) -> ClickModel:
        """Learn from float32 features ``x`` and 0/1 clicks ``y``."""

    @abstractmethod
    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Click probability per row, shape ``(n,)``."""

    @abstractmethod
    def to_onnx(self) -> onnx.ModelProto:
        """The trained model as an ONNX graph with the ranker contract."""

    def _check_fit_input(self, x: np.ndarray, y: np.ndarray) -> None:
        if x.ndim != 2 or len(x) != len(y):
            raise ValueError(f"{self.kind}: need x of shape (n, f) and n labels")
        if len(np.unique(y)) != 2:
            raise ValueError(f"{self.kind}: the labels need both clicks and misses")
        self.n_features = int(x.shape[1])

    def _fitted_width(self) -> int:
        if self.n_features is None:
            raise RuntimeError(f"{self.kind}: fit the model before using it")
        return self.n_features
