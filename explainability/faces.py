"""Face-level explanations: each face's Grad-CAM map placed on the picture, the regions it
points at, the sentence that says so, and the heatmap overlay.

The engine finds, crops and scores faces (with their maps, from the same forward pass); the
detectors hand the scored faces here once to be explained and drawn.
"""

from __future__ import annotations

import dataclasses
import functools

import cv2
import numpy as np

from deepfake.results import FAKE, FaceResult, classify, deciding_face
from explainability.explanation_builder import (
    cam_to_image,
    describe_regions,
    draw_regions,
    find_suspicious_regions,
    merge_cams,
    overlay,
)

# Overlays are for looking at, and a full-HD screen shows about 2 MP: a larger photo's overlay is
# drawn and written at that size (blending and PNG encoding cost in proportion to the pixels).
MAX_OVERLAY_PIXELS = 1920 * 1080


def _window(faces: list[FaceResult], shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """The smallest image rectangle holding these faces' crops: their heatmaps are zero elsewhere,
    so warping, thresholding and blending only there keeps a 12 MP photo as fast as a small one."""
    corners = []
    for face in faces:
        scale, (left, top) = face.crop_to_image[0, 0], face.crop_to_image[:, 2]
        side = scale * face.crop.shape[0]
        corners.append((left, top, left + side, top + side))
    x0 = max(0, int(np.floor(min(c[0] for c in corners))))
    y0 = max(0, int(np.floor(min(c[1] for c in corners))))
    x1 = min(shape[1], int(np.ceil(max(c[2] for c in corners))))
    y1 = min(shape[0], int(np.ceil(max(c[3] for c in corners))))
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


@functools.lru_cache(maxsize=4)  # one per crop size: made for every face's regions and again for its overlay
def _edge_taper(size: int, fraction: float = 0.12) -> np.ndarray:
    """1 inside, easing to 0 over the crop's outer band: the heatmap fades out instead of ending
    at the crop's square edge, which readers took for a box the model drew."""
    ramp = np.clip(np.minimum(np.arange(size), np.arange(size)[::-1]) / (fraction * size), 0, 1)
    ramp = 0.5 - 0.5 * np.cos(np.pi * ramp)
    taper = np.outer(ramp, ramp).astype(np.float32)
    taper.flags.writeable = False  # shared by every caller
    return taper


def _cam_in_window(face: FaceResult, window: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = window
    matrix = face.crop_to_image.astype(np.float64).copy()
    matrix[:, 2] -= (x0, y0)
    return cam_to_image(face.cam * _edge_taper(face.cam.shape[0]), matrix, (y1 - y0, x1 - x0))


def explain_faces(faces: list[FaceResult], image_shape: tuple[int, int], threshold: float) -> None:
    """Suspicious regions and a one-line explanation per face; boxes only for faces judged FAKE,
    because a CAM always has a maximum, even on an authentic face."""
    for face in faces:
        is_fake = classify(face.fake_probability, threshold) == FAKE
        face.suspicious_regions = []
        if is_fake and face.cam is not None:
            window = _window([face], image_shape)
            offset = np.array(window[:2], dtype=np.float32)
            landmarks = None if face.landmarks is None else face.landmarks - offset
            box = None if face.whole_image else tuple(np.array(face.box) - np.tile(offset, 2))
            regions = find_suspicious_regions(_cam_in_window(face, window), landmarks=landmarks, face_box=box)
            face.suspicious_regions = [
                dataclasses.replace(r, box=tuple(float(v) for v in np.array(r.box) + np.tile(offset, 2)))
                for r in regions
            ]
        if is_fake and face.cam is None:  # no map, so nothing to say about where it looked
            face.explanation = "Judged fake; no heatmap was made for this face."
        else:
            face.explanation = describe_regions(face.suspicious_regions, is_fake)


def summarize_faces(faces: list[FaceResult], threshold: float) -> str:
    if not faces:
        return ""
    worst = deciding_face(faces)
    if worst.whole_image:
        return f"No face found, so the whole image was judged. {worst.explanation}"
    set_aside = [f for f in faces if f.cut_off and not worst.cut_off]
    judged = len(faces) - len(set_aside)
    summary = worst.explanation
    if judged > 1:
        kind = "whole faces" if set_aside else "faces"
        summary = f"Most suspicious of {judged} {kind} ({worst.fake_probability:.0%} fake): {summary}"
    elif set_aside:
        summary = f"The whole face ({worst.fake_probability:.0%} fake): {summary}"
    if set_aside:
        top = f"{max(f.fake_probability for f in set_aside):.0%} fake"
        counted = f"{len(set_aside)} faces" if len(set_aside) > 1 else "1 face"
        summary += (f" {counted} cut off by the picture's edge ({'up to ' if len(set_aside) > 1 else ''}{top}) "
                    "did not decide the verdict: such scores are less reliable.")  # fmt: skip
    return summary


def scaled_face(face: FaceResult, scale: float) -> FaceResult:
    """The face on the picture scaled by ``scale``: its box, landmarks, map placement and regions."""
    regions = [dataclasses.replace(r, box=tuple(v * scale for v in r.box)) for r in face.suspicious_regions]
    landmarks = None if face.landmarks is None else face.landmarks * scale
    box = tuple(v * scale for v in face.box)
    return dataclasses.replace(
        face, box=box, landmarks=landmarks, crop_to_image=face.crop_to_image * scale, suspicious_regions=regions
    )


def render_overlay(
    image: np.ndarray,
    faces: list[FaceResult],
    opacity: float = 0.45,
    show_regions: bool = True,
    shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """The Grad-CAM heatmap of every face over the image, with suspicious-region boxes, at most
    ``MAX_OVERLAY_PIXELS`` large (a bigger image is scaled down first). ``shape`` is the (height,
    width) the faces' coordinates refer to when ``image`` is the picture decoded smaller."""
    height, width = shape or image.shape[:2]
    scale = min(1.0, (MAX_OVERLAY_PIXELS / (height * width)) ** 0.5)
    size = (max(1, int(width * scale)), max(1, int(height * scale)))  # rounded down: within the limit
    if size == (image.shape[1], image.shape[0]):
        picture = image.copy()
    else:
        picture = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    if size != (width, height):
        faces = [scaled_face(f, size[0] / width) for f in faces]
    explained = [f for f in faces if f.cam is not None]
    if explained:
        x0, y0, x1, y1 = window = _window(explained, picture.shape[:2])
        merged = merge_cams([_cam_in_window(f, window) for f in explained], (y1 - y0, x1 - x0))
        picture[y0:y1, x0:x1] = overlay(picture[y0:y1, x0:x1], merged, opacity)
    regions = [r for f in faces for r in f.suspicious_regions]
    return draw_regions(picture, regions) if show_regions and regions else picture
