"""Gradient-boosted trees (LightGBM), exported with onnxmltools.

Trees learn the interactions and the non-linear shape of the behaviour
statistics without feature engineering. Features are float32 both in training
and in ONNX, so a split threshold means the same thing on both sides.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=(400, 3)).astype(np.float32)
>>> y = (x[:, 0] * x[:, 1] > 0).astype(int)
>>> model = GradientBoostedTreesModel(seed=0, n_estimators=20).fit(x, y)
>>> model.predict_proba(x[:2]).shape
(2,)
"""

from __future__ import annotations

import numpy as np
import onnx
from lightgbm import LGBMClassifier

from ranking.export import INPUT_NAME, ONNX_OPSET, probability_column
from ranking.models.base import ClickModel

__all__ = ["GradientBoostedTreesModel"]


class GradientBoostedTreesModel(ClickModel):
    kind = "gbdt"
    # Small, shallow trees: click labels are noisy and deeper ones overfit the
    # simulator's logs (held-out log loss 0.331 with 300 trees of 15 leaves).
    defaults = {
        "n_estimators": 200,
        "learning_rate": 0.03,
        "num_leaves": 7,
        "min_child_samples": 100,
        "subsample": 0.8,
        "colsample_bytree": 0.8,
        "reg_lambda": 1.0,
    }
    test_params = {"n_estimators": 80, "learning_rate": 0.1}

    def fit(self, x: np.ndarray, y: np.ndarray) -> GradientBoostedTreesModel:
        self._check_fit_input(x, y)
        self.booster = LGBMClassifier(
            **self.params,
            subsample_freq=1,
            random_state=self.seed,
            n_jobs=1,
            verbose=-1,
        )
        self.booster.fit(np.asarray(x, dtype=np.float32), y)
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        self._fitted_width()
        proba = self.booster.predict_proba(np.asarray(x, dtype=np.float32))
        return np.asarray(proba)[:, 1]

    def to_onnx(self) -> onnx.ModelProto:
        from onnxmltools import convert_lightgbm
        from onnxmltools.convert.common.data_types import FloatTensorType

        model = convert_lightgbm(
            self.booster,
            initial_types=[(INPUT_NAME, FloatTensorType([None, self._fitted_width()]))],
            zipmap=False,
            target_opset=ONNX_OPSET,
        )
        return probability_column(model, "probabilities")
