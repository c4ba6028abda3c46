"""Class-activation maps -> pictures and plain-language findings (numpy/OpenCV only)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

FACE_PARTS = ("left eye", "right eye", "nose", "mouth", "jaw/boundary")
_PART_RADIUS = 0.15  # of the inter-ocular distance: slack around a landmark point
_BOUNDARY_BAND = 0.15  # of the face box's width/height: where blending seams sit


@dataclass
class SuspiciousRegion:
    # x1, y1, x2, y2 in original image pixels; x2, y2 exclusive (x2 - x1 = width)
    box: tuple[float, float, float, float]
    mean_activation: float  # mean CAM value inside the component, 0..1
    share: float  # component's share of the CAM's total mass over the whole map, 0..1
    parts: list[str]  # face parts the box covers, in FACE_PARTS order

    def to_dict(self) -> dict:
        return {
            "box": [round(float(v), 1) for v in self.box],
            "mean_activation": round(float(self.mean_activation), 4),
            "share": round(float(self.share), 4),
            "parts": [str(p) for p in self.parts],
        }


def colorize(cam: np.ndarray) -> np.ndarray:
    """HxW float map in [0, 1] -> HxWx3 uint8 RGB, JET colormap."""
    cam = _as_map(cam)
    levels = np.round(np.clip(cam, 0.0, 1.0) * 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


def overlay(image: np.ndarray, cam: np.ndarray, opacity: float = 0.45) -> np.ndarray:
    """Blend the colorized ``cam`` over an RGB uint8 ``image`` (cam resized to fit)."""
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    _check_rgb(image)
    cam = _as_map(cam)
    height, width = image.shape[:2]
    if cam.shape != (height, width):
        cam = cv2.resize(cam, (width, height), interpolation=cv2.INTER_LINEAR)
    cam = np.clip(cam, 0.0, 1.0)
    # Not a plain alpha blend: JET paints cold pixels dark blue, hiding the real skin.
    # Weighting by sqrt(cam) leaves cold pixels untouched and still shows mild heat.
    weight = (opacity * np.sqrt(cam))[..., None]
    blended = (
        image.astype(np.float32) * (1.0 - weight)
        + colorize(cam).astype(np.float32) * weight
    )
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def cam_to_image(
    cam: np.ndarray, crop_to_image: np.ndarray, image_shape: tuple[int, int]
) -> np.ndarray:
    """Warp a face-crop map into an image-sized float32 map, zero outside the crop.

    ``crop_to_image`` is the 2x3 affine from crop pixel to image pixel coordinates.
    """
    matrix = np.asarray(crop_to_image, dtype=np.float64).reshape(2, 3)
    height, width = int(image_shape[0]), int(image_shape[1])
    return cv2.warpAffine(
        _as_map(cam),
        matrix,
        (width, height),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0.0,
    )


def merge_cams(cams: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Pixelwise maximum of image-coordinate maps (one per face); zeros if none."""
    merged = np.zeros(tuple(shape[:2]), dtype=np.float32)
    for cam in cams:
        cam = _as_map(cam)
        if cam.shape != merged.shape:
            raise ValueError(f"cam of shape {cam.shape} does not match {merged.shape}")
        np.maximum(merged, cam, out=merged)
    return merged


def find_suspicious_regions(
    cam: np.ndarray,
    percentile: float = 90.0,
    min_area_fraction: float = 0.002,
    max_regions: int = 5,
    landmarks: np.ndarray | None = None,
    face_box: tuple[float, float, float, float] | None = None,
) -> list[SuspiciousRegion]:
    """Hot connected components of ``cam``, largest share of its mass first.

    Boxes are in ``cam``'s pixel coordinates: pass an image-coordinate map (see
    :func:`cam_to_image`). ``landmarks`` (5x2, deepfake.faces order: left eye, right eye, nose,
    mouth left, mouth right) and ``face_box`` must be in the same coordinates; they
    only serve to name the face parts.
    """
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    cam = np.clip(_as_map(cam), 0.0, None)
    peak = float(cam.max(initial=0.0))
    # A flat map has no place that stands out: reporting all of it would be spurious.
    if peak <= 0.0 or peak - float(cam.min()) <= 1e-6 * peak or max_regions <= 0:
        return []
    threshold = max(float(np.percentile(cam[cam > 0], percentile)), 0.5 * peak)
    mask = (cam >= threshold).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    mass = np.bincount(labels.ravel(), weights=cam.ravel(), minlength=count)
    total = float(cam.sum(dtype=np.float64))
    min_area = min_area_fraction * cam.size
    regions: list[SuspiciousRegion] = []
    for label in range(1, count):  # 0 is the background
        x, y, w, h, area = (int(v) for v in stats[label])
        if area < min_area:
            continue
        box = (float(x), float(y), float(x + w), float(y + h))
        regions.append(
            SuspiciousRegion(
                box=box,
                mean_activation=float(mass[label] / area),
                share=float(mass[label] / total),
                parts=_name_parts(box, landmarks, face_box),
            )
        )
    regions.sort(key=lambda r: r.share, reverse=True)
    return regions[:max_regions]


def describe_regions(regions: Sequence[SuspiciousRegion], is_fake: bool) -> str:
    """One plain-language sentence about where the model saw manipulation."""
    if not is_fake:
        return "No suspicious regions: the face looks authentic to the model."
    if not regions:
        return "Judged fake, but the model's attention is spread over the whole face."
    parts: list[str] = []
    for region in regions:  # strongest region's parts first
        parts += [p for p in region.parts if p not in parts]
    count = f"{len(regions)} region{'s' if len(regions) > 1 else ''}"
    attention = f"{round(100 * sum(r.share for r in regions))}% of the attention"
    if not parts:
        return f"Manipulation traces concentrate in {count} ({attention})."
    where = _join([f"the {p}" for p in parts])
    return f"Manipulation traces concentrate around {where} ({count}, {attention})."


def draw_regions(
    image: np.ndarray,
    regions: Sequence[SuspiciousRegion],
    color: tuple[int, int, int] = (255, 48, 48),
    thickness: int | None = None,
) -> np.ndarray:
    """Copy of the RGB ``image`` with each region's box drawn."""
    _check_rgb(image)
    canvas = np.ascontiguousarray(image).copy()
    height, width = image.shape[:2]
    if thickness is None:
        thickness = max(1, round(max(height, width) / 320))
    for region in regions:
        x1, y1, x2, y2 = region.box
        top_left = (
            int(np.clip(round(x1), 0, width - 1)),
            int(np.clip(round(y1), 0, height - 1)),
        )
        # Boxes end exclusively; cv2.rectangle's corner is inclusive.
        bottom_right = (
            int(np.clip(round(x2) - 1, 0, width - 1)),
            int(np.clip(round(y2) - 1, 0, height - 1)),
        )
        cv2.rectangle(
            canvas, top_left, bottom_right, tuple(int(c) for c in color), thickness
        )
    return canvas


def _name_parts(
    box: tuple[float, float, float, float],
    landmarks: np.ndarray | None,
    face_box: tuple[float, float, float, float] | None,
) -> list[str]:
    found: set[str] = set()
    x1, y1, x2, y2 = box
    if landmarks is not None:
        points = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
        mouth = (points[3] + points[4]) / 2
        radius = _PART_RADIUS * float(np.linalg.norm(points[1] - points[0]))
        centres = (points[0], points[1], points[2], mouth)
        for name, (px, py) in zip(FACE_PARTS[:4], centres, strict=True):
            # Point-to-box distance (0 inside): near enough covers the part's skin.
            if np.hypot(px - np.clip(px, x1, x2), py - np.clip(py, y1, y2)) <= radius:
                found.add(name)
        if y1 > mouth[1] + radius:
            found.add("jaw/boundary")
    if face_box is not None:
        fx1, fy1, fx2, fy2 = (float(v) for v in face_box)
        band_x, band_y = _BOUNDARY_BAND * (fx2 - fx1), _BOUNDARY_BAND * (fy2 - fy1)
        overlaps_face = x1 < fx2 and x2 > fx1 and y1 < fy2 and y2 > fy1
        inside_core = (
            x1 >= fx1 + band_x
            and x2 <= fx2 - band_x
            and y1 >= fy1 + band_y
            and y2 <= fy2 - band_y
        )
        if overlaps_face and not inside_core:
            found.add("jaw/boundary")
    return [p for p in FACE_PARTS if p in found]


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _as_map(cam: np.ndarray) -> np.ndarray:
    cam = np.asarray(cam)
    if cam.ndim != 2:
        raise ValueError(f"expected a 2-D map, got shape {cam.shape}")
    return np.nan_to_num(
        cam.astype(np.float32, copy=False), nan=0.0, posinf=1.0, neginf=0.0
    )


def _check_rgb(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"expected an HxWx3 uint8 RGB image, got {image.dtype} {image.shape}"
        )
