"""Bad input is refused with a reason that names what is wrong."""

from __future__ import annotations

import pytest

from workers.frames import SamplingConfig, select_frames
from workers.source import BadInput, VideoLimits, local_path, probe_video, read_image


@pytest.mark.parametrize(
    ("which", "message"),
    [
        ("missing", "no such file"),
        ("empty", "empty file"),
        ("text", "unreadable container"),
        ("truncated_mp4", "unreadable container"),
    ],
)
def test_probe_refuses(bad_files, which, message):
    with pytest.raises(BadInput, match=message):
        probe_video(bad_files[which], VideoLimits())


def test_truncated_video_is_refused_while_decoding(bad_files):
    info = probe_video(bad_files["truncated_avi"], VideoLimits())
    assert info.frame_count == 250
    with pytest.raises(
        BadInput, match=r"truncated or corrupt video: decoded \d+ of 250"
    ):
        select_frames(info, SamplingConfig())


def test_absurd_resolution_and_length_are_refused(media):
    bikes = media("bikes.mp4")
    with pytest.raises(BadInput, match="KEYART_VIDEO_MAX_PIXELS"):
        probe_video(bikes, VideoLimits(max_pixels=320 * 240))
    with pytest.raises(BadInput, match="KEYART_VIDEO_MIN_SIDE"):
        probe_video(bikes, VideoLimits(min_side=300))
    with pytest.raises(BadInput, match="KEYART_VIDEO_MAX_SECONDS"):
        probe_video(bikes, VideoLimits(max_seconds=5))


def test_photos_are_checked_too(bad_files, media):
    with pytest.raises(BadInput, match="not a decodable image"):
        read_image(bad_files["text"])
    assert read_image(media("astronaut.png")).shape == (512, 512, 3)


def test_only_local_uris(tmp_path):
    assert local_path("file:///tmp/a%20b.mp4").as_posix() == "/tmp/a b.mp4"
    assert local_path("/data/x.mp4").as_posix() == "/data/x.mp4"
    with pytest.raises(BadInput, match="unsupported uri scheme"):
        local_path("s3://bucket/x.mp4")
