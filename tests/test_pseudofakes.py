"""Pseudo-fakes change pixels only inside the mask they return."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from deepfake.faces import FaceDetector, crop_face
from deepfake.training.pseudofakes import (
    PARTS,
    decoder_blend,
    make_pseudo_fake,
    part_swap,
    resynthesize,
    self_blend,
)


@pytest.fixture(scope="module")
def faces(hopper_rgb, astronaut_rgb):
    detector = FaceDetector()
    out = []
    for image in (hopper_rgb, astronaut_rgb):
        face = detector.detect(image)[0]
        crop = crop_face(image, face.box, 1.6, 288)
        out.append((crop.pixels, crop.landmarks_in_crop(face.landmarks)))
    return out


def _reconstruction(image: np.ndarray) -> np.ndarray:
    """A stand-in for the crop's TAEF2 reconstruction: the same picture, re-rendered at half resolution."""
    h, w = image.shape[:2]
    return cv2.resize(cv2.resize(image, (w // 2, h // 2), interpolation=cv2.INTER_AREA), (w, h))


def _check(original: np.ndarray, fake) -> None:
    assert fake.image.shape == original.shape and fake.image.dtype == np.uint8
    assert fake.mask.shape == original.shape[:2] and fake.mask.dtype == np.float32
    assert 0.0 <= fake.mask.min() and fake.mask.max() <= 1.0
    outside = fake.mask == 0
    assert np.array_equal(fake.image[outside], original[outside]), "pixels changed outside the mask"
    inside = fake.mask >= 0.9 * fake.mask.max()  # the blend's strength is random (0.25 to 1)
    assert fake.mask.max() >= 0.25 and inside.sum() > 100, "the mask covers nothing"
    changed = np.abs(fake.image.astype(int) - original.astype(int)).sum(axis=2) > 0
    assert changed[inside].mean() > 0.3, "the mask's inside was not altered"


@pytest.mark.parametrize("part", sorted(set(PARTS)))
def test_self_blend_only_inside_mask(faces, part):
    image, landmarks = faces[0]
    for seed in range(3):
        _check(image, self_blend(image, landmarks, np.random.default_rng(seed), part))


@pytest.mark.parametrize("part", ["face", "eyes", "mouth"])
def test_part_swap_only_inside_mask(faces, part):
    (image, landmarks), (donor, donor_landmarks) = faces
    _check(image, part_swap(image, landmarks, donor, donor_landmarks, np.random.default_rng(1), part))


def test_resynthesis_only_inside_mask(faces):
    image, landmarks = faces[1]
    for seed in range(8):
        fake = resynthesize(image, landmarks, np.random.default_rng(seed))
        assert fake.part == "face"
        _check(image, fake)


def test_resynthesis_never_smooths_the_whole_crop(faces):
    """Global smoothing alone is no manipulation: every resynthesis keeps a boundary and real pixels outside."""
    image, landmarks = faces[0]
    for seed in range(20):
        fake = resynthesize(image, landmarks, np.random.default_rng(seed))
        assert (fake.mask == 0).mean() > 0.2


@pytest.mark.parametrize("part", sorted(set(PARTS)))
def test_decoder_blend_only_inside_mask(faces, part):
    image, landmarks = faces[0]
    reconstruction = _reconstruction(image)
    for seed in range(3):
        fake = decoder_blend(image, reconstruction, landmarks, np.random.default_rng(seed), part)
        assert fake.kind == "decoder_blend" and fake.part == part
        _check(image, fake)
        # Where the mask is full strength, the pixels are the reconstruction's.
        full = fake.mask == 1.0
        assert np.array_equal(fake.image[full], reconstruction[full])


def test_decoder_blend_needs_a_matching_reconstruction(faces):
    image, landmarks = faces[0]
    with pytest.raises(ValueError):
        decoder_blend(image, _reconstruction(image)[:-8], landmarks, np.random.default_rng(0))


def test_mixture_is_seeded(faces):
    image, landmarks = faces[0]
    a = make_pseudo_fake(image, landmarks, np.random.default_rng(7), faces[1])
    b = make_pseudo_fake(image, landmarks, np.random.default_rng(7), faces[1])
    assert a.kind == b.kind and np.array_equal(a.image, b.image)
    kinds = {make_pseudo_fake(image, landmarks, np.random.default_rng(s), faces[1]).kind for s in range(20)}
    assert kinds == {"self_blend", "part_swap", "resynthesis"}
    reconstruction = _reconstruction(image)
    kinds = {
        make_pseudo_fake(image, landmarks, np.random.default_rng(s), faces[1], reconstruction).kind for s in range(30)
    }
    assert kinds == {"self_blend", "part_swap", "resynthesis", "decoder_blend"}
