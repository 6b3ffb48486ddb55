"""Logistic regression on standardised features (scikit-learn).

The linear baseline: it weighs each feature on its own and cannot learn that
children like saturated posters while adults do not, which is what the
factorization models add.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=(400, 3)).astype(np.float32)
>>> y = (x[:, 0] + rng.normal(size=400) > 0).astype(int)
>>> model = LogisticRegressionModel(seed=0).fit(x, y)
>>> bool(model.predict_proba(x[:1])[0] > 0)
True
"""

from __future__ import annotations

import numpy as np
import onnx
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from ranking.export import INPUT_NAME, ONNX_OPSET, probability_column
from ranking.models.base import ClickModel

__all__ = ["LogisticRegressionModel"]


class LogisticRegressionModel(ClickModel):
    kind = "lr"
    defaults = {"c": 1.0, "max_iter": 1000}
    test_params = {"c": 1.0, "max_iter": 300}

    def fit(self, x: np.ndarray, y: np.ndarray) -> LogisticRegressionModel:
        self._check_fit_input(x, y)
        self.pipeline: Pipeline = make_pipeline(
            StandardScaler(),
            LogisticRegression(
                C=self.params["c"],
                max_iter=self.params["max_iter"],
                random_state=self.seed,
            ),
        )
        self.pipeline.fit(x, y)
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        self._fitted_width()
        return self.pipeline.predict_proba(x)[:, 1]

    def to_onnx(self) -> onnx.ModelProto:
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType

        model = convert_sklearn(
            self.pipeline,
            initial_types=[(INPUT_NAME, FloatTensorType([None, self._fitted_width()]))],
            options={id(self.pipeline): {"zipmap": False}},
            target_opset={"": ONNX_OPSET, "ai.onnx.ml": 1},
        )
        return probability_column(model, "probabilities")
