"""`keyart train --source kafka` reads the real topics via the evaluation reader."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from keyart.cli import app
from producers.events import EventProducer
from ranking.serving import Ranker
from ranking.synthetic import simulate_logs


def _plain(record: dict) -> dict:
    """Numpy scalars to Python ones, as a producer would send them."""
    out = {}
    for key, value in record.items():
        if isinstance(value, dict):
            out[key] = {k: float(v) for k, v in value.items()}
        elif hasattr(value, "item"):
            out[key] = value.item()
        else:
            out[key] = value
    return out


@pytest.mark.slow
def test_train_from_the_event_topics(settings, tmp_path) -> None:
    logs = simulate_logs(3000, seed=21)
    producer = EventProducer(settings)
    for record in logs.impressions.to_dict("records"):
        producer.send("impression", _plain(record))
    for record in logs.clicks.to_dict("records"):
        producer.send("click", _plain(record))
    producer.flush()

    out = tmp_path / "models"
    env = {
        "KEYART_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "KEYART_TOPIC_PREFIX": settings.topic_prefix,
        "KEYART_STATE_DIR": str(tmp_path / "state"),
    }
    result = CliRunner().invoke(
        app, ["train", "lr", "--source", "kafka", "--out", str(out)], env=env
    )
    assert result.exit_code == 0, result.output
    assert "2400 training and 600 held-out impressions" in result.output
    ranker = Ranker.load(out / "lr.onnx")
    assert ranker is not None
    assert ranker.spec.poster_keys == tuple(sorted(logs.catalog["features"][0]))


def test_missing_topics_name_the_settings(make_settings, tmp_path) -> None:
    settings = make_settings(topics=False)
    env = {
        "KEYART_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "KEYART_TOPIC_PREFIX": "nothing-here",
        "KEYART_STATE_DIR": str(tmp_path / "state"),
    }
    result = CliRunner().invoke(app, ["train", "lr", "--source", "kafka"], env=env)
    assert result.exit_code == 1
    assert "KEYART_TOPIC_PREFIX" in result.output
