"""The crop search: the best windows of a frame for each placement's aspect.

This is what keyart exists for, so the search and its score are spelt out.

For one frame and one aspect ratio (``"2:3"``, ``"16:9"``, ``"1:1"``...):

1. Windows. The largest window of that aspect that fits the frame is scaled
   by each of ``scales``; each size is placed on a regular grid of positions,
   plus positions that put the main subject on a rule-of-thirds point and
   positions whose edges meet the faces' union box (so a window that keeps
   every face whole is found whenever one exists).
2. Faces. Each face box, padded by ``face_pad`` of its size on every side
   (hair, chin), is *whole* when the window contains it, *cut* when the
   window overlaps it without containing it. Keeping every face whole is a
   hard constraint: windows that do so always rank above windows that do
   not. When no window can (faces spread wider than the window), the ranking
   prefers the fewest cut faces, then the most and largest whole faces, and
   the crop records how many faces it kept (``faces_whole``/``faces_total``).
3. Score, each part in 0 to 1, weighted by :class:`CropWeights`:

   - ``saliency``: share of the frame's spectral-residual saliency inside the
     window;
   - ``thirds``: 1 when the main subject (the largest face's eye line, else
     the largest person's head, else the saliency peak) sits on a thirds
     intersection (or, for portrait and square windows, on the upper third of
     the centre line), falling linearly to 0 at a sixth of the window's
     diagonal away, and 0 when the subject is outside;
   - ``text``: 1 minus the share of text area in boxes the window cuts through
     (text wholly in or wholly out is fine);
   - ``face_size``: 1 when the main face is 12 to 35% of the window's height,
     falling with the log of the ratio outside that band; 0.5 without faces.

   ``score = 0.45 saliency + 0.25 thirds + 0.2 text + 0.1 face_size``, halved
   when a face is not whole.
4. The best ``keep`` windows are returned, skipping any window overlapping an
   already chosen one by more than ``max_overlap`` (intersection over union),
   so the few crops kept per frame differ.

Examples
--------
>>> import numpy as np
>>> from workers.crop import search_crops
>>> saliency = np.full((36, 64), 1 / (36 * 64))
>>> crops = search_crops((1280, 720), "2:3", [(900.0, 100.0, 1000.0, 230.0)],
...                      [], [], saliency, keep=1)
>>> crops[0].faces_whole, crops[0].faces_total
(1, 1)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workers.onnx_models import Box

__all__ = ["Crop", "CropWeights", "parse_aspect", "search_crops"]


@dataclass(frozen=True)
class CropWeights:
    """Weights of the crop score's parts (they sum to 1)."""

    saliency: float = 0.45
    thirds: float = 0.25
    text: float = 0.2
    face_size: float = 0.1


@dataclass(frozen=True)
class Crop:
    """A chosen window of a frame, in integer pixels ``(x0, y0, x1, y1)``."""

    aspect: str
    box: tuple[int, int, int, int]
    score: float
    parts: dict[str, float]
    faces_whole: int
    faces_total: int
    faces_cut: int

    @property
    def width(self) -> int:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> int:
        return self.box[3] - self.box[1]


def parse_aspect(aspect: str) -> float:
    """Width over height of ``"W:H"``.

    Raises
    ------
    ValueError
        For anything but two positive integers separated by a colon.
    """
    w, sep, h = aspect.partition(":")
    if not sep or not w.isdigit() or not h.isdigit() or int(w) == 0 or int(h) == 0:
        raise ValueError(f"aspect must look like 2:3, got {aspect!r}")
    return int(w) / int(h)


def _subject(
    faces: np.ndarray, people: list[Box], saliency: np.ndarray, size: tuple[int, int]
) -> tuple[float, float]:
    if len(faces):
        areas = (faces[:, 2] - faces[:, 0]) * (faces[:, 3] - faces[:, 1])
        x0, y0, x1, y1 = faces[int(np.argmax(areas))]
        return (x0 + x1) / 2, y0 + 0.4 * (y1 - y0)
    if people:
        x0, y0, x1, y1 = max(people, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
        return (x0 + x1) / 2, y0 + 0.15 * (y1 - y0)
    row, col = np.unravel_index(int(np.argmax(saliency)), saliency.shape)
    return (
        (col + 0.5) * size[0] / saliency.shape[1],
        (row + 0.5) * size[1] / saliency.shape[0],
    )


def _windows(
    size: tuple[int, int],
    ratio: float,
    scales: tuple[float, ...],
    grid: int,
    subject: tuple[float, float],
    faces: np.ndarray,
) -> np.ndarray:
    width, height = size
    full_w = min(float(width), height * ratio)
    out = []
    for scale in scales:
        w = full_w * scale
        h = w / ratio
        free_x, free_y = width - w, height - h
        xs = list(np.linspace(0, free_x, grid if free_x > 1 else 1))
        ys = list(np.linspace(0, free_y, grid if free_y > 1 else 1))
        for tx in (1 / 3, 1 / 2, 2 / 3):
            xs.append(subject[0] - tx * w)
        for ty in (1 / 3, 1 / 2, 2 / 3):
            ys.append(subject[1] - ty * h)
        if len(faces):
            xs += [faces[:, 0].min(), faces[:, 2].max() - w]
            ys += [faces[:, 1].min(), faces[:, 3].max() - h]
        xs_arr = np.clip(np.array(xs), 0, max(0.0, free_x))
        ys_arr = np.clip(np.array(ys), 0, max(0.0, free_y))
        gx, gy = np.meshgrid(np.unique(xs_arr.round(1)), np.unique(ys_arr.round(1)))
        gx, gy = gx.ravel(), gy.ravel()
        out.append(np.stack([gx, gy, gx + w, gy + h], 1))
    return np.concatenate(out)


def _saliency_mass(windows: np.ndarray, saliency: np.ndarray, size: tuple[int, int]):
    sh, sw = saliency.shape
    integral = np.zeros((sh + 1, sw + 1))
    integral[1:, 1:] = saliency.cumsum(0).cumsum(1)
    fx, fy = sw / size[0], sh / size[1]
    x0 = np.clip(np.round(windows[:, 0] * fx).astype(int), 0, sw)
    x1 = np.clip(np.round(windows[:, 2] * fx).astype(int), 0, sw)
    y0 = np.clip(np.round(windows[:, 1] * fy).astype(int), 0, sh)
    y1 = np.clip(np.round(windows[:, 3] * fy).astype(int), 0, sh)
    total = integral[-1, -1] or 1.0
    mass = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    return mass / total


def _overlap_area(windows: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection area of every window (rows) with every box (columns)."""
    ix = np.clip(
        np.minimum(windows[:, None, 2], boxes[None, :, 2])
        - np.maximum(windows[:, None, 0], boxes[None, :, 0]),
        0,
        None,
    )
    iy = np.clip(
        np.minimum(windows[:, None, 3], boxes[None, :, 3])
        - np.maximum(windows[:, None, 1], boxes[None, :, 1]),
        0,
        None,
    )
    return ix * iy


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = float(_overlap_area(a[None], b[None])[0, 0])
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area - inter + 1e-9)


def search_crops(
    size: tuple[int, int],
    aspect: str,
    faces: list[Box],
    text: list[Box],
    people: list[Box],
    saliency: np.ndarray,
    keep: int = 2,
    weights: CropWeights | None = None,
    scales: tuple[float, ...] = (1.0, 0.85, 0.7, 0.55),
    grid: int = 9,
    face_pad: float = 0.08,
    max_overlap: float = 0.7,
) -> list[Crop]:
    """Return the ``keep`` best crops of a ``size`` (width, height) frame.

    Steps and score are those of the module docstring.
    """
    weights = weights or CropWeights()
    ratio = parse_aspect(aspect)
    width, height = size

    # Step 1: windows.
    face_arr = np.array(faces, dtype=np.float64).reshape(-1, 4)
    if len(face_arr):
        pad_x = (face_arr[:, 2] - face_arr[:, 0]) * face_pad
        pad_y = (face_arr[:, 3] - face_arr[:, 1]) * face_pad
        face_arr = np.stack(
            [
                np.maximum(0, face_arr[:, 0] - pad_x),
                np.maximum(0, face_arr[:, 1] - pad_y),
                np.minimum(width, face_arr[:, 2] + pad_x),
                np.minimum(height, face_arr[:, 3] + pad_y),
            ],
            1,
        )
    subject = _subject(face_arr, people, saliency, size)
    windows = _windows(size, ratio, scales, grid, subject, face_arr)
    win_w = windows[:, 2] - windows[:, 0]
    win_h = windows[:, 3] - windows[:, 1]

    # Step 2: faces whole or cut.
    n = len(windows)
    whole = np.zeros(n, int)
    cut = np.zeros(n, int)
    whole_area = np.zeros(n)
    if len(face_arr):
        area = (face_arr[:, 2] - face_arr[:, 0]) * (face_arr[:, 3] - face_arr[:, 1])
        inter = _overlap_area(windows, face_arr)
        inside = inter >= area[None, :] - 1e-6
        whole = inside.sum(1)
        cut = ((inter > 1e-6) & ~inside).sum(1)
        whole_area = (inside * area[None, :]).sum(1)
    all_whole = whole == len(face_arr)

    # Step 3: score.
    saliency_part = _saliency_mass(windows, saliency, size)
    sx, sy = subject
    rel_x = (sx - windows[:, 0]) / win_w
    rel_y = (sy - windows[:, 1]) / win_h
    targets = [(1 / 3, 1 / 3), (2 / 3, 1 / 3), (1 / 3, 2 / 3), (2 / 3, 2 / 3)]
    if ratio <= 1.0:
        targets.append((1 / 2, 1 / 3))
    dist = np.min(
        [np.hypot((rel_x - tx) * win_w, (rel_y - ty) * win_h) for tx, ty in targets], 0
    )
    thirds_part = np.clip(1 - dist / (np.hypot(win_w, win_h) / 6), 0, 1)
    thirds_part[(rel_x < 0) | (rel_x > 1) | (rel_y < 0) | (rel_y > 1)] = 0.0
    text_part = np.ones(n)
    if text:
        text_arr = np.array(text, dtype=np.float64).reshape(-1, 4)
        text_area = (text_arr[:, 2] - text_arr[:, 0]) * (
            text_arr[:, 3] - text_arr[:, 1]
        )
        inter = _overlap_area(windows, text_arr)
        cut_text = (inter > 1e-6) & (inter < text_area[None, :] - 1e-6)
        text_part = 1 - (cut_text * text_area[None, :]).sum(1) / max(
            float(text_area.sum()), 1e-9
        )
    face_part = np.full(n, 0.5)
    if len(face_arr):
        main = int(
            np.argmax(
                (face_arr[:, 2] - face_arr[:, 0]) * (face_arr[:, 3] - face_arr[:, 1])
            )
        )
        share = (face_arr[main, 3] - face_arr[main, 1]) / win_h
        low, high = 0.12, 0.35
        off = np.where(
            share < low, np.log(low / share), np.log(np.maximum(share, 1e-9) / high)
        )
        face_part = np.clip(1 - np.maximum(off, 0) / np.log(4), 0, 1)
    score = (
        weights.saliency * saliency_part
        + weights.thirds * thirds_part
        + weights.text * text_part
        + weights.face_size * face_part
    )
    score = np.where(all_whole, score, score * 0.5)

    # Step 4: rank (faces first) and keep distinct windows.
    order = np.lexsort((-score, -whole_area, -whole, cut, ~all_whole))
    chosen: list[int] = []
    for i in order:
        if len(chosen) == keep:
            break
        if all(_iou(windows[i], windows[j]) <= max_overlap for j in chosen):
            chosen.append(int(i))
    crops = []
    for i in chosen:
        x0 = int(round(windows[i, 0]))
        y0 = int(round(windows[i, 1]))
        x1 = min(width, x0 + max(1, int(round(win_w[i]))))
        y1 = min(height, y0 + max(1, int(round(win_h[i]))))
        crops.append(
            Crop(
                aspect=aspect,
                box=(x0, y0, x1, y1),
                score=float(score[i]),
                parts={
                    "saliency": float(saliency_part[i]),
                    "thirds": float(thirds_part[i]),
                    "text": float(text_part[i]),
                    "face_size": float(face_part[i]),
                },
                faces_whole=int(whole[i]),
                faces_total=len(face_arr),
                faces_cut=int(cut[i]),
            )
        )
    return crops
