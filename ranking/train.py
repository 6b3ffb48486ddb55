"""Train, export, check and evaluate the click models on one training set.

For each model kind: fit on the training period, export to ONNX, score the
held-out period both in process and through onnxruntime, refuse the export if
the two disagree by more than ``ONNX_TOLERANCE``, and evaluate the ONNX scores
(what the gateway will serve). :func:`write_outputs` writes ``<kind>.onnx``
and ``evaluation.json`` (summaries and reliability tables) to a folder.

Examples
--------
>>> from ranking.dataset import build_training_set
>>> from ranking.synthetic import simulate_logs
>>> logs = simulate_logs(n_impressions=3000, seed=2)
>>> ts = build_training_set(logs.impressions, logs.clicks, logs.catalog)
>>> result = train_model("lr", ts, seed=0)
>>> result.version.startswith("lr-"), result.onnx_max_error < 1e-5
(True, True)
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd

from ranking.dataset import TrainingSet
from ranking.evaluate import Evaluation, evaluate, online_scores
from ranking.export import INPUT_NAME, OUTPUT_NAME, save_model, stamp
from ranking.models import ClickModel, model_class
from ranking.serving import session_for

__all__ = ["ONNX_TOLERANCE", "ExportMismatchError", "TrainedModel"]
__all__ += ["evaluate_online", "score_onnx", "train_model", "write_outputs"]

logger = logging.getLogger("ranking")

ONNX_TOLERANCE = 1e-5


class ExportMismatchError(RuntimeError):
    """The ONNX graph does not reproduce the trained model's predictions."""


@dataclass
class TrainedModel:
    kind: str
    model: ClickModel
    onnx_model: onnx.ModelProto
    version: str
    evaluation: Evaluation
    onnx_max_error: float


def score_onnx(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """Click probabilities of ``x`` through onnxruntime, as float64."""
    session = session_for(model.SerializeToString())
    out = session.run([OUTPUT_NAME], {INPUT_NAME: np.asarray(x, dtype=np.float32)})
    return np.asarray(out[0], dtype=np.float64)


def train_model(
    kind: str,
    training_set: TrainingSet,
    seed: int = 0,
    params: dict[str, Any] | None = None,
) -> TrainedModel:
    """Fit, export, check and evaluate one model kind.

    Raises
    ------
    ExportMismatchError
        When onnxruntime and the trained model differ by more than
        ``ONNX_TOLERANCE`` on a held-out row.
    """
    ts = training_set
    model = model_class(kind)(seed=seed, **(params or {}))
    logger.info("training %s on %s impressions", kind, len(ts.train))
    model.fit(ts.train.x, ts.train.y)
    exported = model.to_onnx()
    version = stamp(exported, ts.spec, kind)
    in_process = model.predict_proba(ts.valid.x)
    served = score_onnx(exported, ts.valid.x)
    error = float(np.max(np.abs(in_process - served))) if len(served) else 0.0
    if error > ONNX_TOLERANCE:
        raise ExportMismatchError(
            f"{kind}: ONNX and in-process predictions differ by {error:.2e}"
        )
    return TrainedModel(
        kind, model, exported, version, evaluate(kind, ts.valid.y, served), error
    )


def evaluate_online(
    training_set: TrainingSet,
    prior_alpha: float = 1.0,
    prior_beta: float = 1.0,
    seed: int = 0,
) -> list[Evaluation]:
    """The online models' scores on the same held-out period."""
    ts = training_set
    frame = pd.concat([ts.train.frame, ts.valid.frame], ignore_index=True)
    labels = np.concatenate([ts.train.y, ts.valid.y])
    held = np.r_[np.zeros(len(ts.train), bool), np.ones(len(ts.valid), bool)]
    scores = online_scores(
        frame, labels, held, prior_alpha=prior_alpha, prior_beta=prior_beta, seed=seed
    )
    return [evaluate(name, ts.valid.y, p) for name, p in scores.items()]


def write_outputs(
    out_dir: Path,
    trained: list[TrainedModel],
    online: list[Evaluation],
) -> dict[str, Path]:
    """Write each model's ONNX file and one ``evaluation.json``; return the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        t.kind: save_model(t.onnx_model, out_dir / f"{t.kind}.onnx") for t in trained
    }
    report = {
        "models": [
            {
                **t.evaluation.summary(),
                "version": t.version,
                "path": str(paths[t.kind]),
                "onnx_max_error": t.onnx_max_error,
                "reliability": t.evaluation.reliability.to_dict("records"),
            }
            for t in trained
        ],
        "online": [
            {**e.summary(), "reliability": e.reliability.to_dict("records")}
            for e in online
        ],
    }
    paths["evaluation"] = out_dir / "evaluation.json"
    paths["evaluation"].write_text(json.dumps(report, indent=2))
    return paths
