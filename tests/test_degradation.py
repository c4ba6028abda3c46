"""The shared degradation chain: one draw per pair, deterministic, and each step as documented."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from deepfake.training.augment import jpeg_roundtrip
from deepfake.training.degradation import (
    Degradation,
    DegradationConfig,
    apply_degradation,
    h264_roundtrip,
    sample_degradation,
)

EVERY_STEP = DegradationConfig(
    tone=1, blur=1, noise=1, resize=1, h264=1, jpeg_heavy=1, jpeg_light=0, backdrop=1, denoise=1, studio=1
)
NOTHING = DegradationConfig(
    tone=0, blur=0, noise=0, resize=0, h264=0, jpeg_heavy=0, jpeg_light=0, backdrop=0, denoise=0, studio=0
)


@pytest.fixture(scope="module")
def crop(astronaut_rgb) -> np.ndarray:
    return cv2.resize(astronaut_rgb[20:260, 120:360], (224, 224), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def fake(crop) -> np.ndarray:
    """The crop with its centre altered, standing in for a pseudo-fake made from it."""
    out = crop.copy()
    out[80:150, 70:160] = cv2.GaussianBlur(crop, (0, 0), 2.0)[80:150, 70:160]
    return out


def test_one_draw_degrades_a_pair_identically(crop, fake):
    rng = np.random.default_rng(5)
    for _ in range(4):
        params = sample_degradation(rng, EVERY_STEP)  # drawn once for the pair
        seed = int(rng.integers(2**31))
        real_out, fake_out = apply_degradation(crop, params, seed), apply_degradation(fake, params, seed)
        assert real_out.shape == crop.shape and real_out.dtype == np.uint8
        # Identical inputs give identical outputs, so any difference between the pair is the manipulation's.
        assert np.array_equal(apply_degradation(fake.copy(), params, seed), fake_out)
        assert np.array_equal(apply_degradation(crop.copy(), params, seed), real_out)
        # The pair differs where the manipulation was, far less elsewhere (codecs spread it a little).
        diff = np.abs(real_out.astype(int) - fake_out.astype(int)).sum(axis=2)
        assert diff[:40, :40].mean() < diff[80:150, 70:160].mean()


def test_sampling_is_seeded_and_frozen():
    a = sample_degradation(np.random.default_rng(11), EVERY_STEP)
    b = sample_degradation(np.random.default_rng(11), EVERY_STEP)
    assert a == b and a.h264_crf is not None and a.jpeg_quality is not None and a.noise_sigma > 0
    assert a.backdrop_sigma > 0 and a.denoise_strength > 0 and len(a.studio_ground) == 6
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.jpeg_quality = 90  # type: ignore[misc]


def test_noise_follows_the_seed(crop):
    params = Degradation(noise_sigma=6.0)
    assert np.array_equal(apply_degradation(crop, params, 1), apply_degradation(crop, params, 1))
    assert not np.array_equal(apply_degradation(crop, params, 1), apply_degradation(crop, params, 2))


@pytest.mark.parametrize("size", [(224, 224), (45, 67), (31, 30)])
def test_h264_round_trip_changes_pixels_keeps_shape(crop, size):
    image = cv2.resize(crop, size[::-1], interpolation=cv2.INTER_AREA)
    out = h264_roundtrip(image, 35, "veryfast", (0.6, -0.3))
    assert out.shape == image.shape and out.dtype == np.uint8
    assert not np.array_equal(out, image)
    psnr = 10 * np.log10(255**2 / np.mean((out.astype(float) - image.astype(float)) ** 2))
    assert psnr > 22, "the decoded frame should still be the image"
    assert np.array_equal(h264_roundtrip(image, 35, "veryfast", (0.6, -0.3)), out)  # deterministic


def test_h264_quality_falls_with_crf(crop):
    def error(crf: int) -> float:
        return float(np.abs(h264_roundtrip(crop, crf, "medium", (0.5, 0.5)).astype(int) - crop).mean())

    assert error(23) < error(32) < error(40)


def test_jpeg_quality_ranges_are_honoured(crop):
    rng = np.random.default_rng(0)
    qualities = [sample_degradation(rng).jpeg_quality for _ in range(3000)]
    heavy = [q for q in qualities if q is not None and q <= 60]
    light = [q for q in qualities if q is not None and q > 60]
    assert min(heavy) == 20 and max(heavy) == 60 and min(light) == 61 and max(light) == 95
    assert abs(len(heavy) / 3000 - 0.45) < 0.03 and abs(len(light) / 3000 - 0.35) < 0.03
    assert abs(qualities.count(None) / 3000 - 0.2) < 0.03

    config = DegradationConfig(jpeg_heavy=1.0, jpeg_light=0.0, jpeg_heavy_quality=(33, 34))
    assert {sample_degradation(rng, config).jpeg_quality for _ in range(100)} == {33, 34}
    assert np.array_equal(apply_degradation(crop, Degradation(jpeg_quality=33), 0), jpeg_roundtrip(crop, 33))


def test_h264_crf_range_is_honoured():
    rng = np.random.default_rng(1)
    crfs = {sample_degradation(rng, DegradationConfig(h264=1.0)).h264_crf for _ in range(500)}
    assert crfs == set(range(23, 41))


def test_backdrop_defocuses_the_background_and_leaves_the_face():
    image = np.random.default_rng(0).integers(0, 256, (192, 192, 3), dtype=np.uint8)
    out = apply_degradation(image, Degradation(backdrop_sigma=8.0), 0).astype(float)
    # A corner (background) loses nearly all of its texture; the face's middle keeps every pixel.
    assert out[:24, :24].std() < image[:24, :24].std() / 4
    assert np.abs(out[66:126, 66:126] - image[66:126, 66:126]).max() <= 1


def test_studio_ground_replaces_the_background_and_leaves_the_face():
    image = np.random.default_rng(0).integers(0, 256, (192, 192, 3), dtype=np.uint8)
    out = apply_degradation(image, Degradation(studio_ground=(100, 110, 120, 60, 70, 80)), 0).astype(float)
    # The corners are the plain ground (its tint, lighter at the top), the face's middle is untouched.
    assert np.abs(out[:8, :8] - [100, 110, 120]).max() <= 2 and np.abs(out[-8:, -8:] - [60, 70, 80]).max() <= 2
    assert np.abs(out[66:126, 66:126] - image[66:126, 66:126]).max() <= 1
    draws = [sample_degradation(np.random.default_rng(i), DegradationConfig(studio=0.5)) for i in range(400)]
    assert 0.4 < np.mean([bool(d.studio_ground) for d in draws]) < 0.6
    assert sample_degradation(np.random.default_rng(0)).studio_ground == ()  # off unless asked for


def test_denoise_smooths_skin_and_keeps_edges():
    image = np.full((96, 96, 3), 60, np.uint8)
    image[:, 48:] = 190  # one hard edge, like a jaw against a bright background
    noisy = apply_degradation(image, Degradation(noise_sigma=6.0), 3).astype(float)
    smoothed = apply_degradation(image, Degradation(noise_sigma=6.0, denoise_strength=60.0), 3).astype(float)
    flat = (slice(10, 86), slice(8, 40))
    assert smoothed[flat].std() < noisy[flat].std() / 2
    assert smoothed[:, 51:56].mean() - smoothed[:, 40:45].mean() > 0.95 * 130


def test_clean_looks_are_drawn_as_configured():
    rng = np.random.default_rng(2)
    draws = [sample_degradation(rng) for _ in range(3000)]
    backdrops = [d.backdrop_sigma for d in draws if d.backdrop_sigma > 0]
    strengths = [d.denoise_strength for d in draws if d.denoise_strength > 0]
    assert abs(len(backdrops) / 3000 - 0.15) < 0.025 and abs(len(strengths) / 3000 - 0.15) < 0.025
    assert 3.0 <= min(backdrops) < 3.5 and 14.0 < max(backdrops) <= 15.0
    assert 30.0 <= min(strengths) < 32.0 and 78.0 < max(strengths) <= 80.0


def test_no_op_configuration_returns_the_input(crop):
    params = sample_degradation(np.random.default_rng(0), NOTHING)
    assert params == Degradation()
    assert np.array_equal(apply_degradation(crop, params, 0), crop)


@pytest.mark.parametrize(
    "bad",
    [
        {"blur": 1.5},
        {"h264": -0.1},
        {"denoise": 2.0},
        {"jpeg_heavy": 0.7, "jpeg_light": 0.5},
        {"jpeg_light_quality": (90, 80)},
    ],
)
def test_config_refuses_impossible_values(bad):
    with pytest.raises(ValueError):
        DegradationConfig(**bad)
