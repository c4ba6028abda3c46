"""Face detection (MTCNN, weights ship inside facenet-pytorch) and the one face cropper.

Training, evaluation, the image detector and the video detector all crop through
:func:`crop_face`, so the model always sees faces framed the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

LANDMARK_NAMES = ("left eye", "right eye", "nose", "mouth left", "mouth right")


@dataclass
class Face:
    """A detected face in image pixel coordinates."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    landmarks: np.ndarray  # (5, 2): eyes, nose, mouth corners, as MTCNN orders them
    score: float  # detector confidence, 0..1

    @property
    def size(self) -> float:
        return max(self.box[2] - self.box[0], self.box[3] - self.box[1])

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
    """MTCNN face detector that returns every face, with boxes, 5 landmarks and scores.

    Large images are searched at ``max_side`` pixels (faces smaller than ``min_face_size`` at
    that scale are not looked for) and the results scaled back: MTCNN's cost grows with the
    pixel count, and a face too small to find at 640 px is too small to judge anyway.
    """

    def __init__(
        self,
        device: str | torch.device = "cpu",
        min_face_size: int = 20,
        min_score: float = 0.9,
        max_side: int = 640,
    ) -> None:
        from facenet_pytorch import MTCNN  # heavy import, only when a detector is built

        self.device = torch.device(device)
        self.min_face_size = min_face_size
        self.min_score = min_score
        self.max_side = max_side
        self._mtcnn = MTCNN(keep_all=True, min_face_size=min_face_size, device=self.device, post_process=False)

    def detect(self, image: np.ndarray) -> list[Face]:
        return self.detect_batch([image])[0]

    def detect_batch(self, images: list[np.ndarray]) -> list[list[Face]]:
        """Detect faces in images of the same size (video frames) in one pass."""
        if not images:
            return []
        if len({im.shape for im in images}) > 1:
            return [self.detect_batch([im])[0] for im in images]
        height, width = images[0].shape[:2]
        scale = min(1.0, self.max_side / max(height, width))
        if min(height, width) * scale < self.min_face_size:  # no findable face fits (and MTCNN would fail)
            return [[] for _ in images]
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            small = [cv2.resize(im, size, interpolation=cv2.INTER_AREA) for im in images]
        else:
            small = list(images)
        with torch.inference_mode():
            boxes, probs, points = self._mtcnn.detect(np.stack(small), landmarks=True)
        results: list[list[Face]] = []
        for frame_boxes, frame_probs, frame_points in zip(boxes, probs, points):
            faces: list[Face] = []
            if frame_boxes is not None:
                for box, prob, pts in zip(frame_boxes, frame_probs, frame_points):
                    if prob is None or prob < self.min_score:
                        continue
                    box = np.asarray(box, dtype=np.float64) / scale
                    box[[0, 2]] = box[[0, 2]].clip(0, width)
                    box[[1, 3]] = box[[1, 3]].clip(0, height)
                    if box[2] - box[0] < 2 or box[3] - box[1] < 2:
                        continue
                    faces.append(Face(tuple(float(v) for v in box), np.asarray(pts, np.float32) / scale, float(prob)))
            faces.sort(key=lambda f: -f.size)
            results.append(faces)
        return results
