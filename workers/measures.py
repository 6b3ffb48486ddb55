"""Cheap image measures shared by frame selection, enhancement and features.

All functions take BGR ``uint8`` arrays and return plain floats, so they can
be unit tested on real photos without any model.

Examples
--------
>>> import numpy as np
>>> from workers.measures import entropy_bits
>>> round(entropy_bits(np.zeros((8, 8), np.uint8)), 3)
0.0
"""

from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = [
    "ANALYSIS_SIDE",
    "analysis_copy",
    "colourfulness",
    "entropy_bits",
    "exposure",
    "noise_sigma",
    "quality_score",
    "sharpness",
]


ANALYSIS_SIDE = 640


def analysis_copy(bgr: np.ndarray, long_side: int = ANALYSIS_SIDE) -> np.ndarray:
    """``bgr`` area-downscaled to at most ``long_side`` pixels on its long side.

    Quality and feature measures are taken on this copy: they cost the same
    for a 4K frame as for a 720p one, and sharpness and noise are comparable
    across source resolutions.
    """
    h, w = bgr.shape[:2]
    factor = long_side / max(h, w)
    if factor >= 1.0:
        return bgr
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)


def sharpness(grey: np.ndarray) -> float:
    """Variance of the Laplacian of a grey image (higher is sharper)."""
    return float(cv2.Laplacian(grey, cv2.CV_32F).var())


def entropy_bits(grey: np.ndarray) -> float:
    """Shannon entropy of the grey-level histogram, in bits (0 to 8)."""
    hist = np.bincount(grey.ravel(), minlength=256).astype(np.float64)
    p = hist[hist > 0] / hist.sum()
    return float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0 turns -0.0 into 0.0


def colourfulness(bgr: np.ndarray) -> float:
    """Hasler and Suesstrunk's colourfulness (0: grey; above 100: vivid)."""
    b, g, r = (bgr[..., i].astype(np.float32) for i in range(3))
    rg = r - g
    yb = 0.5 * (r + g) - b
    std = math.hypot(float(rg.std()), float(yb.std()))
    mean = math.hypot(float(rg.mean()), float(yb.mean()))
    return std + 0.3 * mean


def exposure(grey: np.ndarray) -> tuple[float, float, float]:
    """Mean luma (0 to 1), share of crushed blacks and share of clipped whites."""
    mean = float(grey.mean()) / 255.0
    dark = float((grey <= 5).mean())
    bright = float((grey >= 250).mean())
    return mean, dark, bright


def noise_sigma(grey: np.ndarray) -> float:
    """Estimated standard deviation of additive noise (Immerkaer's method).

    A 3x3 mask that cancels image structure up to second order is convolved
    with the image; the mean absolute response scales with the noise level.
    """
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
    response = cv2.filter2D(grey.astype(np.float32), -1, kernel)
    h, w = grey.shape[:2]
    if h < 3 or w < 3:
        return 0.0
    total = float(np.abs(response[1:-1, 1:-1]).sum())
    return total * math.sqrt(math.pi / 2) / (6.0 * (w - 2) * (h - 2))


def quality_score(bgr: np.ndarray) -> float:
    """No-reference quality in 0 to 1 used to accept or refuse an enhancement.

    The mean of five parts, each mapped to 0 to 1: sharpness (log of the
    Laplacian variance against 1,000), contrast (luma standard deviation
    against 64), colourfulness (against 100), exposure (1 at mid-grey, minus
    clipped shares) and cleanliness (1 minus the noise sigma against 12).
    It is a heuristic, not a learnt model: it ranks versions of one image, it
    does not compare different images well. Measured on
    :func:`analysis_copy`.
    """
    bgr = analysis_copy(bgr)
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    sharp = min(1.0, math.log1p(sharpness(grey)) / math.log1p(1000.0))
    contrast = min(1.0, float(grey.std()) / 64.0)
    colour = min(1.0, colourfulness(bgr) / 100.0)
    mean, dark, bright = exposure(grey)
    expo = max(0.0, 1.0 - 2.0 * abs(mean - 0.5) - dark - bright)
    clean = max(0.0, 1.0 - noise_sigma(grey) / 12.0)
    return (sharp + contrast + colour + expo + clean) / 5.0
