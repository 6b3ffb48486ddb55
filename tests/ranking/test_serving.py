"""The ranker on the request path: loads or says why not, and never raises."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from prometheus_client import REGISTRY

from ranking.dataset import TrainingSet
from ranking.export import save_model
from ranking.features import FeatureSpec
from ranking.serving import Ranker
from ranking.train import train_model


def _metric(name: str) -> float:
    value = REGISTRY.get_sample_value(name)
    assert value is not None, name
    return value


@pytest.fixture(scope="module")
def model_file(training_set: TrainingSet, tmp_path_factory) -> Path:
    result = train_model("fm", training_set, seed=0)
    return save_model(result.onnx_model, tmp_path_factory.mktemp("rk") / "fm.onnx")


def _candidates(n: int) -> list[dict]:
    rng = np.random.default_rng(n)
    keys = ("brightness", "faces", "text_area", "saturation", "closeup")
    return [
        {
            "features": dict(zip(keys, rng.random(5), strict=True)),
            "impressions": int(rng.integers(0, 500)),
            "clicks": int(rng.integers(0, 20)),
            "video_id": f"v{i % 4}",
        }
        for i in range(n)
    ]


def test_missing_file_gives_none_a_warning_and_the_metric(tmp_path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="ranking"):
        assert Ranker.load(tmp_path / "absent.onnx") is None
    assert "ranker unavailable" in caplog.text and "absent.onnx" in caplog.text
    assert _metric("keyart_ranker_unavailable") == 1.0


@pytest.mark.parametrize(
    "content",
    [b"", b"not an onnx model", b"\x08\x07" * 50],
    ids=["empty", "text", "truncated"],
)
def test_broken_file_gives_none(tmp_path, content: bytes) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(content)
    assert Ranker.load(path) is None
    assert _metric("keyart_ranker_unavailable") == 1.0


def test_foreign_onnx_model_without_keyart_metadata_gives_none(
    model_file: Path, tmp_path, caplog
) -> None:
    model = onnx.load(model_file)
    del model.metadata_props[:]
    foreign = tmp_path / "foreign.onnx"
    foreign.write_bytes(model.SerializeToString())
    with caplog.at_level(logging.WARNING, logger="ranking"):
        assert Ranker.load(foreign) is None
    assert "keyart.spec" in caplog.text


def test_loaded_ranker_scores_candidates_and_clears_the_metric(model_file) -> None:
    Ranker.load(model_file.parent / "absent.onnx")
    ranker = Ranker.load(model_file)
    assert ranker is not None
    assert _metric("keyart_ranker_unavailable") == 0.0
    assert ranker.kind == "fm" and ranker.version.startswith("fm-")
    assert 0 < ranker.version_number < 2**48
    context = {"age": 0.3, "kids": 1.0, "mobile": 0.0}
    scores = ranker.predict(context, _candidates(20), placement="home")
    assert scores.shape == (20,) and np.all((scores > 0) & (scores < 1))
    # Children prefer saturated posters in the hidden model; so must the ranker.
    dull = {"features": {"saturation": 0.0}, "impressions": 0, "clicks": 0}
    vivid = {"features": {"saturation": 1.0}, "impressions": 0, "clicks": 0}
    low, high = ranker.predict({"kids": 1.0}, [dull, vivid])
    assert high > low
    assert ranker.predict(context, []).shape == (0,)


def test_try_predict_returns_none_and_counts_bad_candidates(model_file) -> None:
    ranker = Ranker.load(model_file)
    assert ranker is not None
    before = REGISTRY.get_sample_value("keyart_ranker_errors_total") or 0.0
    assert ranker.try_predict({"age": "old"}, _candidates(3)) is None
    assert _metric("keyart_ranker_errors_total") == before + 1
    assert ranker.try_predict({"age": 0.5}, _candidates(3)) is not None


def test_no_configured_ranker_is_not_an_error(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="ranking"):
        assert Ranker.load(None) is None
    assert caplog.text == ""
    assert _metric("keyart_ranker_unavailable") == 0.0


def test_serving_never_imports_torch(model_file: Path) -> None:
    code = (
        "import sys\n"
        "from ranking.serving import Ranker\n"
        f"r = Ranker.load({str(model_file)!r})\n"
        "r.predict({}, [{}])\n"
        "assert 'torch' not in sys.modules, 'serving imported torch'\n"
        "assert 'sklearn' not in sys.modules and 'lightgbm' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_prior_ignores_the_arms_own_counts_and_weighs_strength(model_file) -> None:
    ranker = Ranker.load(model_file)
    assert ranker is not None
    fresh = _candidates(6)
    used = [{**p, "impressions": 5000, "clicks": 900} for p in fresh]
    alpha, beta = ranker.prior({"kids": 1.0}, fresh, "home", strength=30.0)
    again, _ = ranker.prior({"kids": 1.0}, used, "home", strength=30.0)
    np.testing.assert_allclose(alpha + beta, 30.0)
    assert not np.allclose(alpha, again)  # video counts moved, arm counts did not
    same_video = [{**p, "video_impressions": 100, "video_clicks": 9} for p in fresh]
    also = [{**p, "impressions": 50, "clicks": 40} for p in same_video]
    np.testing.assert_allclose(
        ranker.prior({}, same_video, "home")[0], ranker.prior({}, also, "home")[0]
    )
    assert ranker.prior({"age": "old"}, fresh) is None
    exact, _ = ranker.prior({"kids": 1.0}, fresh, "home", strength=30.0, step=0)
    np.testing.assert_allclose(alpha, np.round(exact * 2) / 2)
    assert len(np.unique(exact)) == len(fresh)


def test_spec_that_does_not_fit_the_graph_gives_none(
    model_file: Path, tmp_path, caplog
) -> None:
    model = onnx.load(model_file)
    for entry in model.metadata_props:
        if entry.key == "keyart.spec":
            spec = FeatureSpec.from_json(entry.value)
            wider = FeatureSpec(
                (*spec.context_keys, "extra"),
                spec.poster_keys,
                spec.placements,
                spec.prior_ctr,
            )
            entry.value = wider.to_json()
    path = tmp_path / "wider.onnx"
    path.write_bytes(model.SerializeToString())
    with caplog.at_level(logging.WARNING, logger="ranking"):
        assert Ranker.load(path) is None
    assert "graph wants" in caplog.text
