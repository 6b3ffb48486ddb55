"""A factorization machine in numpy, trained with Adam on the log loss.

Each feature i has a weight w_i and a factor vector v_i; the logit is
``w0 + sum_i w_i x_i + sum_{i<j} <v_i, v_j> x_i x_j``, with the pair sum taken
in O(n k) as ``0.5 * sum_f ((x V)_f^2 - (x^2)(V^2)_f)``. That captures the user
x poster interactions logistic regression cannot, with few parameters. Inputs
are standardised with the training means and deviations, which the ONNX graph
carries. The graph is written by hand with ``onnx.helper``: it is six
operators, and serving it needs no training library.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=(2000, 3)).astype(np.float32)
>>> y = (rng.random(2000) < 1 / (1 + np.exp(-2 * x[:, 0] * x[:, 1]))).astype(int)
>>> model = FactorizationMachineModel(seed=0, epochs=5).fit(x, y)
>>> p = model.predict_proba(np.array([[1, 1, 0], [1, -1, 0]], dtype=np.float32))
>>> bool(p[0] > p[1])
True
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ranking.export import INPUT_NAME, ONNX_OPSET, OUTPUT_NAME
from ranking.models.base import ClickModel

__all__ = ["FactorizationMachineModel"]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


class FactorizationMachineModel(ClickModel):
    kind = "fm"
    defaults = {
        "factors": 4,
        "epochs": 10,
        "batch_size": 256,
        "learning_rate": 0.01,
        "l2": 1e-4,
    }
    test_params = {"epochs": 6}

    def fit(self, x: np.ndarray, y: np.ndarray) -> FactorizationMachineModel:
        self._check_fit_input(x, y)
        rng = np.random.default_rng(self.seed)
        p = self.params
        x64 = np.asarray(x, dtype=np.float64)
        self.mean = x64.mean(axis=0)
        self.scale = 1.0 / np.where(x64.std(axis=0) > 1e-12, x64.std(axis=0), 1.0)
        xs = (x64 - self.mean) * self.scale
        yf = np.asarray(y, dtype=np.float64)
        n, f = xs.shape
        rate = float(np.clip(yf.mean(), 1e-4, 1 - 1e-4))
        params = [
            np.array([np.log(rate / (1 - rate))]),
            np.zeros(f),
            rng.normal(0.0, 0.01, (f, p["factors"])),
        ]
        moments = [(np.zeros_like(q), np.zeros_like(q)) for q in params]
        step = 0
        for _ in range(p["epochs"]):
            order = rng.permutation(n)
            for start in range(0, n, p["batch_size"]):
                batch = order[start : start + p["batch_size"]]
                grads = self._gradients(params, xs[batch], yf[batch])
                step += 1
                for q, g, (m, v) in zip(params, grads, moments, strict=True):
                    m *= 0.9
                    m += 0.1 * g
                    v *= 0.999
                    v += 0.001 * g * g
                    m_hat = m / (1 - 0.9**step)
                    v_hat = v / (1 - 0.999**step)
                    q -= p["learning_rate"] * m_hat / (np.sqrt(v_hat) + 1e-8)
        self.w0, self.w, self.v = float(params[0][0]), params[1], params[2]
        return self

    def _gradients(
        self, params: list[np.ndarray], xs: np.ndarray, y: np.ndarray
    ) -> list[np.ndarray]:
        w0, w, v = params
        xv = xs @ v
        x2 = xs * xs
        logit = w0[0] + xs @ w + 0.5 * np.sum(xv * xv - x2 @ (v * v), axis=1)
        g = (_sigmoid(logit) - y) / len(y)
        l2 = self.params["l2"]
        return [
            np.array([g.sum()]),
            xs.T @ g + l2 * w,
            xs.T @ (g[:, None] * xv) - v * (x2.T @ g)[:, None] + l2 * v,
        ]

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        self._fitted_width()
        xs = (np.asarray(x, dtype=np.float64) - self.mean) * self.scale
        xv = xs @ self.v
        pairs = 0.5 * np.sum(xv * xv - (xs * xs) @ (self.v * self.v), axis=1)
        return _sigmoid(self.w0 + xs @ self.w + pairs)

    def to_onnx(self) -> onnx.ModelProto:
        f = self._fitted_width()

        def const(name: str, value: np.ndarray) -> onnx.TensorProto:
            return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)

        initializers = [
            const("mean", self.mean[None, :]),
            const("scale", self.scale[None, :]),
            const("w", self.w[:, None]),
            const("v", self.v),
            const("v2", self.v * self.v),
            const("w0", np.array([self.w0])),
            const("half", np.array([0.5])),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        ]
        node = helper.make_node
        nodes = [
            node("Sub", [INPUT_NAME, "mean"], ["centred"]),
            node("Mul", ["centred", "scale"], ["xs"]),
            node("MatMul", ["xs", "w"], ["linear"]),
            node("MatMul", ["xs", "v"], ["xv"]),
            node("Mul", ["xv", "xv"], ["xv_sq"]),
            node("Mul", ["xs", "xs"], ["xs_sq"]),
            node("MatMul", ["xs_sq", "v2"], ["x2v2"]),
            node("Sub", ["xv_sq", "x2v2"], ["pair_terms"]),
            node("ReduceSum", ["pair_terms", "axis1"], ["pair_sum"], keepdims=1),
            node("Mul", ["pair_sum", "half"], ["pairs"]),
            node("Add", ["linear", "pairs"], ["partial_logit"]),
            node("Add", ["partial_logit", "w0"], ["logit"]),
            node("Sigmoid", ["logit"], ["probability_column"]),
            node("Squeeze", ["probability_column", "axis1"], [OUTPUT_NAME]),
        ]
        graph = helper.make_graph(
            nodes,
            "keyart_fm",
            [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["n", f])],
            [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["n"])],
            initializers,
        )
        return helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)], ir_version=8
        )
