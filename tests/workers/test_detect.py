"""Detectors on real photos: CenterFace, Haar, smiles, PP-OCR text, saliency."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from workers.detect import nms, spectral_saliency


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area - inter)


@pytest.mark.parametrize("name", ["astronaut.png", "franz-kafka.jpg"])
def test_centerface_finds_the_one_face_where_haar_does(pipeline, image, name):
    photo = image(name)
    detector = pipeline.detector
    assert detector.face_backend == "centerface"
    faces, scores = detector.faces(photo)
    assert len(faces) == 1
    assert scores[0] > 0.8
    haar, _ = detector._haar_faces(photo)
    assert max(iou(faces[0], h) for h in haar) > 0.5


def test_no_face_on_a_cat(pipeline, image):
    faces, _ = pipeline.detector.faces(image("chelsea.png"))
    assert faces == []


def test_smile_on_the_astronaut_not_on_kafka(pipeline, image):
    detector = pipeline.detector
    for name, expected in (("astronaut.png", True), ("franz-kafka.jpg", False)):
        photo = image(name)
        faces, _ = detector.faces(photo)
        assert detector.smiles(photo, faces) == [expected]


def test_text_detector_finds_written_title(pipeline, image):
    photo = image("chelsea.png").copy()
    cv2.putText(
        photo, "KEY ART", (40, 260), cv2.FONT_HERSHEY_DUPLEX, 1.6, (255, 255, 255), 3
    )
    boxes = pipeline.detector.text(photo)
    title = (40, 225, 250, 270)
    assert any(iou(box, title) > 0.3 for box in boxes), boxes
    assert pipeline.detector.text(image("chelsea.png")) == []


def test_saliency_is_a_distribution_peaking_on_the_subject(image):
    photo = image("astronaut.png")
    saliency = spectral_saliency(photo)
    assert saliency.shape == (64, 64)
    assert saliency.sum() == pytest.approx(1.0)
    # The background is a plain wall on the left edge, the subject is central.
    assert saliency[:, 24:48].sum() > saliency[:, :8].sum() * 2


def test_nms_drops_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], float)
    assert nms(boxes, np.array([0.9, 0.8, 0.7]), 0.3) == [0, 2]


def test_letterbox_bars_are_found_on_a_real_frame(media):
    from workers.detect import active_area

    capture = cv2.VideoCapture(str(media("bigbuckbunny.mp4")))
    ok, frame = capture.read()
    capture.release()
    assert ok
    assert active_area(frame) == (0, 0, 1280, 720)
    boxed = cv2.copyMakeBorder(frame, 90, 90, 0, 0, cv2.BORDER_CONSTANT, value=0)
    assert active_area(boxed) == (0, 90, 1280, 810)
    pillar = cv2.copyMakeBorder(frame, 0, 0, 160, 160, cv2.BORDER_CONSTANT, value=0)
    assert active_area(pillar) == (160, 0, 1440, 720)


def test_letterboxed_frame_gives_posters_without_bars(pipeline, media):
    capture = cv2.VideoCapture(str(media("bigbuckbunny.mp4")))
    ok, frame = capture.read()
    capture.release()
    boxed = cv2.copyMakeBorder(frame, 90, 90, 0, 0, cv2.BORDER_CONSTANT, value=0)
    candidates = pipeline.run_image(boxed, "boxed")
    assert candidates
    for candidate in candidates:
        grey = cv2.cvtColor(candidate.image, cv2.COLOR_BGR2GRAY)
        assert grey[:3].max() >= 24 and grey[-3:].max() >= 24
        assert candidate.details["active_area"] == [0, 90, 1280, 810]
