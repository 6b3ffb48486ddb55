"""``keyart train``: trains, writes ONNX files and the table, or says what is wrong."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from keyart.cli import app
from ranking.serving import Ranker
from ranking.synthetic import simulate_logs


def test_train_all_on_synthetic_logs_writes_four_models(
    tmp_path, require_torch
) -> None:
    out = tmp_path / "models"
    result = CliRunner().invoke(
        app,
        [
            "train",
            "all",
            "--source",
            "synthetic",
            "--rows",
            "4000",
            "--out",
            str(out),
            "--no-online",
        ],
    )
    assert result.exit_code == 0, result.output
    for kind in ("lr", "gbdt", "fm", "deepfm"):
        assert kind in result.output
        ranker = Ranker.load(out / f"{kind}.onnx")
        assert ranker is not None and ranker.kind == kind
    report = json.loads((out / "evaluation.json").read_text())
    assert {m["model"] if "model" in m else m["name"] for m in report["models"]} == {
        "lr",
        "gbdt",
        "fm",
        "deepfm",
    }
    assert all(m["onnx_max_error"] <= 1e-5 for m in report["models"])
    assert "KEYART_RANKER_PATH=" in result.output
    assert "reliability of" in result.output


def test_train_from_a_folder_of_parquet_logs_with_online_models(tmp_path) -> None:
    logs = simulate_logs(3000, seed=4)
    logs.impressions.to_parquet(tmp_path / "impressions.parquet")
    logs.clicks.to_parquet(tmp_path / "clicks.parquet")
    logs.catalog.to_parquet(tmp_path / "catalog.parquet")
    out = tmp_path / "models"
    result = CliRunner().invoke(
        app, ["train", "lr", "--source", str(tmp_path), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "online beta" in result.output and "online fm" in result.output
    assert (out / "lr.onnx").is_file()


def test_bad_model_or_source_exits_with_a_message(tmp_path) -> None:
    result = CliRunner().invoke(app, ["train", "xgboost", "--source", "synthetic"])
    assert result.exit_code == 2 and "unknown MODEL 'xgboost'" in result.output
    missing = tmp_path / "logs"
    missing.mkdir()
    result = CliRunner().invoke(app, ["train", "lr", "--source", str(missing)])
    assert result.exit_code == 2 and "impressions.parquet is missing" in result.output
