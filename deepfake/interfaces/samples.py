"""Samples to try the detector without uploading anything: a real photo that ships with
matplotlib, and a fake made from it on the spot by the training pipeline's self-blending."""

from __future__ import annotations

from pathlib import Path

import cv2
import matplotlib.cbook
import numpy as np

from deepfake.faces import FaceDetector, crop_face, face_detector
from deepfake.figures import encode_png
from deepfake.media import load_image

SAMPLE_REAL_NAME = "sample_real_grace_hopper.jpg"
SAMPLE_FAKE_NAME = "sample_fake_grace_hopper.png"
# Wide enough that the whole face outline the blend mask draws (forehead to chin) fits the crop.
FAKE_MARGIN = 2.0
FAKE_SEED = 0  # the first seed; model 1.2.0 scores it 0.96 (seven of the first eight seeds score >= 0.6)


def _real_path() -> Path:
    return Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def sample_real() -> tuple[str, bytes]:
    """(file name, JPEG bytes) of an authentic portrait (Grace Hopper, public domain)."""
    return SAMPLE_REAL_NAME, _real_path().read_bytes()


def sample_fake(detector: FaceDetector | None = None, seed: int = FAKE_SEED) -> tuple[str, bytes]:
    """(file name, PNG bytes) of the real sample with its face self-blended: a slightly altered
    copy of the face pasted back over itself with a soft mask, the seam that face swaps leave.

    PNG, because JPEG compression would blur the very traces the blend leaves.
    """
    from deepfake.training.pseudofakes import self_blend  # the lab's code, loaded only when a sample fake is asked for

    image = load_image(_real_path())
    faces = (detector or face_detector()).detect(image)
    if not faces:
        raise RuntimeError("No face found in the bundled sample photo; the face detector is not working.")
    face = faces[0]  # the largest
    side = round(max(face.box[2] - face.box[0], face.box[3] - face.box[1]) * FAKE_MARGIN)
    crop = crop_face(image, face.box, FAKE_MARGIN, side)  # crop size = its side: one crop pixel per image pixel
    fake = self_blend(crop.pixels, crop.landmarks_in_crop(face.landmarks), np.random.default_rng(seed), part="face")
    height, width = image.shape[:2]
    pasted = cv2.warpAffine(fake.image, crop.crop_to_image, (width, height), flags=cv2.INTER_NEAREST)
    weight = cv2.warpAffine(fake.mask, crop.crop_to_image, (width, height), flags=cv2.INTER_NEAREST)
    result = np.where(weight[..., None] > 0, pasted, image)
    return SAMPLE_FAKE_NAME, encode_png(result)
