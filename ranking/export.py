"""One ONNX contract for every click model, and the metadata that travels with it.

Every exported ranker takes one input, ``features`` (float32, shape
``[n, n_features]`` in :class:`ranking.features.FeatureSpec` order), and gives
one output, ``click_probability`` (float32, shape ``[n]``). Its metadata holds
the feature spec (``keyart.spec``), the model kind (``keyart.model``) and a
version string (``keyart.version``, the kind plus the first 12 hex digits of
the SHA-256 of the graph), so a decision can say which model scored it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from ranking.features import FeatureSpec

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "ONNX_OPSET", "probability_column"]
__all__ += ["stamp", "save_model", "version_number"]

INPUT_NAME = "features"
OUTPUT_NAME = "click_probability"
ONNX_OPSET = 15  # the newest the LightGBM converter writes; every model uses it


def probability_column(
    model: onnx.ModelProto, probabilities: str, column: int = 1
) -> onnx.ModelProto:
    """Make ``probabilities[:, column]`` the model's only output.

    Classifier converters emit a label and an ``[n, 2]`` probability tensor;
    the ranker needs the click column alone.
    """
    graph = model.graph
    index = helper.make_tensor("keyart_click_column", TensorProto.INT64, [], [column])
    graph.initializer.append(index)
    graph.node.append(
        helper.make_node(
            "Gather",
            [probabilities, "keyart_click_column"],
            [OUTPUT_NAME],
            axis=1,
            name="keyart_select_click",
        )
    )
    del graph.output[:]
    graph.output.append(
        helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["n"])
    )
    return model


def stamp(model: onnx.ModelProto, spec: FeatureSpec, kind: str) -> str:
    """Check the model against the contract, add its metadata; return its version.

    Raises
    ------
    ValueError
        When the graph's input or output is not the ranker contract.
    """
    inputs = [i.name for i in model.graph.input if i.name not in _initializers(model)]
    outputs = [o.name for o in model.graph.output]
    if inputs != [INPUT_NAME] or outputs != [OUTPUT_NAME]:
        raise ValueError(
            f"{kind}: a ranker takes {INPUT_NAME!r} and gives {OUTPUT_NAME!r}, "
            f"this graph takes {inputs} and gives {outputs}"
        )
    onnx.checker.check_model(model)
    digest = hashlib.sha256(model.graph.SerializeToString()).hexdigest()[:12]
    version = f"{kind}-{digest}"
    del model.metadata_props[:]
    for key, value in (
        ("keyart.spec", spec.to_json()),
        ("keyart.model", kind),
        ("keyart.version", version),
    ):
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    model.producer_name = "keyart"
    return version


def version_number(version: str) -> int:
    """The version as a positive 48-bit integer, for the decision's ``long`` field.

    Examples
    --------
    >>> version_number("lr-00000000000a")
    10
    """
    return int(version.rsplit("-", 1)[-1], 16)


def save_model(model: onnx.ModelProto, path: Path) -> Path:
    """Write the model atomically, so a gateway never loads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_bytes(model.SerializeToString())
    partial.replace(path)
    return path


def _initializers(model: onnx.ModelProto) -> set[str]:
    return {t.name for t in model.graph.initializer}
