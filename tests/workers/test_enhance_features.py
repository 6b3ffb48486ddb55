"""Enhancement is measured, features are in their units, embeddings are sane."""

from __future__ import annotations

import numpy as np
import pytest

from workers.embed import classical_descriptor
from workers.enhance import enhance
from workers.features import (
    CAST_PRESENCE,
    brisque,
    candidate_features,
    dominant_colours,
)
from workers.measures import noise_sigma, quality_score


@pytest.mark.parametrize("name", ["astronaut.png", "chelsea.png", "franz-kafka.jpg"])
def test_enhancement_never_measures_worse(image, name):
    photo = image(name)
    result = enhance(photo)
    assert result.quality_after >= result.quality_before or not result.kept_enhanced
    assert quality_score(result.image) >= quality_score(photo) - 1e-9
    if not result.kept_enhanced:
        assert result.image is photo


def test_noisy_photo_is_denoised_and_clean_one_is_not(image):
    photo = image("chelsea.png")
    clean = enhance(photo)
    assert not clean.denoised
    rng = np.random.default_rng(3)
    noisy = np.clip(photo + rng.normal(0, 12, photo.shape), 0, 255).astype(np.uint8)
    assert noise_sigma(noisy[..., 1]) > 8
    result = enhance(noisy)
    assert result.denoised
    if result.kept_enhanced:
        assert noise_sigma(result.image[..., 1]) < noise_sigma(noisy[..., 1])


def test_features_of_a_real_portrait(pipeline, image):
    photo = image("astronaut.png")
    found = pipeline.detector.detect(photo)
    crop = (0, 0, photo.shape[1], photo.shape[0])
    features, tags, details = candidate_features(
        photo, crop, found.faces, found.smiles, found.people, found.text
    )
    assert features["face_count"] == 1
    assert 0.03 < features["largest_face_share"] < 0.1
    assert features["smile"] == 1.0
    for name in ("brightness", "contrast", "saturation", "text_share", "quality"):
        assert 0.0 <= features[name] <= 1.0, name
    assert -1.0 <= features["warmth"] <= 1.0
    assert features["warmth"] > 0  # an orange suit on a grey wall
    assert features["colourfulness"] > 20
    assert "smile" in tags and "landscape" not in tags
    assert details["cast_presence"] == CAST_PRESENCE
    assert details["brisque"].startswith("unavailable")
    assert len(details["dominant_colours"]) == 3
    shares = [features[f"dominant_{i}_share"] for i in range(3)]
    assert sum(shares) == pytest.approx(1.0)
    assert shares == sorted(shares, reverse=True)


def test_landscape_and_text_heavy_tags(pipeline, image):
    photo = image("chelsea.png")
    crop = (0, 0, photo.shape[1], photo.shape[0])
    text = [(0.0, 0.0, 451.0, 60.0)]
    _, tags, _ = candidate_features(photo, crop, [], [], [], text)
    assert "landscape" in tags and "text-heavy" in tags


def test_dominant_colours_are_seeded(image):
    photo = image("chelsea.png")
    assert dominant_colours(photo, seed=5) == dominant_colours(photo, seed=5)


def test_brisque_is_reported_unavailable_not_invented(image):
    value = brisque(image("chelsea.png"))
    assert isinstance(value, str) and "unavailable" in value


def test_embeddings_are_unit_and_tell_photos_apart(pipeline, image):
    embed = pipeline.embedder
    assert embed.model == "open-nsfw-resnet50"
    cat = embed(image("chelsea.png"))
    astronaut = embed(image("astronaut.png"))
    cat_shifted = embed(image("chelsea.png")[10:, 15:])
    assert cat.shape == (1024,)
    assert np.linalg.norm(cat) == pytest.approx(1.0, abs=1e-5)
    assert float(cat @ cat_shifted) > float(cat @ astronaut)
    classic = classical_descriptor(image("chelsea.png"))
    assert classic.shape == (1024,)
    assert np.linalg.norm(classic) == pytest.approx(1.0, abs=1e-5)
