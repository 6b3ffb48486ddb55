"""Fixtures of the poster-production tests: models loaded once, real bad files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import DATA_CACHE
from workers.pipeline import PipelineConfig, PosterPipeline


@pytest.fixture(scope="session")
def pipeline() -> PosterPipeline:
    """One pipeline (real ONNX models) for the whole session."""
    return PosterPipeline(PipelineConfig(cache=DATA_CACHE))


@pytest.fixture(scope="session")
def image(media: Callable[[str], Path]) -> Callable[[str], np.ndarray]:
    """Read a real photo as BGR."""

    def read(name: str) -> np.ndarray:
        found = cv2.imread(str(media(name)))
        assert found is not None, name
        return found

    return read


@pytest.fixture(scope="session")
def bad_files(
    media: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """Real broken inputs made from the real videos.

    ``truncated_mp4``: the first 60% of bikes.mp4 (its index is at the end, so
    the container does not open); ``truncated_avi``: bikes.mp4 re-encoded as
    MJPEG AVI (index first) and cut in half, so it opens and then stops
    decoding; ``empty``: zero bytes; ``text``: a text file named ``.mp4``;
    ``missing``: a path that does not exist.
    """
    folder = tmp_path_factory.mktemp("bad")
    bikes = media("bikes.mp4")
    data = bikes.read_bytes()
    out = {
        "truncated_mp4": folder / "truncated.mp4",
        "truncated_avi": folder / "truncated.avi",
        "empty": folder / "empty.mp4",
        "text": folder / "notes.mp4",
        "missing": folder / "missing.mp4",
    }
    out["truncated_mp4"].write_bytes(data[: int(len(data) * 0.6)])
    out["empty"].write_bytes(b"")
    out["text"].write_text("this is a text file, not a video\n" * 50)
    full_avi = folder / "full.avi"
    capture = cv2.VideoCapture(str(bikes))
    writer = cv2.VideoWriter(
        str(full_avi), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (640, 272)
    )
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        writer.write(frame)
    writer.release()
    capture.release()
    avi = full_avi.read_bytes()
    out["truncated_avi"].write_bytes(avi[: len(avi) // 2])
    return out
