"""One set of behavioural checks run over every click model kind."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from scipy.stats import spearmanr

from ranking.dataset import TrainingSet
from ranking.evaluate import evaluate
from ranking.export import stamp
from ranking.models import MODEL_KINDS, ClickModel, model_class
from ranking.serving import Ranker
from ranking.synthetic import SyntheticLogs
from ranking.train import ONNX_TOLERANCE, score_onnx, train_model, write_outputs

# Spearman correlation with the hidden model's poster ordering, per kind: for the
# catalog's posters (with their counts at the end of the log) and for 30 posters
# the logs never showed. Over seeds 11-13 the lowest seen were 0.85 / 0.54
# (0.98 for LR, whose cold-start ordering is the most stable).
KNOWN_BOUND = 0.8
COLD_BOUND = {"lr": 0.9, "gbdt": 0.5, "fm": 0.5, "deepfm": 0.5}


def _population_prediction(
    model: ClickModel, ts: TrainingSet, logs: SyntheticLogs, posters: list[dict]
) -> np.ndarray:
    users = logs.truth.user_contexts()[:200]
    x = np.vstack([ts.spec.serving_matrix(u, posters, "home") for u in users])
    return model.predict_proba(x).reshape(len(users), len(posters)).mean(axis=0)


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_onnx_agrees_with_the_trained_model(
    kind: str, fitted: Callable[[str], ClickModel], training_set: TrainingSet
) -> None:
    model = fitted(kind)
    exported = model.to_onnx()
    stamp(exported, training_set.spec, kind)
    x = np.vstack([training_set.valid.x, training_set.train.x[:2000]])
    error = np.abs(score_onnx(exported, x) - model.predict_proba(x)).max()
    assert error <= ONNX_TOLERANCE


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_model_beats_the_base_rate_on_held_out_impressions(
    kind: str, fitted: Callable[[str], ClickModel], training_set: TrainingSet
) -> None:
    ts = training_set
    scored = evaluate(kind, ts.valid.y, fitted(kind).predict_proba(ts.valid.x))
    base = evaluate("base", ts.valid.y, np.full(len(ts.valid), ts.train.y.mean()))
    assert scored.auc > 0.65
    assert scored.log_loss < base.log_loss
    assert scored.ece < 0.05


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_training_recovers_the_hidden_ordering_of_posters(
    kind: str,
    fitted: Callable[[str], ClickModel],
    training_set: TrainingSet,
    logs: SyntheticLogs,
) -> None:
    model = fitted(kind)
    joined = logs.impressions.set_index("event_id")
    clicked = joined.index.isin(logs.clicks["impression_id"])
    shown = joined.groupby("poster_id").size()
    clicks = joined[clicked].groupby("poster_id").size()
    catalog = logs.catalog
    known = [
        {
            "features": f,
            "video_id": v,
            "impressions": float(shown.get(p, 0)),
            "clicks": float(clicks.get(p, 0)),
        }
        for f, p, v in zip(
            catalog["features"], catalog["poster_id"], catalog["video_id"], strict=True
        )
    ]
    truth = logs.truth.population_ctr(list(catalog["features"]))
    predicted = _population_prediction(model, training_set, logs, known)
    assert spearmanr(predicted, truth).statistic >= KNOWN_BOUND

    unseen = logs.truth.new_posters(30, seed=99)
    truth = logs.truth.population_ctr(unseen)
    cold = [{"features": f} for f in unseen]
    predicted = _population_prediction(model, training_set, logs, cold)
    assert spearmanr(predicted, truth).statistic >= COLD_BOUND[kind]


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_same_seed_same_predictions(
    kind: str, fitted: Callable[[str], ClickModel], training_set: TrainingSet
) -> None:
    ts = training_set
    cls = model_class(kind)
    first = cls(seed=0, **cls.test_params).fit(ts.train.x[:4000], ts.train.y[:4000])
    again = cls(seed=0, **cls.test_params).fit(ts.train.x[:4000], ts.train.y[:4000])
    np.testing.assert_allclose(
        first.predict_proba(ts.valid.x), again.predict_proba(ts.valid.x), atol=1e-9
    )


def test_written_models_load_in_the_ranker_and_score_like_training(
    training_set: TrainingSet, tmp_path
) -> None:
    result = train_model("lr", training_set, seed=0)
    paths = write_outputs(tmp_path, [result], [])
    ranker = Ranker.load(paths["lr"])
    assert ranker is not None and ranker.version == result.version
    direct = result.model.predict_proba(training_set.valid.x[:50])
    via_session = ranker.session.run(None, {"features": training_set.valid.x[:50]})[0]
    np.testing.assert_allclose(via_session, direct, atol=ONNX_TOLERANCE)
    assert paths["evaluation"].is_file()


def test_unknown_parameters_and_one_class_labels_are_refused() -> None:
    cls = model_class("fm")
    with pytest.raises(ValueError, match="unknown parameter"):
        cls(seed=0, depth=3)
    with pytest.raises(ValueError, match="both clicks and misses"):
        cls(seed=0).fit(np.zeros((10, 2), np.float32), np.zeros(10))
    with pytest.raises(ValueError, match="unknown model"):
        model_class("xgboost")
