"""Training-time framing and degradations, applied identically to both classes.

Real and fake come from different sources (resolutions, JPEG settings, framing). Putting both
through the same random resampling, blur, noise, colour and JPEG leaves the model nothing to
tell them apart by except the manipulation itself.
"""

from __future__ import annotations

import cv2
import numpy as np

from deepfake.data import CACHE_MARGIN


def frame_crop(cached: np.ndarray, margin: float, size: int, rng: np.random.Generator | None) -> np.ndarray:
    """The inference framing (``margin`` x the face box) cut from a cache crop, jittered in training."""
    side = cached.shape[0] * margin / CACHE_MARGIN
    center = np.array([cached.shape[1] / 2, cached.shape[0] / 2])
    if rng is not None:
        side *= rng.uniform(0.92, 1.08)
        center += rng.uniform(-0.04, 0.04, 2) * side
    scale = size / side
    matrix = np.array([[scale, 0, size / 2 - center[0] * scale], [0, scale, size / 2 - center[1] * scale]])
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.warpAffine(cached, matrix, (size, size), flags=interpolation, borderMode=cv2.BORDER_CONSTANT)


def degrade(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random flips, colour, resolution, blur, noise and JPEG: the same for REAL and FAKE."""
    out = image
    if rng.random() < 0.5:
        out = out[:, ::-1]
    out = out.astype(np.float32)
    if rng.random() < 0.5:
        out = out * rng.uniform(0.8, 1.2) + rng.uniform(-20, 20)
        gray = out.mean(axis=2, keepdims=True)
        out = gray + (out - gray) * rng.uniform(0.7, 1.3)
    h, w = out.shape[:2]
    if rng.random() < 0.3:
        # Black bands like those of faces at a photo's edge (UTK crops, LFW's alignment corners),
        # added to both classes so a border can never tell the source.
        for side in rng.choice(4, size=int(rng.integers(1, 3)), replace=False):
            band = int(rng.uniform(0.02, 0.15) * h)
            if side == 0:
                out[:band] = 0
            elif side == 1:
                out[-band:] = 0
            elif side == 2:
                out[:, :band] = 0
            else:
                out[:, -band:] = 0
    if rng.random() < 0.7:
        side = int(rng.uniform(72, 200))
        down = int(rng.choice([cv2.INTER_AREA, cv2.INTER_LINEAR]))
        small = cv2.resize(out, (side, side), interpolation=down)
        out = cv2.resize(small, (w, h), interpolation=int(rng.choice([cv2.INTER_LINEAR, cv2.INTER_CUBIC])))
    if rng.random() < 0.2:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.4, 1.5))
    if rng.random() < 0.2:
        out = out + rng.normal(0, rng.uniform(2, 8), out.shape)
    out = np.clip(out, 0, 255).astype(np.uint8)
    if rng.random() < 0.8:
        out = jpeg_roundtrip(out, int(rng.integers(30, 101)))
    return np.ascontiguousarray(out)


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """The RGB image as it comes back from being saved as a JPEG of ``quality``."""
    _, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
