"""The codec round-trips every schema and follows the evolution rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from schemas.codec import AVRO_DIR, SCHEMA_NAMES, Codec, DecodeError

SAMPLES = {
    "impression": {
        "event_id": "i-1",
        "event_time": 1_700_000_000_000,
        "user_id": "u1",
        "video_id": "v1",
        "poster_id": "p1",
        "placement": "home_row",
        "variant": "ts",
        "policy": "thompson",
        "propensity": 0.25,
        "model_version": 3,
        "context": {"age": 0.3},
        "poster_features": {"faces": 1.0},
    },
    "click": {
        "event_id": "c-1",
        "event_time": 1_700_000_001_000,
        "impression_id": "i-1",
        "user_id": "u1",
        "video_id": "v1",
        "poster_id": "p1",
        "placement": "home_row",
    },
    "decision": {
        "event_id": "d-1",
        "event_time": 1,
        "user_id": "u1",
        "video_id": "v1",
        "poster_id": "p1",
        "placement": "home_row",
        "variant": "random",
        "policy": "random",
        "propensity": 0.5,
        "candidates": ["p1", "p2"],
        "scores": [0.1, 0.2],
    },
    "video_published": {
        "event_id": "e",
        "event_time": 1,
        "video_id": "v1",
        "title": "Bikes",
        "uri": "/tmp/bikes.mp4",
        "kind": "trailer",
        "cast": ["A"],
        "tags": ["x"],
    },
    "poster_candidate": {
        "event_id": "e",
        "event_time": 1,
        "video_id": "v1",
        "poster_id": "p1",
        "image_url": "/posters/p1.jpg",
        "aspect": "2:3",
        "width": 400,
        "height": 600,
        "frame_time_s": 1.5,
        "score": 0.8,
        "features": {"sharpness": 0.4},
        "tags": ["close-up"],
        "embedding": [0.5, 0.25],
    },
    "poster_published": {
        "event_id": "e",
        "event_time": 1,
        "video_id": "v1",
        "poster_id": "p1",
        "image_url": "/posters/p1.jpg",
        "aspect": "2:3",
        "placements": ["home_row"],
    },
    "dead_letter": {
        "event_id": "e",
        "event_time": 1,
        "source": "keyart.clicks",
        "reason": "bad marker",
        "payload": b"\x00\x01",
        "key": None,
    },
}


def test_every_schema_has_a_sample() -> None:
    assert set(SAMPLES) == set(SCHEMA_NAMES) == set(Codec().names)


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_round_trip(name: str) -> None:
    codec = Codec()
    record = codec.decode(name, codec.encode(name, SAMPLES[name]))
    for key, value in SAMPLES[name].items():
        assert record[key] == pytest.approx(value) if isinstance(value, float) else True
        if not isinstance(value, float):
            assert record[key] == value


def test_missing_field_is_a_clear_error() -> None:
    record = dict(SAMPLES["click"])
    del record["impression_id"]
    with pytest.raises(ValueError, match="impression_id"):
        Codec().encode("click", record)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "marker"),
        (b'{"json": true}', "marker"),
        (b"\xc3\x01" + b"\x00" * 8 + b"\x02", "unknown writer schema"),
    ],
)
def test_bad_bytes_are_decode_errors(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        Codec().decode("click", data)


def test_truncated_body_is_a_decode_error() -> None:
    codec = Codec()
    data = codec.encode("click", SAMPLES["click"])
    with pytest.raises(DecodeError):
        codec.decode("click", data[:-4])


def test_other_kind_is_refused() -> None:
    codec = Codec()
    data = codec.encode("click", SAMPLES["click"])
    with pytest.raises(DecodeError, match="is a click"):
        codec.decode("impression", data)


def _schema_dir_with_v2(tmp_path: Path) -> Path:
    """A copy of the bundled schemas where click has a v2 with one new field."""
    for folder in AVRO_DIR.iterdir():
        target = tmp_path / folder.name
        target.mkdir()
        for file in folder.glob("*.avsc"):
            (target / file.name).write_text(file.read_text())
    v1 = json.loads((AVRO_DIR / "click" / "v1.avsc").read_text())
    v1["fields"].append({"name": "device", "type": "string", "default": "unknown"})
    (tmp_path / "click" / "v2.avsc").write_text(json.dumps(v1))
    return tmp_path


def test_newer_writer_is_read_by_older_reader(tmp_path: Path) -> None:
    newer = Codec(_schema_dir_with_v2(tmp_path))
    registry = {newer.writer_fingerprint("click"): newer.schema_json("click")}
    older = Codec(lookup=registry.get)
    data = newer.encode("click", {**SAMPLES["click"], "device": "tv"})
    record = older.decode("click", data)
    assert "device" not in record
    assert record["impression_id"] == "i-1"


def test_older_writer_is_read_by_newer_reader(tmp_path: Path) -> None:
    newer = Codec(_schema_dir_with_v2(tmp_path))
    data = Codec().encode("click", SAMPLES["click"])
    record = newer.decode("click", data)
    assert record["device"] == "unknown"


def test_unknown_writer_without_registry_is_an_error(tmp_path: Path) -> None:
    newer = Codec(_schema_dir_with_v2(tmp_path))
    data = newer.encode("click", SAMPLES["click"])
    with pytest.raises(DecodeError, match="unknown writer schema"):
        Codec().decode("click", data)


def test_bundled_versions_only_add_fields_with_defaults() -> None:
    for folder in AVRO_DIR.iterdir():
        versions = sorted(folder.glob("v*.avsc"), key=lambda p: int(p.stem[1:]))
        for old_path, new_path in zip(versions, versions[1:], strict=False):
            old = {f["name"]: f for f in json.loads(old_path.read_text())["fields"]}
            new = {f["name"]: f for f in json.loads(new_path.read_text())["fields"]}
            assert set(old) <= set(new), f"{new_path} removes a field"
            for name, field in new.items():
                if name in old:
                    assert field["type"] == old[name]["type"], f"{name} retyped"
                else:
                    assert "default" in field, f"{new_path}: {name} has no default"
