"""Features of a poster candidate: what the rankers and the bandits read.

Numeric features (``features`` of the catalog and of the events), with units;
image measures are taken on a copy at most 640 px on its long side
(:func:`workers.measures.analysis_copy`):

========================  ==================================================
``sharpness``             variance of the Laplacian of the grey image (grey
                          levels squared)
``contrast``              standard deviation of luma over 255 (0 to 1)
``brightness``            mean luma over 255 (0 to 1)
``dark_share``            share of pixels at luma <= 5 (0 to 1)
``bright_share``          share of pixels at luma >= 250 (0 to 1)
``colourfulness``         Hasler and Suesstrunk's metric (0 grey, ~100 vivid)
``noise_sigma``           estimated noise standard deviation (grey levels)
``quality``               :func:`workers.measures.quality_score` (0 to 1)
``face_count``            faces wholly inside the poster
``largest_face_share``    area of the largest face over the poster's (0 to 1)
``smile``                 1 when a smile was found on a face, else 0
``people_count``          people (HOG) overlapping the poster
``text_share``            area share of detected text (0 to 1)
``warmth``                mean (R - B) / 255 (-1 cool to 1 warm)
``saturation``            mean HSV saturation / 255 (0 to 1)
``dominant_<i>_r/g/b``    i-th dominant colour (0 to 255), i = 0, 1, 2
``dominant_<i>_share``    its share of the thumbnail's pixels (0 to 1)
========================  ==================================================

Tags: ``close-up`` (the largest face is at least 8% of the poster),
``group`` (three or more faces or people), ``landscape`` (no face and no
person), ``text-heavy`` (text covers at least 5%), ``smile``, ``warm`` or
``cool``, ``dark`` or ``bright``.

Details (catalog JSON only): dominant colours as hex, BRISQUE (only with the
contrib ``cv2.quality`` module and its model files; otherwise the reason it is
unavailable, never a made-up value) and cast presence, always reported as
unavailable: no face-embedding model installs offline, so faces cannot be
matched against a cast gallery.

Examples
--------
>>> import numpy as np
>>> from workers.features import dominant_colours
>>> colours = dominant_colours(np.full((20, 20, 3), 200, np.uint8), k=2, seed=1)
>>> colours[0][0]
(200, 200, 200)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from workers.measures import (
    analysis_copy,
    colourfulness,
    exposure,
    noise_sigma,
    quality_score,
    sharpness,
)
from workers.onnx_models import Box

__all__ = [
    "CAST_PRESENCE",
    "brisque",
    "candidate_features",
    "composition_tags",
    "dominant_colours",
]

CAST_PRESENCE = "unavailable: no face-embedding model installs offline"
_BRISQUE_DIR = Path("/usr/share/opencv4/quality")


def dominant_colours(
    bgr: np.ndarray, k: int = 3, seed: int = 7, iterations: int = 12
) -> list[tuple[tuple[int, int, int], float]]:
    """The ``k`` dominant RGB colours of a 32x32 thumbnail and their shares.

    Plain k-means (seeded with ``seed``; its own generator), largest first.
    """
    thumb = cv2.resize(bgr, (32, 32), interpolation=cv2.INTER_AREA)
    pixels = thumb.reshape(-1, 3)[:, ::-1].astype(np.float64)
    rng = np.random.default_rng(seed)
    centres = pixels[rng.choice(len(pixels), size=k, replace=False)]
    labels = np.zeros(len(pixels), int)
    for _ in range(iterations):
        dist = ((pixels[:, None, :] - centres[None, :, :]) ** 2).sum(2)
        labels = dist.argmin(1)
        for j in range(k):
            members = pixels[labels == j]
            if len(members):
                centres[j] = members.mean(0)
    shares = np.bincount(labels, minlength=k) / len(pixels)
    order = np.argsort(-shares)
    return [
        (tuple(int(round(c)) for c in centres[j]), float(shares[j]))  # type: ignore[misc]
        for j in order
    ]


def brisque(bgr: np.ndarray) -> float | str:
    """BRISQUE score (lower is better) or why it is unavailable."""
    quality = getattr(cv2, "quality", None)
    if quality is None:
        return "unavailable: cv2.quality is not in the headless OpenCV build"
    model = _BRISQUE_DIR / "brisque_model_live.yml"
    ranges = _BRISQUE_DIR / "brisque_range_live.yml"
    if not model.is_file() or not ranges.is_file():
        return f"unavailable: no BRISQUE model files in {_BRISQUE_DIR}"
    value = quality.QualityBRISQUE_compute(bgr, str(model), str(ranges))
    return float(value[0])


def composition_tags(features: dict[str, float]) -> list[str]:
    """Tags a reviewer and a ranker can filter on (module docstring)."""
    tags = []
    if features["largest_face_share"] >= 0.08:
        tags.append("close-up")
    if features["face_count"] >= 3 or features["people_count"] >= 3:
        tags.append("group")
    if features["face_count"] == 0 and features["people_count"] == 0:
        tags.append("landscape")
    if features["text_share"] >= 0.05:
        tags.append("text-heavy")
    if features["smile"]:
        tags.append("smile")
    tags.append("warm" if features["warmth"] >= 0 else "cool")
    if features["brightness"] < 0.3:
        tags.append("dark")
    elif features["brightness"] > 0.7:
        tags.append("bright")
    return tags


def _inside(box: Box, crop: tuple[int, int, int, int]) -> bool:
    return (
        box[0] >= crop[0]
        and box[1] >= crop[1]
        and box[2] <= crop[2]
        and box[3] <= crop[3]
    )


def _overlaps(box: Box, crop: tuple[int, int, int, int]) -> float:
    ix = max(0.0, min(box[2], crop[2]) - max(box[0], crop[0]))
    iy = max(0.0, min(box[3], crop[3]) - max(box[1], crop[1]))
    return ix * iy


def candidate_features(
    poster: np.ndarray,
    crop: tuple[int, int, int, int],
    faces: list[Box],
    smiles: list[bool],
    people: list[Box],
    text: list[Box],
    seed: int = 7,
) -> tuple[dict[str, float], list[str], dict[str, Any]]:
    """Numeric features, tags and details of one poster.

    ``poster`` is the final (cropped, maybe enhanced) image; boxes are in the
    frame's pixels and ``crop`` is the poster's window in that frame.
    """
    full = poster
    poster = analysis_copy(poster)
    grey = cv2.cvtColor(poster, cv2.COLOR_BGR2GRAY)
    mean, dark, bright = exposure(grey)
    area = float((crop[2] - crop[0]) * (crop[3] - crop[1]))
    whole = [i for i, face in enumerate(faces) if _inside(face, crop)]
    face_areas = [
        (faces[i][2] - faces[i][0]) * (faces[i][3] - faces[i][1]) for i in whole
    ]
    hsv = cv2.cvtColor(poster, cv2.COLOR_BGR2HSV)
    rgb_mean = poster.reshape(-1, 3).mean(0)[::-1]
    text_area = sum(_overlaps(box, crop) for box in text)
    features: dict[str, float] = {
        "sharpness": sharpness(grey),
        "contrast": float(grey.std()) / 255.0,
        "brightness": mean,
        "dark_share": dark,
        "bright_share": bright,
        "colourfulness": colourfulness(poster),
        "noise_sigma": noise_sigma(grey),
        "quality": quality_score(full),
        "face_count": float(len(whole)),
        "largest_face_share": max(face_areas, default=0.0) / area,
        "smile": float(any(smiles[i] for i in whole)),
        "people_count": float(sum(_overlaps(p, crop) > 0 for p in people)),
        "text_share": min(1.0, text_area / area),
        "warmth": float(rgb_mean[0] - rgb_mean[2]) / 255.0,
        "saturation": float(hsv[..., 1].mean()) / 255.0,
    }
    colours = dominant_colours(poster, seed=seed)
    for i, ((r, g, b), share) in enumerate(colours):
        features[f"dominant_{i}_r"] = float(r)
        features[f"dominant_{i}_g"] = float(g)
        features[f"dominant_{i}_b"] = float(b)
        features[f"dominant_{i}_share"] = share
    details: dict[str, Any] = {
        "dominant_colours": [
            {"hex": "#{:02x}{:02x}{:02x}".format(*rgb), "share": round(share, 4)}
            for rgb, share in colours
        ],
        "brisque": brisque(poster),
        "cast_presence": CAST_PRESENCE,
    }
    return features, composition_tags(features), details
