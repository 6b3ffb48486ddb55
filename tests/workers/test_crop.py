"""The crop search: faces whole, thirds, text avoided, aspects exact."""

from __future__ import annotations

import numpy as np
import pytest

from workers.crop import CropWeights, parse_aspect, search_crops

ASPECTS = ["2:3", "16:9", "1:1", "4:5"]
UNIFORM = np.full((36, 64), 1 / (36 * 64))


def overlap(a, b):
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(
        0, min(a[3], b[3]) - max(a[1], b[1])
    )


def whole(face, box):
    return (
        face[0] >= box[0]
        and face[1] >= box[1]
        and face[2] <= box[2]
        and face[3] <= box[3]
    )


@pytest.mark.parametrize("name", ["astronaut.png", "franz-kafka.jpg"])
@pytest.mark.parametrize("aspect", ASPECTS)
def test_real_faces_are_kept_whole(pipeline, image, name, aspect):
    photo = image(name)
    found = pipeline.detector.detect(photo)
    size = (photo.shape[1], photo.shape[0])
    crops = search_crops(
        size, aspect, found.faces, found.text, found.people, found.saliency, keep=3
    )
    assert len(crops) >= 2
    for crop in crops:
        assert crop.faces_whole == crop.faces_total == 1
        assert all(whole(face, crop.box) for face in found.faces)
        x0, y0, x1, y1 = crop.box
        assert 0 <= x0 < x1 <= size[0] and 0 <= y0 < y1 <= size[1]
        assert (x1 - x0) / (y1 - y0) == pytest.approx(parse_aspect(aspect), rel=0.02)


def test_kept_crops_differ():
    crops = search_crops((1280, 720), "1:1", [], [], [], UNIFORM, keep=3)
    boxes = [c.box for c in crops]
    assert len(set(boxes)) == 3


def test_impossible_constraint_keeps_most_faces_and_says_so():
    # Two faces at the far ends of a wide frame: no 2:3 window holds both.
    faces = [(20.0, 300.0, 140.0, 440.0), (1100.0, 280.0, 1260.0, 460.0)]
    crops = search_crops((1280, 720), "2:3", faces, [], [], UNIFORM, keep=2)
    best = crops[0]
    assert best.faces_total == 2
    assert best.faces_whole == 1
    assert best.faces_cut == 0  # the other face is left out, not cut through
    x0, _, x1, _ = best.box
    assert x0 <= 1100 and x1 >= 1260  # the larger face is the one kept


def test_subject_lands_on_a_third():
    # A face in the middle of the frame, the salient region around it.
    face = (600.0, 200.0, 680.0, 300.0)
    saliency = np.zeros((36, 64))
    saliency[8:20, 26:38] = 1.0
    saliency /= saliency.sum()
    crops = search_crops((1280, 720), "16:9", [face], [], [], saliency, keep=1)
    crop = crops[0]
    assert crop.parts["thirds"] > 0.9
    x0, y0, x1, y1 = crop.box
    rel_x = (640 - x0) / (x1 - x0)
    assert min(abs(rel_x - 1 / 3), abs(rel_x - 2 / 3)) < 0.06


def test_text_is_not_cut_through():
    # A caption across the lower middle; no face, uniform saliency.
    text = [(300.0, 560.0, 980.0, 640.0)]
    crops = search_crops((1280, 720), "2:3", [], text, [], UNIFORM, keep=3)
    for crop in crops:
        overlaps = overlap(text[0], crop.box) > 0
        assert not overlaps or whole(text[0], crop.box), crop.box
        assert crop.parts["text"] == 1.0
    # Without the text term the same search does cut the caption: the term
    # is what moves the window.
    blind = search_crops(
        (1280, 720),
        "2:3",
        [],
        text,
        [],
        UNIFORM,
        keep=1,
        weights=CropWeights(saliency=1.0, thirds=0.0, text=0.0, face_size=0.0),
    )
    assert blind[0].parts["text"] < 1.0


def test_saliency_pulls_the_window():
    saliency = np.zeros((36, 64))
    saliency[10:20, 50:60] = 1.0
    saliency /= saliency.sum()
    crop = search_crops((1280, 720), "2:3", [], [], [], saliency, keep=1)[0]
    assert crop.box[0] > 600 and crop.parts["saliency"] > 0.9


@pytest.mark.parametrize("bad", ["2x3", "0:3", "a:b", "16:", ""])
def test_bad_aspects_are_refused(bad):
    with pytest.raises(ValueError, match="aspect"):
        parse_aspect(bad)
