"""Open a video or a photo and refuse the ones keyart cannot use.

Every refusal is a :class:`BadInput` whose message names what is wrong with
the input (missing, empty, not a video, truncated, absurd size or length), so
that the worker can mark the job failed with that reason and write a dead
letter.

Examples
--------
>>> from workers.source import probe_video, VideoLimits
>>> probe_video("missing.mp4", VideoLimits())  # doctest: +IGNORE_EXCEPTION_DETAIL
Traceback (most recent call last):
workers.source.BadInput: no such file: missing.mp4
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import cv2
import numpy as np

__all__ = [
    "IMAGE_SUFFIXES",
    "BadInput",
    "VideoInfo",
    "VideoLimits",
    "local_path",
    "probe_video",
    "read_image",
]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


class BadInput(ValueError):
    """An input keyart refuses; the message is the reason stored on the job."""


@dataclass(frozen=True)
class VideoLimits:
    """What a video must satisfy (the ``video_*`` settings)."""

    max_seconds: float = 14_400.0
    max_pixels: int = 8192 * 4320
    min_side: int = 64


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` learnt about a video."""

    path: Path
    width: int
    height: int
    fps: float
    frame_count: int

    @property
    def duration_s(self) -> float:
        """Length in seconds, from the container's frame count."""
        return self.frame_count / self.fps if self.fps > 0 else 0.0


def local_path(uri: str) -> Path:
    """Turn a video-published ``uri`` (a path or ``file://`` URL) into a path.

    Raises
    ------
    BadInput
        For a scheme keyart cannot read (only local files are supported).
    """
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path) if parsed.scheme else uri)
    raise BadInput(f"unsupported uri scheme {parsed.scheme!r} in {uri!r}")


def inside_roots(path: Path, roots: str) -> Path:
    """``path`` with symbolic links resolved, when it lies inside ``roots``.

    ``roots`` is the comma-separated ``KEYART_VIDEO_ROOTS``; empty lets any
    local file through. Resolving first means neither ``..`` nor a link inside
    a root reaches a file outside it.

    Raises
    ------
    BadInput
        For a path outside every root.
    """
    allowed = [Path(r.strip()).resolve() for r in roots.split(",") if r.strip()]
    resolved = path.resolve()
    if allowed and not any(resolved.is_relative_to(root) for root in allowed):
        raise BadInput(
            f"{path} is outside the folders videos may come from (KEYART_VIDEO_ROOTS)"
        )
    return resolved


def _check_file(path: Path) -> None:
    if not path.exists():
        raise BadInput(f"no such file: {path}")
    if not path.is_file():
        raise BadInput(f"not a file: {path}")
    if path.stat().st_size == 0:
        raise BadInput(f"empty file: {path}")


def probe_video(path: str | Path, limits: VideoLimits) -> VideoInfo:
    """Check that ``path`` is a decodable video within ``limits``.

    The first frame is decoded, so a file that only looks like a video (a text
    file named ``.mp4``, a header without frames) is refused here. A file cut
    short is only noticed while decoding; the frame reader raises then.

    Raises
    ------
    BadInput
        With the reason the video is refused.
    """
    path = Path(path)
    _check_file(path)
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise BadInput(
                f"unreadable container (not a video, truncated or corrupt): {path.name}"
            )
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        ok, frame = capture.read()
    finally:
        capture.release()
    if not ok or frame is None:
        raise BadInput(f"no decodable frame in {path.name}")
    height, width = frame.shape[:2] if width <= 0 or height <= 0 else (height, width)
    if min(width, height) < limits.min_side:
        raise BadInput(
            f"frame {width}x{height} is smaller than {limits.min_side} px "
            "(KEYART_VIDEO_MIN_SIDE)"
        )
    if width * height > limits.max_pixels:
        raise BadInput(
            f"frame {width}x{height} exceeds {limits.max_pixels} pixels "
            "(KEYART_VIDEO_MAX_PIXELS)"
        )
    if not 0 < fps <= 1000:
        raise BadInput(f"implausible frame rate {fps} in {path.name}")
    info = VideoInfo(path, width, height, fps, max(count, 1))
    if info.duration_s > limits.max_seconds:
        raise BadInput(
            f"video lasts {info.duration_s:.0f} s, more than {limits.max_seconds:.0f}"
            " s (KEYART_VIDEO_MAX_SECONDS)"
        )
    return info


def read_image(path: str | Path, limits: VideoLimits | None = None) -> np.ndarray:
    """Read a photo as a BGR array, refusing unreadable or absurd ones.

    Raises
    ------
    BadInput
        For a missing, empty, undecodable or out-of-limits image.
    """
    limits = limits or VideoLimits()
    path = Path(path)
    _check_file(path)
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise BadInput(f"not a decodable image: {path.name}")
    height, width = image.shape[:2]
    if min(width, height) < limits.min_side or width * height > limits.max_pixels:
        raise BadInput(f"image {width}x{height} is outside the accepted size")
    return image
