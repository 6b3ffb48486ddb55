"""Offline click models that give the gateway's bandits a prior and a re-ranking.

Training (needs scikit-learn, LightGBM and, for DeepFM, PyTorch):
:mod:`ranking.dataset` builds the time-split training set from the event logs,
:mod:`ranking.models` holds logistic regression, gradient-boosted trees, a
factorization machine and DeepFM, :mod:`ranking.train` fits, exports to ONNX
and evaluates them (``keyart train MODEL``). Serving (onnxruntime only):
:class:`ranking.serving.Ranker`.
"""

from __future__ import annotations

__all__: list[str] = []
