"""From a video (or a photo) to scored poster candidates, in memory.

1. :func:`workers.source.probe_video` refuses bad input;
2. :func:`workers.frames.select_frames` decodes once and keeps the best
   frames (at most ``max_frames``);
3. for each kept frame: letterbox and pillarbox bars are cut off
   (:func:`workers.detect.active_area`, crop boxes are then relative to the
   remaining picture); :class:`workers.detect.Detector` finds faces, smiles,
   people, text and saliency; :func:`workers.enhance.enhance` improves the
   frame once, measured; :func:`workers.crop.search_crops` picks the best
   ``crops_per_aspect`` windows per aspect ratio;
4. each window becomes a :class:`Candidate` with its features, tags and
   embedding. Its score is ``0.7 crop score + 0.3 frame informativeness``
   (both 0 to 1), the number ``auto_approve_score`` is compared with.

Poster ids are derived from the video id, the job's event id, frame number,
aspect and rank, so a retried job produces the same ids and overwrites the
same files, while a new event for the same video never touches the files of
posters already reviewed.

Examples
--------
>>> from workers.pipeline import PipelineConfig, PosterPipeline  # doctest: +SKIP
>>> pipeline = PosterPipeline(PipelineConfig())  # doctest: +SKIP
>>> result = pipeline.run_video("bikes.mp4", "v1")  # doctest: +SKIP
>>> len(result.candidates) > 0  # doctest: +SKIP
True
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from workers.crop import parse_aspect, search_crops
from workers.detect import Detector, active_area
from workers.embed import Embedder
from workers.enhance import enhance
from workers.features import candidate_features
from workers.frames import (
    FrameSelection,
    SamplingConfig,
    informativeness,
    select_frames,
)
from workers.measures import colourfulness, entropy_bits, sharpness
from workers.source import VideoLimits, probe_video

__all__ = ["Candidate", "PipelineConfig", "PosterPipeline", "VideoResult"]

logger = logging.getLogger("workers")


@dataclass(frozen=True)
class PipelineConfig:
    """What the pipeline does; :meth:`from_settings` reads the settings."""

    aspects: tuple[str, ...] = ("2:3", "16:9", "1:1")
    crops_per_aspect: int = 2
    max_frames: int = 12
    max_side: int = 1080
    limits: VideoLimits = field(default_factory=VideoLimits)
    cache: Path | None = None
    seed: int = 7

    def __post_init__(self) -> None:
        for aspect in self.aspects:
            parse_aspect(aspect)

    @classmethod
    def from_settings(cls, settings: Any) -> PipelineConfig:
        """Build from keyart settings (``poster_*`` and ``video_*``)."""
        return cls(
            aspects=tuple(a.strip() for a in settings.poster_aspects.split(",")),
            crops_per_aspect=settings.poster_crops_per_aspect,
            max_frames=settings.poster_max_frames,
            limits=VideoLimits(
                settings.video_max_seconds,
                settings.video_max_pixels,
                settings.video_min_side,
            ),
            cache=Path(settings.data_cache),
            seed=settings.seed,
        )


@dataclass
class Candidate:
    """One poster made from one frame, before it is stored."""

    poster_id: str
    aspect: str
    image: np.ndarray
    frame_index: int
    frame_time_s: float
    shot: int
    crop_box: tuple[int, int, int, int]
    score: float
    faces_whole: int
    faces_total: int
    features: dict[str, float]
    tags: list[str]
    details: dict[str, Any]
    embedding: np.ndarray

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


@dataclass
class VideoResult:
    """Candidates of one video and what the frame selection saw."""

    selection: FrameSelection
    candidates: list[Candidate]


def poster_id_for(
    video_id: str, frame_index: int, aspect: str, rank: int, salt: str = ""
) -> str:
    """Stable id of a candidate: the same inputs always give the same id.

    ``salt`` is the job's event id: a retry of one event reproduces its ids,
    a new event for the same video gets new ones.
    """
    text = f"{video_id}|{salt}|{frame_index}|{aspect}|{rank}"
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:20]


class PosterPipeline:
    """Models are loaded once per pipeline; one pipeline serves many jobs."""

    def __init__(self, config: PipelineConfig | None = None) -> None:
        self.config = config or PipelineConfig()
        self.detector = Detector(self.config.cache)
        self.embedder = Embedder(self.config.cache)

    def run_video(
        self,
        path: str | Path,
        video_id: str,
        kind: str = "other",
        progress: Callable[[int], None] | None = None,
        on_start: Callable[[int], None] | None = None,
        salt: str = "",
    ) -> VideoResult:
        """Make every candidate of a video (steps of the module docstring).

        ``on_start`` receives the announced frame count (for a progress bar),
        ``progress`` each batch of decoded frames, then each finished frame.

        Raises
        ------
        workers.source.BadInput
            For a video keyart refuses, with the reason.
        """
        info = probe_video(path, self.config.limits)
        if on_start is not None:
            on_start(info.frame_count)
        sampling = SamplingConfig(kind=kind, max_frames=self.config.max_frames)
        selection = select_frames(info, sampling, self.detector.face_share, progress)
        candidates: list[Candidate] = []
        for frame in selection.frames:
            candidates += self.frame_candidates(
                frame.image,
                video_id,
                frame.index,
                frame.time_s,
                frame.shot,
                frame.score,
                salt,
            )
        logger.info(
            "video %s: %s shots, %s frames, %s candidates",
            video_id,
            len(selection.shots),
            len(selection.frames),
            len(candidates),
            extra={"video_id": video_id},
        )
        return VideoResult(selection, candidates)

    def run_image(
        self, image: np.ndarray, video_id: str, salt: str = ""
    ) -> list[Candidate]:
        """Candidates of a single photo (treated as frame 0 of one shot)."""
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        measures = {
            "sharpness": sharpness(grey),
            "entropy": entropy_bits(grey),
            "colourfulness": colourfulness(image),
        }
        score = informativeness(measures, self.detector.face_share(image))
        return self.frame_candidates(image, video_id, 0, 0.0, 0, score, salt)

    def frame_candidates(
        self,
        image: np.ndarray,
        video_id: str,
        frame_index: int,
        time_s: float,
        shot: int,
        frame_score: float,
        salt: str = "",
    ) -> list[Candidate]:
        """Drop bars, detect, enhance once, crop per aspect, describe each crop."""
        ax0, ay0, ax1, ay1 = active_area(image)
        image = image[ay0:ay1, ax0:ax1]
        found = self.detector.detect(image)
        enhanced = enhance(image)
        height, width = image.shape[:2]
        out = []
        for aspect in self.config.aspects:
            crops = search_crops(
                (width, height),
                aspect,
                found.faces,
                found.text,
                found.people,
                found.saliency,
                keep=self.config.crops_per_aspect,
            )
            for rank, crop in enumerate(crops):
                x0, y0, x1, y1 = crop.box
                poster = enhanced.image[y0:y1, x0:x1]
                long_side = max(poster.shape[:2])
                if long_side > self.config.max_side:
                    factor = self.config.max_side / long_side
                    poster = cv2.resize(
                        poster,
                        (
                            round(poster.shape[1] * factor),
                            round(poster.shape[0] * factor),
                        ),
                        interpolation=cv2.INTER_AREA,
                    )
                features, tags, details = candidate_features(
                    poster,
                    crop.box,
                    found.faces,
                    found.smiles,
                    found.people,
                    found.text,
                    seed=self.config.seed,
                )
                features["crop_score"] = crop.score
                features["informativeness"] = frame_score
                features.update({f"crop_{k}": v for k, v in crop.parts.items()})
                details.update(
                    {
                        "crop_box": list(crop.box),
                        "frame_size": [width, height],
                        "active_area": [ax0, ay0, ax1, ay1],
                        "faces": [list(map(round, f)) for f in found.faces],
                        "faces_whole": crop.faces_whole,
                        "faces_total": crop.faces_total,
                        "faces_cut": crop.faces_cut,
                        "face_detector": found.face_backend,
                        "enhanced": enhanced.kept_enhanced,
                        "denoised": enhanced.denoised and enhanced.kept_enhanced,
                        "quality_before": round(enhanced.quality_before, 4),
                        "quality_after": round(enhanced.quality_after, 4),
                        "embedding_model": self.embedder.model,
                    }
                )
                out.append(
                    Candidate(
                        poster_id=poster_id_for(
                            video_id, frame_index, aspect, rank, salt
                        ),
                        aspect=aspect,
                        image=np.ascontiguousarray(poster),
                        frame_index=frame_index,
                        frame_time_s=time_s,
                        shot=shot,
                        crop_box=crop.box,
                        score=0.7 * crop.score + 0.3 * frame_score,
                        faces_whole=crop.faces_whole,
                        faces_total=crop.faces_total,
                        features=features,
                        tags=[*tags, f"aspect:{aspect}"],
                        details=details,
                        embedding=self.embedder(poster),
                    )
                )
        return out
