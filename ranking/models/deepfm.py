"""DeepFM in PyTorch on the CPU: a factorization machine and an MLP sharing factors.

Each numeric feature i is a field with a factor vector v_i, embedded as
``e_i = x_i v_i``. The FM part adds first-order weights and the pairwise
interactions of the e_i; the deep part feeds the concatenated e_i through a
small MLP for higher-order interactions. Inputs are standardised inside the
module, so the exported graph takes the raw feature matrix.

PyTorch is the optional ``train`` extra (``pip install 'keyart[train]'``):
training and export need it, serving the exported ONNX file does not.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=(1000, 3)).astype(np.float32)
>>> y = (x[:, 0] * x[:, 1] > 0).astype(int)
>>> model = DeepFMModel(seed=0, epochs=2).fit(x, y)
>>> model.predict_proba(x[:4]).shape
(4,)
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import torch
from torch import nn

from ranking.export import INPUT_NAME, ONNX_OPSET, OUTPUT_NAME
from ranking.models.base import ClickModel

__all__ = ["DeepFMModel"]


class _DeepFM(nn.Module):
    def __init__(
        self, mean: np.ndarray, scale: np.ndarray, factors: int, hidden: list[int]
    ) -> None:
        super().__init__()
        f = len(mean)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32))
        self.linear = nn.Linear(f, 1)
        self.factors = nn.Parameter(torch.randn(f, factors) * 0.01)
        layers: list[nn.Module] = []
        width = f * factors
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        layers.append(nn.Linear(width, 1))
        self.deep = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs = (x - self.get_buffer("mean")) * self.get_buffer("scale")
        embedded = xs.unsqueeze(2) * self.factors  # (n, fields, factors)
        summed = embedded.sum(dim=1)
        pairs = 0.5 * (summed * summed - (embedded * embedded).sum(dim=1)).sum(dim=1)
        deep = self.deep(embedded.flatten(start_dim=1)).squeeze(1)
        return self.linear(xs).squeeze(1) + pairs + deep


class _Probability(nn.Module):
    def __init__(self, net: _DeepFM) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(x))


class DeepFMModel(ClickModel):
    kind = "deepfm"
    defaults = {
        "factors": 8,
        "hidden": [64, 32],
        "epochs": 8,
        "batch_size": 256,
        "learning_rate": 0.003,
        "weight_decay": 1e-5,
    }
    test_params = {"epochs": 4, "hidden": [32]}

    def fit(self, x: np.ndarray, y: np.ndarray) -> DeepFMModel:
        self._check_fit_input(x, y)
        p = self.params
        x64 = np.asarray(x, dtype=np.float64)
        std = x64.std(axis=0)
        scale = 1.0 / np.where(std > 1e-12, std, 1.0)
        generator = torch.Generator().manual_seed(self.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.net = _DeepFM(x64.mean(axis=0), scale, p["factors"], p["hidden"])
        optimiser = torch.optim.Adam(
            self.net.parameters(), lr=p["learning_rate"], weight_decay=p["weight_decay"]
        )
        loss_of = nn.BCEWithLogitsLoss()
        xt = torch.tensor(np.asarray(x, dtype=np.float32))
        yt = torch.tensor(np.asarray(y, dtype=np.float32))
        threads = torch.get_num_threads()
        # Small batches run 15x slower when two threads fight over two cores.
        torch.set_num_threads(1)
        self.net.train()
        try:
            for _ in range(p["epochs"]):
                order = torch.randperm(len(xt), generator=generator)
                for start in range(0, len(xt), p["batch_size"]):
                    batch = order[start : start + p["batch_size"]]
                    optimiser.zero_grad()
                    loss = loss_of(self.net(xt[batch]), yt[batch])
                    loss.backward()
                    optimiser.step()
        finally:
            torch.set_num_threads(threads)
            self.net.eval()
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        self._fitted_width()
        with torch.no_grad():
            logit = self.net(torch.tensor(np.asarray(x, dtype=np.float32)))
            return torch.sigmoid(logit).numpy().astype(np.float64)

    def to_onnx(self) -> onnx.ModelProto:
        width = self._fitted_width()
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            # The TorchScript exporter needs no onnxscript, which keyart does not
            # install; torch flags it as legacy with a DeprecationWarning.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                _Probability(self.net).eval(),
                (torch.zeros(2, width),),
                buffer,  # type: ignore[arg-type]  # a file-like object is accepted
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "n"}, OUTPUT_NAME: {0: "n"}},
                opset_version=ONNX_OPSET,
                dynamo=False,
            )
        return onnx.load_from_string(buffer.getvalue())
