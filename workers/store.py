"""The poster store: JPEG files under a folder, served from a public URL base.

Paths are ``<video id>/<poster id>.jpg`` (the video id made file-safe), so a
CDN in front of ``poster_store`` serves ``poster_url_base + "/" + path``.
Writes go to a temporary name and are renamed into place: a reader never
sees half a file, and a retried job overwrites the same path.

Examples
--------
>>> import numpy as np, tempfile
>>> from workers.store import PosterStore
>>> store = PosterStore(tempfile.mkdtemp(), "https://cdn.example/posters")
>>> store.write("video 1", "p1", np.zeros((30, 20, 3), np.uint8))
('video_1/p1.jpg', 'https://cdn.example/posters/video_1/p1.jpg')
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import cv2
import numpy as np

__all__ = ["PosterStore"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class PosterStore:
    """Writes poster images and names their public URLs."""

    def __init__(self, root: str | Path, url_base: str, quality: int = 90) -> None:
        self.root = Path(root)
        self.url_base = url_base.rstrip("/")
        self.quality = quality

    def relative_path(self, video_id: str, poster_id: str) -> str:
        """Where a poster lives inside the store."""
        folder = _UNSAFE.sub("_", video_id).strip("._") or "video"
        return f"{folder}/{_UNSAFE.sub('_', poster_id)}.jpg"

    def url(self, relative: str) -> str:
        """Public URL of a stored path."""
        return f"{self.url_base}/{relative}"

    def write(
        self, video_id: str, poster_id: str, image: np.ndarray
    ) -> tuple[str, str]:
        """Write ``image`` as JPEG; return its relative path and URL.

        Raises
        ------
        OSError
            When the store is not writable (the message names the path).
        """
        relative = self.relative_path(video_id, poster_id)
        target = self.root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise OSError(f"could not encode poster {poster_id} as JPEG")
        partial = target.with_name(f".{target.name}.{os.getpid()}.part")
        partial.write_bytes(data.tobytes())
        partial.replace(target)
        return relative, self.url(relative)

    def write_thumbnail(
        self, video_id: str, poster_id: str, image: np.ndarray, long_side: int = 240
    ) -> str:
        """Write a small JPEG beside the poster for review lists; return its URL."""
        factor = min(1.0, long_side / max(image.shape[:2]))
        size = (
            max(1, round(image.shape[1] * factor)),
            max(1, round(image.shape[0] * factor)),
        )
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        _, url = self.write(video_id, poster_id + ".thumb", small)
        return url
