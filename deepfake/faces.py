"""Face detection (YuNet, bundled in ``models/``, run by OpenCV) and the one face cropper.

Training, evaluation, the image detector and the video detector all find faces through
:func:`face_detector` and crop through :func:`crop_face`, so the model always sees faces found
and framed the same way.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from deepfake.errors import CorruptModelError, ModelNotFoundError

# OpenCV model zoo's release (face_detection_yunet_2023mar.onnx, Apache-2.0: models/LICENSE-yunet).
# Pinned by hash: a copy with 1,000 bytes zeroed still loads, then draws boxes up to 15% too tall.
YUNET_PATH = Path(__file__).resolve().parent.parent / "models" / "face_detection_yunet_2023mar.onnx"
YUNET_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"
# Measured on ../shared/data (reports/BENCHMARKS.md, faces): 0.7 finds a face in as many images as
# 0.6 on every set and fewer stray half faces at the picture's edge; 0.5 adds one extreme close-up.
MIN_SCORE = 0.7
# YuNet is best on faces of 10-300 px. At 640 px it finds every face MTCNN did, for about 4 times
# the cost of 320 px (16 against 4 ms a photo on one core), where a 1080p group photo's faces are too small.
MAX_SIDE = 640
NMS_IOU = 0.3  # the model zoo's setting
TOP_K = 5000  # candidates kept before NMS, the model zoo's setting

LANDMARK_NAMES = ("left eye", "right eye", "nose", "mouth left", "mouth right")


@dataclass
class Face:
    """A detected face in image pixel coordinates."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    landmarks: np.ndarray  # (5, 2): eyes, nose, mouth corners; of each pair the one on the image's left first
    score: float  # detector confidence, 0..1

    @property
    def size(self) -> float:
        return max(self.box[2] - self.box[0], self.box[3] - self.box[1])

    def scaled(self, factor: float) -> Face:
        """The same face on the picture scaled by ``factor``."""
        x1, y1, x2, y2 = self.box
        return Face((x1 * factor, y1 * factor, x2 * factor, y2 * factor), self.landmarks * factor, self.score)

    def to_dict(self) -> dict:
        return {
            "box": [round(float(v), 1) for v in self.box],
            "landmarks": [[round(float(x), 1), round(float(y), 1)] for x, y in self.landmarks],
            "detector_score": round(float(self.score), 4),
        }


@dataclass
class FaceCrop:
    """A square face crop at model resolution and the map back to the image."""

    pixels: np.ndarray  # (size, size, 3) uint8 RGB
    crop_to_image: np.ndarray  # 2x3 affine: crop pixel coordinates -> image pixel coordinates

    def landmarks_in_crop(self, landmarks: np.ndarray) -> np.ndarray:
        scale = self.crop_to_image[0, 0]
        offset = self.crop_to_image[:, 2]
        return (np.asarray(landmarks, dtype=np.float32) - offset) / scale


def outside_fraction(box: tuple[float, float, float, float], shape: tuple[int, int]) -> float:
    """The share of the face's square (the box's longer side, centred on it, as the cropper frames
    it) that lies outside an image of ``shape`` (height, width). Boxes are clipped to the image, so
    a face cut by the edge has a narrowed box whose square sticks out."""
    half = max(box[2] - box[0], box[3] - box[1], 1e-6) / 2
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    inside_w = max(0.0, min(cx + half, shape[1]) - max(cx - half, 0.0))
    inside_h = max(0.0, min(cy + half, shape[0]) - max(cy - half, 0.0))
    return float(max(0.0, 1.0 - inside_w * inside_h / (2 * half) ** 2))


def whole_image_box(image: np.ndarray) -> tuple[float, float, float, float]:
    return (0.0, 0.0, float(image.shape[1]), float(image.shape[0]))


def crop_face(image: np.ndarray, box: tuple[float, float, float, float], margin: float, size: int) -> FaceCrop:
    """Cut a square of ``margin`` x the box's longer side around its centre, resized to ``size``.

    Parts of the square outside the image are black, as a face near the border would be in
    any crop; shrinking uses area interpolation so large faces are not aliased.
    """
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1) * margin
    side = max(int(round(side)), 2)
    left = int(round((x1 + x2) / 2 - side / 2))
    top = int(round((y1 + y2) / 2 - side / 2))
    height, width = image.shape[:2]
    pad_left, pad_top = max(0, -left), max(0, -top)
    pad_right, pad_bottom = max(0, left + side - width), max(0, top + side - height)
    region = image[max(0, top) : min(height, top + side), max(0, left) : min(width, left + side)]
    if pad_left or pad_top or pad_right or pad_bottom:
        region = cv2.copyMakeBorder(region, pad_top, pad_bottom, pad_left, pad_right, cv2.BORDER_CONSTANT, value=0)
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    pixels = cv2.resize(region, (size, size), interpolation=interpolation)
    scale = side / size
    crop_to_image = np.array([[scale, 0.0, left], [0.0, scale, top]], dtype=np.float32)
    return FaceCrop(pixels=np.ascontiguousarray(pixels), crop_to_image=crop_to_image)


def limit_detail(pixels: np.ndarray, detail_size: int | None) -> np.ndarray:
    """Down to ``detail_size`` and back: the same ceiling on fine detail for every source."""
    size = pixels.shape[0]
    if not detail_size or detail_size >= size:
        return pixels
    small = cv2.resize(pixels, (detail_size, detail_size), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (pixels.shape[1], size), interpolation=cv2.INTER_LINEAR)


class FaceDetector:
    """YuNet face detector that returns every face, with boxes, 5 landmarks and scores.

    Large images are searched at ``max_side`` pixels and the results scaled back. One OpenCV
    detector is not safe to call from two threads at once, so calls take turns: with every core
    busy inside one call, two threads sharing it ran as fast as one detector each (measured).
    """

    def __init__(self, model_path: str | Path = YUNET_PATH, *, min_score: float = MIN_SCORE,
                 max_side: int = MAX_SIDE) -> None:  # fmt: skip
        self.max_side = max_side
        model = _read_model(Path(model_path))
        # OpenCV 5 warns on every creation that its new engine ignores the (default) target device.
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        try:  # the input size is set per image; this one only has to be valid
            self._yunet = cv2.FaceDetectorYN.create("onnx", model, np.empty(0, np.uint8), (320, 320), min_score,
                                                    NMS_IOU, TOP_K)  # fmt: skip
        finally:
            cv2.utils.logging.setLogLevel(level)
        self._lock = threading.Lock()

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in an RGB image, largest first, in its pixel coordinates."""
        height, width = image.shape[:2]
        scale = min(1.0, self.max_side / max(height, width))
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        else:
            small = image
        small = cv2.cvtColor(small, cv2.COLOR_RGB2BGR)  # YuNet was trained on BGR
        with self._lock:
            self._yunet.setInputSize((small.shape[1], small.shape[0]))
            _, found = self._yunet.detect(small)
        faces: list[Face] = []
        # Rows: x, y, w, h, then x, y of the eye, the other eye, the nose tip and the two mouth
        # corners (each pair image-left first, as Face orders them), then the score.
        for row in [] if found is None else found:
            x, y, w, h = row[:4] / scale
            box = (float(np.clip(x, 0, width)), float(np.clip(y, 0, height)),
                   float(np.clip(x + w, 0, width)), float(np.clip(y + h, 0, height)))  # fmt: skip
            if box[2] - box[0] < 2 or box[3] - box[1] < 2:
                continue
            faces.append(Face(box, row[4:14].reshape(5, 2) / scale, float(row[14])))
        faces.sort(key=lambda f: -f.size)
        return faces

    def detect_batch(self, images: list[np.ndarray]) -> list[list[Face]]:
        return [self.detect(image) for image in images]


def _read_model(path: Path) -> np.ndarray:
    """The YuNet file's bytes, once they are known to be the pinned release."""
    if not path.is_file():
        raise ModelNotFoundError(f"The face detector's model file is missing: {path}. It ships with the project "
                                 "in models/; restore it from there.")  # fmt: skip
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != YUNET_SHA256:
        raise CorruptModelError(f"The face detector's model file {path.name} is damaged or not the expected "
                                "release (its checksum differs); restore it from the project's models/ folder.")  # fmt: skip
    return np.frombuffer(data, np.uint8)


_shared: FaceDetector | None = None
_shared_lock = threading.Lock()


def face_detector() -> FaceDetector:
    """The process's one face detector, made on first use: the engine (images and videos), the
    training cache and the evaluation find faces with the same object."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = FaceDetector()
        return _shared
