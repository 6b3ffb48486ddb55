"""Smart frame extraction: shots, adaptive sampling, filters, near-duplicates.

One decoding pass does everything, so memory stays bounded whatever the
video's length:

1. every frame, downscaled to ``detect_width``, goes through PySceneDetect's
   ``ContentDetector`` to find hard cuts;
2. frames are sampled at an interval that adapts to the content: denser for
   trailers and where shots are short (fast cutting), and growing the longer a
   shot lasts (long static shots need few samples);
3. a sampled frame is dropped when it is black, overexposed, blurred or
   carries little information (grey-level entropy);
4. inside a shot, near-duplicates are removed by perceptual hash, and when the
   shot ends its best frames by informativeness are kept, again deduplicated
   against every frame kept so far; only the ``max_frames`` most informative
   frames of the video stay in memory.

Informativeness is ``0.3 sharpness + 0.3 entropy + 0.2 colourfulness + 0.2
faces``, each part mapped to 0 to 1 (see :func:`informativeness`); the face
part comes from an optional ``face_share`` callable run only on each shot's
best few frames.

Examples
--------
>>> from workers.frames import SamplingConfig, select_frames  # doctest: +SKIP
>>> selection = select_frames("bikes.mp4", SamplingConfig())  # doctest: +SKIP
>>> [shot.start for shot in selection.shots]  # doctest: +SKIP
[0, 30, 76, 137, 187, 242]
"""

from __future__ import annotations

import heapq
import logging
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import imagehash
import numpy as np
from PIL import Image
from scenedetect.common import FrameTimecode
from scenedetect.detectors import ContentDetector

from workers.measures import colourfulness, entropy_bits, exposure, sharpness
from workers.source import BadInput, VideoInfo

__all__ = [
    "FrameSelection",
    "SampledFrame",
    "SamplingConfig",
    "Shot",
    "frame_drop_reason",
    "informativeness",
    "select_frames",
]

logger = logging.getLogger("workers")

KIND_TO_INTERVAL_S = {"trailer": 0.25, "feature": 1.0, "episode": 1.0, "other": 0.5}


@dataclass(frozen=True)
class SamplingConfig:
    """Tuning of :func:`select_frames`; the defaults suit 24-60 fps video."""

    kind: str = "other"
    detect_width: int = 320
    cut_threshold: float = 27.0
    min_shot_frames: int = 15
    static_after_s: float = 4.0
    fast_cut_s: float = 2.0
    black_luma: float = 0.06
    overexposed_share: float = 0.4
    min_sharpness: float = 12.0
    min_entropy: float = 3.5
    hash_distance: int = 8
    shot_pool: int = 6
    frames_per_shot: int = 2
    max_frames: int = 12

    def interval_s(self, in_shot_s: float, recent_shot_s: float) -> float:
        """Seconds to the next sample.

        The kind's base interval, halved while recent shots are shorter than
        ``fast_cut_s``, and stretched by ``1 + in_shot_s / static_after_s`` as
        a shot goes on.
        """
        base = KIND_TO_INTERVAL_S.get(self.kind, KIND_TO_INTERVAL_S["other"])
        if recent_shot_s < self.fast_cut_s:
            base *= 0.5
        return base * (1.0 + in_shot_s / self.static_after_s)


@dataclass(frozen=True)
class Shot:
    """Frames ``start`` (inclusive) to ``end`` (exclusive) between two cuts."""

    index: int
    start: int
    end: int


@dataclass(eq=False)
class SampledFrame:
    """A frame kept by the selection, at full resolution (BGR)."""

    index: int
    time_s: float
    shot: int
    image: np.ndarray
    measures: dict[str, float]
    phash: imagehash.ImageHash
    score: float = 0.0

    def __lt__(self, other: SampledFrame) -> bool:
        return (self.score, -self.index) < (other.score, -other.index)


@dataclass
class FrameSelection:
    """What :func:`select_frames` found in a video."""

    info: VideoInfo
    shots: list[Shot]
    frames: list[SampledFrame]
    decoded: int
    sampled: int
    dropped: Counter[str] = field(default_factory=Counter)

    @property
    def cuts(self) -> list[int]:
        """Frame numbers where a new shot starts (the first shot excluded)."""
        return [shot.start for shot in self.shots[1:]]


def frame_drop_reason(bgr_small: np.ndarray, config: SamplingConfig) -> str | None:
    """Why a (downscaled) frame is not worth a poster, or ``None`` to keep it."""
    grey = cv2.cvtColor(bgr_small, cv2.COLOR_BGR2GRAY)
    mean, _, bright = exposure(grey)
    if mean < config.black_luma:
        return "black"
    if bright > config.overexposed_share:
        return "overexposed"
    if sharpness(grey) < config.min_sharpness:
        return "blurred"
    if entropy_bits(grey) < config.min_entropy:
        return "low_information"
    return None


def informativeness(measures: dict[str, float], face_share: float = 0.0) -> float:
    """Score a frame from 0 to 1 from its measures and its faces' area share."""
    sharp = min(1.0, math.log1p(measures["sharpness"]) / math.log1p(1000.0))
    entropy = measures["entropy"] / 8.0
    colour = min(1.0, measures["colourfulness"] / 100.0)
    faces = min(1.0, face_share * 10.0)
    return 0.3 * sharp + 0.3 * entropy + 0.2 * colour + 0.2 * faces


def _measure(small: np.ndarray) -> dict[str, float]:
    grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    mean, dark, bright = exposure(grey)
    return {
        "sharpness": sharpness(grey),
        "entropy": entropy_bits(grey),
        "colourfulness": colourfulness(small),
        "brightness": mean,
    }


class _Selector:
    """The per-shot bookkeeping of :func:`select_frames`."""

    def __init__(
        self, config: SamplingConfig, face_share: Callable[[np.ndarray], float] | None
    ) -> None:
        self.config = config
        self.face_share = face_share
        self.pool: list[SampledFrame] = []
        self.kept: list[SampledFrame] = []  # a min-heap on score

    def offer(self, frame: SampledFrame) -> None:
        for other in self.pool:
            if frame.phash - other.phash <= self.config.hash_distance:
                if frame.score > other.score:
                    self.pool.remove(other)
                    break
                return
        self.pool.append(frame)
        if len(self.pool) > self.config.shot_pool:
            self.pool.remove(min(self.pool))

    def close_shot(self, shot: int, before: int | None = None) -> None:
        """Rank the pool's frames of ``shot`` (index < ``before``) and keep the best."""
        closing = [f for f in self.pool if before is None or f.index < before]
        self.pool = [f for f in self.pool if f not in closing]
        closing.sort(reverse=True)
        # Faces are searched only in the frames that can still be kept: the
        # face term (at most 0.2) re-ranks the leaders, not the whole pool.
        for rank, frame in enumerate(closing):
            frame.shot = shot
            if self.face_share is not None and rank <= self.config.frames_per_shot:
                frame.measures["face_share"] = self.face_share(frame.image)
            frame.score = informativeness(
                frame.measures, frame.measures.get("face_share", 0.0)
            )
        closing.sort(reverse=True)
        taken = 0
        for frame in closing:
            if taken == self.config.frames_per_shot:
                break
            if any(
                frame.phash - k.phash <= self.config.hash_distance for k in self.kept
            ):
                continue
            taken += 1
            if len(self.kept) < self.config.max_frames:
                heapq.heappush(self.kept, frame)
            elif self.kept[0] < frame:
                heapq.heapreplace(self.kept, frame)


def select_frames(
    info: VideoInfo,
    config: SamplingConfig,
    face_share: Callable[[np.ndarray], float] | None = None,
    progress: Callable[[int], None] | None = None,
) -> FrameSelection:
    """Decode ``info.path`` once and return its shots and best frames.

    Steps are those of the module docstring.

    Raises
    ------
    BadInput
        When the video stops decoding well before its announced frame count
        (a truncated or corrupt file), or yields no frame at all.
    """
    capture = cv2.VideoCapture(str(Path(info.path)))
    detector = ContentDetector(
        threshold=config.cut_threshold, min_scene_len=config.min_shot_frames
    )
    selector = _Selector(config, face_share)
    scale = min(1.0, config.detect_width / info.width)
    small_size = (max(1, round(info.width * scale)), max(1, round(info.height * scale)))
    cut_frames: list[int] = []
    dropped: Counter[str] = Counter()
    shot_start, next_sample_s, sampled, index = 0, 0.0, 0, 0
    recent_shot_s = math.inf

    try:
        while True:
            ok = capture.grab()
            if not ok:
                break
            ok, image = capture.retrieve()
            if not ok or image is None:
                break
            time_s = index / info.fps
            # Cuts need every frame, so this resize is the cheap one; the
            # measures below use an area-averaged copy of sampled frames only.
            small = cv2.resize(image, small_size, interpolation=cv2.INTER_LINEAR)

            # Step 1: cuts. A cut may be reported a few frames late, so frames
            # sampled since the cut move to the new shot.
            for cut in detector.process_frame(FrameTimecode(index, info.fps), small):
                cut_frames.append(cut.frame_num)
                selector.close_shot(len(cut_frames) - 1, before=cut.frame_num)
                recent_shot_s = (cut.frame_num - shot_start) / info.fps
                shot_start = cut.frame_num
                next_sample_s = min(next_sample_s, time_s)

            # Steps 2 to 4: sample, filter, deduplicate.
            if time_s >= next_sample_s:
                sampled += 1
                in_shot_s = time_s - shot_start / info.fps
                next_sample_s = time_s + config.interval_s(in_shot_s, recent_shot_s)
                small = cv2.resize(image, small_size, interpolation=cv2.INTER_AREA)
                reason = frame_drop_reason(small, config)
                if reason is not None:
                    dropped[reason] += 1
                else:
                    measures = _measure(small)
                    rgb = Image.fromarray(cv2.cvtColor(small, cv2.COLOR_BGR2RGB))
                    frame = SampledFrame(
                        index, time_s, -1, image, measures, imagehash.phash(rgb)
                    )
                    frame.score = informativeness(measures)
                    selector.offer(frame)
            index += 1
            if progress is not None:
                progress(1)
    finally:
        capture.release()
    selector.close_shot(len(cut_frames))

    if index == 0:
        raise BadInput(f"no decodable frame in {Path(info.path).name}")
    if index < 0.9 * info.frame_count - 2:
        raise BadInput(
            f"truncated or corrupt video: decoded {index} of {info.frame_count} frames"
        )
    starts = [0, *cut_frames]
    ends = [*cut_frames, index]
    shots = [Shot(i, s, e) for i, (s, e) in enumerate(zip(starts, ends, strict=True))]
    frames = sorted(selector.kept, key=lambda f: f.index)
    logger.debug(
        "selected %s frames from %s shots (%s sampled, dropped %s)",
        len(frames),
        len(shots),
        sampled,
        dict(dropped),
    )
    return FrameSelection(info, shots, frames, index, sampled, dropped)
