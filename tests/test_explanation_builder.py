from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from explainability import (
    SuspiciousRegion,
    cam_to_image,
    colorize,
    describe_regions,
    draw_regions,
    find_suspicious_regions,
    merge_cams,
    overlay,
)

# The face detector's order: left eye, right eye, nose, mouth left, mouth right (as seen); eyes 20 px apart
LANDMARKS = np.array(
    [[40, 40], [60, 40], [50, 55], [42, 70], [58, 70]], dtype=np.float32
)
FACE_BOX = (20.0, 20.0, 80.0, 95.0)


def image(height: int = 40, width: int = 50) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)


def region(parts: list[str], share: float) -> SuspiciousRegion:
    return SuspiciousRegion(
        box=(0.0, 0.0, 1.0, 1.0), mean_activation=0.8, share=share, parts=parts
    )


def blob_map(
    blobs: list[tuple[slice, slice, float]], shape: tuple[int, int] = (100, 100)
) -> np.ndarray:
    cam = np.zeros(shape, np.float32)
    for rows, cols, value in blobs:
        cam[rows, cols] = value
    return cam


def test_colorize_is_rgb_jet() -> None:
    colours = colorize(np.array([[0.0, 1.0]], dtype=np.float32))
    assert colours.dtype == np.uint8 and colours.shape == (1, 2, 3)
    cold, hot = colours[0]
    assert cold[2] > cold[0]  # JET's low end is blue, in RGB order
    assert hot[0] > hot[2]


def test_overlay_opacity() -> None:
    picture = image()
    cam = np.zeros((20, 25), np.float32)  # half resolution: resized to the image
    cam[5:10, 5:10] = 1.0
    np.testing.assert_array_equal(overlay(picture, cam, opacity=0.0), picture)
    full = overlay(picture, cam, opacity=1.0)
    assert full.dtype == np.uint8 and full.shape == picture.shape
    np.testing.assert_array_equal(
        full[15, 15], colorize(np.ones((1, 1), np.float32))[0, 0]
    )
    # Cold pixels keep the real skin even at full opacity.
    np.testing.assert_array_equal(full[35, 45], picture[35, 45])
    for opacity in (-0.1, 1.5):
        with pytest.raises(ValueError):
            overlay(picture, cam, opacity=opacity)


def test_cam_to_image_applies_the_affine() -> None:
    cam = np.zeros((10, 10), np.float32)
    cam[3, 4] = 1.0  # crop pixel x=4, y=3
    crop_to_image = np.array([[2.0, 0.0, 5.0], [0.0, 2.0, 7.0]], dtype=np.float32)
    warped = cam_to_image(cam, crop_to_image, (60, 50))
    assert warped.shape == (60, 50) and warped.dtype == np.float32
    assert np.unravel_index(warped.argmax(), warped.shape) == (7 + 2 * 3, 5 + 2 * 4)
    assert warped[:7].max() == 0.0 and warped[:, :5].max() == 0.0  # outside the crop


def test_merge_cams_is_a_pixelwise_max() -> None:
    a = blob_map([(slice(0, 5), slice(0, 5), 0.4)], (10, 10))
    b = blob_map([(slice(3, 8), slice(3, 8), 0.9)], (10, 10))
    merged = merge_cams([a, b], (10, 10))
    np.testing.assert_allclose(merged, np.maximum(a, b))
    np.testing.assert_array_equal(merge_cams([], (4, 6)), np.zeros((4, 6), np.float32))
    with pytest.raises(ValueError):
        merge_cams([a], (12, 10))


def test_two_blobs_in_order_with_boxes() -> None:
    cam = blob_map(
        [
            (slice(10, 30), slice(70, 90), 0.7),  # weaker, same area, scanned first
            (slice(60, 80), slice(10, 30), 1.0),
            (slice(85, 89), slice(100, 104), 1.0),  # speck below min_area_fraction
        ],
        (100, 120),
    )
    cam = cv2.GaussianBlur(cam, (5, 5), 1.0) + 0.02  # soft edges and a faint background
    regions = find_suspicious_regions(cam)
    assert len(regions) == 2
    strong, weak = regions
    np.testing.assert_allclose(strong.box, (10, 60, 30, 80), atol=2)
    np.testing.assert_allclose(weak.box, (70, 10, 90, 30), atol=2)
    assert strong.share > weak.share > 0 and strong.share + weak.share <= 1.0
    assert strong.mean_activation == pytest.approx(1.0, abs=0.1)
    assert weak.mean_activation == pytest.approx(0.7, abs=0.1)
    assert strong.parts == []  # no landmarks, no face box
    assert find_suspicious_regions(cam, max_regions=1) == [strong]
    json.dumps(strong.to_dict())


@pytest.mark.parametrize("value", [0.0, 0.6])
def test_flat_map_has_no_regions(value: float) -> None:
    assert find_suspicious_regions(np.full((50, 50), value, np.float32)) == []


def test_parts_named_from_landmarks_and_face_box() -> None:
    mouth = find_suspicious_regions(
        blob_map([(slice(66, 75), slice(44, 57), 1.0)]),
        landmarks=LANDMARKS,
        face_box=FACE_BOX,
    )
    assert [r.parts for r in mouth] == [["mouth"]]
    # Ends 2 px left of the left eye: within the 3 px (0.15 x 20) slack.
    beside_eye = blob_map([(slice(36, 45), slice(30, 38), 1.0)])
    [eye] = find_suspicious_regions(beside_eye, landmarks=LANDMARKS)
    assert eye.parts == ["left eye"]
    chin = blob_map([(slice(82, 90), slice(45, 55), 1.0)])
    [below_mouth] = find_suspicious_regions(chin, landmarks=LANDMARKS)
    assert below_mouth.parts == ["jaw/boundary"]
    # In the outer 15% band of the face box, no landmarks given.
    edge = blob_map([(slice(45, 55), slice(21, 26), 1.0)])
    [band] = find_suspicious_regions(edge, face_box=FACE_BOX)
    assert band.parts == ["jaw/boundary"]


def test_describe_regions() -> None:
    two = [region(["mouth"], 0.5), region(["mouth", "jaw/boundary"], 0.21)]
    assert describe_regions(two, is_fake=True) == (
        "Manipulation traces concentrate around the mouth and the jaw/boundary"
        " (2 regions, 71% of the attention)."
    )
    assert describe_regions([region([], 0.3)], is_fake=True) == (
        "Manipulation traces concentrate in 1 region (30% of the attention)."
    )
    assert (
        describe_regions(two, is_fake=False)
        == "No suspicious regions: the face looks authentic to the model."
    )
    assert (
        describe_regions([], is_fake=True)
        == "Judged fake, but the model's attention is spread over the whole face."
    )


def test_draw_regions_returns_a_copy() -> None:
    picture = np.zeros((40, 50, 3), np.uint8)
    boxed = SuspiciousRegion(
        box=(10.0, 5.0, 30.0, 25.0), mean_activation=0.9, share=0.4, parts=["nose"]
    )
    drawn = draw_regions(picture, [boxed], thickness=1)
    assert picture.max() == 0
    np.testing.assert_array_equal(drawn[5, 10], (255, 48, 48))
    np.testing.assert_array_equal(drawn[24, 29], (255, 48, 48))
    assert drawn[15, 20].max() == 0 and drawn[26, 31].max() == 0
    assert draw_regions(picture, [boxed]).shape == picture.shape


def test_overlay_of_a_large_photo_is_drawn_at_display_size() -> None:
    from deepfake.results import FaceResult
    from explainability.faces import MAX_OVERLAY_PIXELS, render_overlay

    picture = np.full((2400, 3000, 3), 128, np.uint8)  # 7.2 MP
    crop_to_image = np.array([[5.0, 0.0, 1000.0], [0.0, 5.0, 800.0]], np.float32)  # a 100 px crop over 500 px
    region = SuspiciousRegion(box=(1100.0, 900.0, 1300.0, 1100.0), mean_activation=0.9, share=0.5, parts=["nose"])
    face = FaceResult(box=(1000.0, 800.0, 1500.0, 1300.0), landmarks=None, detector_score=0.9, fake_probability=0.9,
                      suspicious_regions=[region], crop=np.zeros((100, 100, 3), np.uint8), crop_to_image=crop_to_image,
                      cam=np.ones((100, 100), np.float32))
    drawn = render_overlay(picture, [face])
    scale = drawn.shape[1] / picture.shape[1]
    assert drawn.shape[0] * drawn.shape[1] <= MAX_OVERLAY_PIXELS and scale == pytest.approx(0.5, abs=0.05)
    assert drawn.shape[0] / drawn.shape[1] == pytest.approx(0.8, abs=1e-3)
    painted = np.argwhere((drawn != 128).any(axis=2))
    (top, left), (bottom, right) = painted.min(axis=0), painted.max(axis=0)
    # The heat covers the crop's square (its faded edge left unpainted), scaled with the picture.
    assert 1000 * scale <= left < 1100 * scale and 1400 * scale < right < 1500 * scale
    assert 800 * scale <= top < 900 * scale and 1200 * scale < bottom < 1300 * scale
    # The region's box is drawn where the region is, in red.
    x1, y1 = round(1100 * scale), round(900 * scale)
    assert tuple(drawn[y1 + 20, x1]) == (255, 48, 48)
    assert face.crop_to_image[0, 0] == 5.0 and face.suspicious_regions[0].box[0] == 1100.0  # the face is left as it was
