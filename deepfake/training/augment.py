"""Training-time framing and look, applied identically to both members of a pair.

Real and fake come from different sources (resolutions, JPEG settings, framing). Putting both
through the same random framing, mirroring and borders (and the degradation chain) leaves the
model nothing to tell them apart by except the manipulation itself.
"""

from __future__ import annotations

import cv2
import numpy as np

from deepfake.training.data import CACHE_MARGIN


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


def paired_look(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mirror image and black bands, drawn from ``rng`` without looking at the pixels: a real
    and its fake given equally seeded generators get the same look. (Tone, blur, noise,
    resizing and compression are the degradation chain's, in :mod:`deepfake.training.degradation`.)"""
    out = image[:, ::-1] if rng.random() < 0.5 else image
    if rng.random() < 0.3:
        # Black bands like those of faces at a photo's edge (UTK crops, LFW's alignment corners),
        # added to both classes so a border can never tell the source.
        out = out.copy()
        h = out.shape[0]
        for side in rng.choice(4, size=int(rng.integers(1, 3)), replace=False):
            band = max(1, int(rng.uniform(0.02, 0.15) * h))
            if side == 0:
                out[:band] = 0
            elif side == 1:
                out[-band:] = 0
            elif side == 2:
                out[:, :band] = 0
            else:
                out[:, -band:] = 0
    return np.ascontiguousarray(out)


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """The RGB image as it comes back from being saved as a JPEG of ``quality``."""
    _, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
