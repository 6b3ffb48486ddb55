"""The row encoder of decision records writes the codec's bytes exactly."""

from __future__ import annotations

import random

import pytest

from gateway._decision_log import RowLogEncoder
from schemas.codec import get_codec

ROW_FIELDS = (
    "event_time",
    "request_id",
    "user_id",
    "placement",
    "variant",
    "experiment_version",
    "context",
)
LETTERS = "ab%|-_ 0\u00e9\u6f22"
RECORD_FIELDS = (
    "event_id",
    "video_id",
    "poster_id",
    "policy",
    "propensity",
    "model_version",
    "candidates",
    "scores",
    "rules",
    "fallback",
)


def _text(rng: random.Random) -> str:
    return "".join(rng.choice(LETTERS) for _ in range(rng.randint(0, 90)))


def _record(rng: random.Random) -> dict:
    big = (1 << 63) - 1
    return {
        "event_id": _text(rng),
        "event_time": rng.choice([0, 63, 64, -1, -65, 1_800_000_000_000, big]),
        "request_id": _text(rng),
        "user_id": _text(rng),
        "video_id": _text(rng),
        "poster_id": _text(rng),
        "placement": _text(rng),
        "variant": _text(rng),
        "policy": _text(rng),
        "propensity": rng.choice([1.0, rng.random(), 1e-300, float("inf")]),
        "model_version": rng.choice([0, 1, 1 << 40, rng.randint(-big, big)]),
        "experiment_version": rng.randint(-10, 10**6),
        "candidates": [_text(rng) for _ in range(rng.choice([0, 1, 5, 70]))],
        "scores": [rng.random() for _ in range(rng.choice([0, 1, 5, 63, 64, 100]))],
        "rules": [_text(rng) for _ in range(rng.randint(0, 4))],
        "fallback": rng.random() < 0.5,
        "context": {_text(rng): rng.random() for _ in range(rng.randint(0, 70))},
    }


def test_rows_encode_to_the_codecs_bytes():
    codec = get_codec()
    encoder = RowLogEncoder(codec)
    assert encoder.exact
    rng = random.Random(5)
    for _ in range(2000):
        record = _record(rng)
        shared = encoder.shared(*(record[f] for f in ROW_FIELDS))
        value = encoder.record(shared, *(record[f] for f in RECORD_FIELDS))
        assert value == codec.encode("decision", record)
        assert codec.decode("decision", value)["candidates"] == record["candidates"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("propensity", "high"), ("model_version", 1 << 64), ("scores", [None])],
)
def test_a_value_that_does_not_fit_is_refused(field, value):
    encoder = RowLogEncoder(get_codec())
    record = {**_record(random.Random(1)), field: value}
    shared = encoder.shared(*(record[f] for f in ROW_FIELDS))
    with pytest.raises(ValueError, match="does not fit"):
        encoder.record(shared, *(record[f] for f in RECORD_FIELDS))
