"""Shot segmentation, adaptive sampling and frame filters on real video."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from workers.frames import (
    SamplingConfig,
    frame_drop_reason,
    informativeness,
    select_frames,
)
from workers.source import VideoLimits, probe_video

BIKES_CUTS = [30, 76, 137, 187, 242]


def f1(found: list[int], truth: list[int], tolerance: int = 0) -> float:
    hits = sum(any(abs(f - t) <= tolerance for f in found) for t in truth)
    if not found or not truth:
        return 1.0 if found == truth else 0.0
    precision = hits / len(found)
    recall = hits / len(truth)
    return 0.0 if hits == 0 else 2 * precision * recall / (precision + recall)


def test_bikes_cuts_are_found_exactly(media):
    info = probe_video(media("bikes.mp4"), VideoLimits())
    selection = select_frames(info, SamplingConfig(kind="trailer"))
    assert selection.cuts == BIKES_CUTS
    assert f1(selection.cuts, BIKES_CUTS) == 1.0
    assert selection.decoded == 250
    assert [s.start for s in selection.shots] == [0, *BIKES_CUTS]
    assert selection.shots[-1].end == 250


def test_kept_frames_belong_to_their_shot_and_are_distinct(media):
    info = probe_video(media("bikes.mp4"), VideoLimits())
    config = SamplingConfig(kind="trailer", frames_per_shot=2, max_frames=12)
    selection = select_frames(info, config)
    assert 6 <= len(selection.frames) <= 12
    for frame in selection.frames:
        shot = selection.shots[frame.shot]
        assert shot.start <= frame.index < shot.end
    per_shot = [f.shot for f in selection.frames]
    assert max(per_shot.count(s) for s in set(per_shot)) <= 2
    hashes = [f.phash for f in selection.frames]
    for i, a in enumerate(hashes):
        for b in hashes[i + 1 :]:
            assert a - b > config.hash_distance


def test_bigbuckbunny_is_one_shot(media):
    info = probe_video(media("bigbuckbunny.mp4"), VideoLimits())
    assert (info.width, info.height) == (1280, 720)
    selection = select_frames(info, SamplingConfig())
    assert selection.cuts == []
    assert len(selection.shots) == 1
    assert 1 <= len(selection.frames) <= 2


def test_sampling_adapts_to_kind_and_shot_length(media):
    info = probe_video(media("bikes.mp4"), VideoLimits())
    trailer = select_frames(info, SamplingConfig(kind="trailer"))
    feature = select_frames(info, SamplingConfig(kind="feature"))
    assert trailer.sampled > 2 * feature.sampled
    config = SamplingConfig(kind="feature")
    assert config.interval_s(0.0, 10.0) < config.interval_s(8.0, 10.0)
    assert config.interval_s(0.0, 1.0) < config.interval_s(0.0, 10.0)


@pytest.fixture(scope="module")
def real_frame(media):
    capture = cv2.VideoCapture(str(media("bikes.mp4")))
    capture.set(cv2.CAP_PROP_POS_FRAMES, 150)
    ok, frame = capture.read()
    capture.release()
    assert ok
    return cv2.resize(frame, (320, 136), interpolation=cv2.INTER_AREA)


def test_real_frame_is_kept(real_frame):
    assert frame_drop_reason(real_frame, SamplingConfig()) is None


@pytest.mark.parametrize(
    ("transform", "reason"),
    [
        (lambda f: (f * 0.03).astype(np.uint8), "black"),
        (lambda f: cv2.add(f, np.full_like(f, 200)), "overexposed"),
        (lambda f: cv2.GaussianBlur(f, (0, 0), 6), "blurred"),
        (
            lambda f: np.where(f > 100, 200, 40).astype(np.uint8),
            "low_information",
        ),
    ],
)
def test_bad_frames_are_dropped_with_reason(real_frame, transform, reason):
    assert frame_drop_reason(transform(real_frame), SamplingConfig()) == reason


def test_informativeness_rewards_faces():
    measures = {"sharpness": 300.0, "entropy": 7.0, "colourfulness": 40.0}
    assert informativeness(measures, 0.05) > informativeness(measures, 0.0)
    assert 0.0 <= informativeness(measures, 1.0) <= 1.0
