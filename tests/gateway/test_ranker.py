"""The offline ranker's warm-start prior, served end to end with a real ONNX model."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bandits.state import ArmStats
from keyart.settings import Settings
from ranking.dataset import build_training_set
from ranking.serving import Ranker
from ranking.synthetic import CONTEXT_KEYS, POSTER_KEYS, simulate_logs
from ranking.train import train_model, write_outputs
from schemas.codec import get_codec
from tests.gateway.conftest import (
    ADMIN_TOKEN,
    RULES_OFF,
    TOKEN_SECRET,
    Served,
    add_poster,
    new_id,
    serve,
)
from tests.helpers import consume_raw

CONTEXT = dict.fromkeys(CONTEXT_KEYS, 0.5)
STRENGTH = 20.0


@pytest.fixture(scope="module")
def ranker_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A logistic-regression ranker trained on a small synthetic log."""
    logs = simulate_logs(2000, n_videos=10, seed=3)
    training = build_training_set(logs.impressions, logs.clicks, logs.catalog)
    folder = tmp_path_factory.mktemp("ranker")
    return write_outputs(folder, [train_model("lr", training)], [])["lr"]


@contextlib.contextmanager
def _served(make_settings: Callable[..., Settings], path: Path) -> Iterator[Served]:
    settings = make_settings(
        topics=True,
        token_secret=TOKEN_SECRET,
        admin_token=ADMIN_TOKEN,
        redis_budget_ms=200.0,
        ranker_path=path,
        ranker_prior_strength=STRENGTH,
    )
    server, served = serve(settings)
    try:
        yield served
    finally:
        served.client.close()
        served.redis.close()
        server.stop()


def _decide_one(served: Served) -> tuple[dict, list[dict]]:
    """Serve one fresh video of two new posters; its logged decision and rows."""
    served.set_rules(**RULES_OFF)
    served.set_variants(("ts", "thompson", 1.0))
    video = new_id("v")
    posters = [new_id("p"), new_id("p")]
    features = [dict.fromkeys(POSTER_KEYS, 0.1), dict.fromkeys(POSTER_KEYS, 0.9)]
    for poster, f in zip(posters, features, strict=True):
        add_poster(served, video, poster, stats=ArmStats(0, 0, 0, 0), features=f)
    answer = served.select(new_id("u"), [video], context=CONTEXT)
    assert answer["slots"][0]["poster_id"] in posters
    (message,) = consume_raw(served.settings, served.settings.topic("decisions"), 1)
    logged = get_codec().decode("decision", message.value())
    order = sorted(range(2), key=lambda i: posters[i])
    rows = [
        {"features": features[i], "video_id": video, "impressions": 0, "clicks": 0}
        for i in order
    ]
    return logged, rows


def test_ranker_prior_moves_the_served_posterior_and_names_the_model(
    make_settings: Callable[..., Settings], ranker_path: Path
) -> None:
    with _served(make_settings, ranker_path) as served:
        logged, rows = _decide_one(served)
    ranker = Ranker.load(ranker_path)
    assert ranker is not None
    alpha, beta = ranker.prior(CONTEXT, rows, "home_row", STRENGTH)
    expected = alpha / (alpha + beta)  # fresh arms: the posterior mean is the prior's

    assert f"ranker:{ranker.version}" in logged["rules"]
    assert logged["scores"] == pytest.approx(expected.tolist(), rel=1e-6)
    settings = served.settings
    flat = settings.prior_alpha / (settings.prior_alpha + settings.prior_beta)
    chosen = logged["candidates"].index(logged["poster_id"])
    assert logged["scores"][chosen] != pytest.approx(flat)  # the prior moved


def test_broken_ranker_file_serves_with_the_bandit_prior_alone(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    broken = tmp_path / "ranker.onnx"
    broken.write_bytes(b"not an onnx graph")
    with _served(make_settings, broken) as served:
        logged, _ = _decide_one(served)

    settings = served.settings
    flat = settings.prior_alpha / (settings.prior_alpha + settings.prior_beta)
    assert not any(rule.startswith("ranker:") for rule in logged["rules"])
    assert logged["scores"] == pytest.approx([flat, flat])
