"""The detection engine: one model and one face detector, loaded once and shared.

Image and video detectors, the dashboard, the API and the CLI all score faces through a
:class:`DetectionEngine`, so a face is cropped, normalised, scored and explained one way.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import numpy as np
import torch

from deepfake.faces import Face, FaceCrop, FaceDetector, crop_face, limit_detail, outside_fraction, whole_image_box
from deepfake.loading import LoadedModel, load_model
from deepfake.model import cam_layer, fake_logits
from deepfake.results import FAKE, FaceResult, classify
from explainability.explanation_builder import (
    cam_to_image,
    describe_regions,
    draw_regions,
    find_suspicious_regions,
    merge_cams,
    overlay,
)
from explainability.gradcam import CAM_METHODS, create_cam

# A face with more than this share of its box outside the picture is "cut off". The model was trained
# on whole faces, and on held-out real photos it flagged such faces (bystanders at the frame's edge)
# far more often than whole ones, so they are scored and shown but do not decide the verdict.
CUT_OFF_FRACTION = 0.1


def select_device(device: str | torch.device | None = None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class DetectionEngine:
    """Thread-safe: model calls are serialised by a lock (Grad-CAM hooks on a shared module must
    not see another request's activations); face detection runs outside it."""

    def __init__(self, model: LoadedModel, face_detector: FaceDetector, device: torch.device, batch_size: int = 32):
        self.model = model
        self.face_detector = face_detector
        self.device = device
        self.batch_size = batch_size
        self._lock = threading.Lock()
        config = model.config
        self._mean = torch.tensor(config.mean, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(config.std, device=device).view(1, 3, 1, 1)

    @classmethod
    def load(
        cls,
        model_path: str | Path | None = None,
        *,
        arch: str | None = None,
        device: str | torch.device | None = None,
        trust_pickle: bool = False,
    ) -> DetectionEngine:
        device = select_device(device)
        model = load_model(model_path, arch=arch, device=device, trust_pickle=trust_pickle)
        return cls(model, FaceDetector(device=device), device)

    @property
    def input_size(self) -> int:
        return self.model.config.input_size

    @property
    def cam_available(self) -> bool:
        return cam_layer(self.model.module) is not None

    def crop(self, image: np.ndarray, box: tuple[float, float, float, float], whole_image: bool = False) -> FaceCrop:
        margin = 1.0 if whole_image else self.model.config.face_margin
        crop = crop_face(image, box, margin, self.input_size)
        return FaceCrop(limit_detail(crop.pixels, self.model.config.detail_size), crop.crop_to_image)

    def _tensor(self, crops: list[np.ndarray]) -> torch.Tensor:
        batch = torch.from_numpy(np.stack(crops)).to(self.device).permute(0, 3, 1, 2).float().div_(255)
        return ((batch - self._mean) / self._std).contiguous(memory_format=torch.channels_last)

    def _probabilities(self, fake_logit: torch.Tensor) -> np.ndarray:
        return torch.sigmoid(fake_logit / self.model.temperature).cpu().numpy()

    def score(self, crops: list[np.ndarray]) -> np.ndarray:
        """Calibrated fake probabilities, sigmoid(logit / temperature), for RGB crops."""
        if not crops:
            return np.zeros(0, dtype=np.float32)
        out = []
        with self._lock, torch.inference_mode():
            for start in range(0, len(crops), self.batch_size):
                batch = self._tensor(crops[start : start + self.batch_size])
                out.append(self._probabilities(fake_logits(self.model.module, batch, self.model.config)))
        return np.concatenate(out)

    def score_and_cams(self, crops: list[np.ndarray], method: str = "gradcam") -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities and Grad-CAM maps (FAKE logit, crop coordinates) from one forward pass;
        maps are None, after a plain scoring pass, if the model has no CAM layer."""
        explained = self._cam_pass(crops, method, scores=True)
        return (self.score(crops), None) if explained is None else explained

    def cams(self, crops: list[np.ndarray], method: str = "gradcam") -> np.ndarray | None:
        """Grad-CAM maps for the FAKE logit in crop coordinates, or None if the model has no CAM layer."""
        explained = self._cam_pass(crops, method, scores=False)
        return None if explained is None else explained[1]

    def _cam_pass(self, crops: list[np.ndarray], method: str, scores: bool) -> tuple[np.ndarray | None, np.ndarray] | None:
        """Maps and, with ``scores``, probabilities (a flip_average model adds its mirror-image pass
        only then); None if the model has no CAM layer."""
        layer = cam_layer(self.model.module)
        if layer is None or not crops:
            return None
        probabilities, maps = [], []
        with self._lock:
            cam = create_cam(method, self.model.module, layer)
            for start in range(0, len(crops), self.batch_size):
                batch = self._tensor(crops[start : start + self.batch_size])
                batch_maps, logits = cam.compute(batch)  # the map explains the crop as given
                maps.append(batch_maps)
                if scores:
                    with torch.inference_mode():
                        fake_logit = fake_logits(self.model.module, batch, self.model.config, given=logits)
                    probabilities.append(self._probabilities(fake_logit))
        return (np.concatenate(probabilities) if scores else None), np.concatenate(maps)

    def faces_for(self, images: list[np.ndarray]) -> list[list[Face]]:
        return self.face_detector.detect_batch(images)

    def score_faces(
        self, images: list[np.ndarray], faces_per_image: list[list[Face]], cam_method: str | None = None
    ) -> list[list[FaceResult]]:
        """Crop and score every face; an image without faces is scored whole and flagged. With a
        ``cam_method``, each face also gets its map, from the same forward pass as its score."""
        crops: list[FaceCrop] = []
        meta: list[tuple[int, Face | None]] = []
        for i, (image, faces) in enumerate(zip(images, faces_per_image)):
            if faces:
                for face in faces:
                    crops.append(self.crop(image, face.box))
                    meta.append((i, face))
            else:
                crops.append(self.crop(image, whole_image_box(image), whole_image=True))
                meta.append((i, None))
        pixels = [c.pixels for c in crops]
        probs, cams = self.score_and_cams(pixels, cam_method) if cam_method else (self.score(pixels), None)
        results: list[list[FaceResult]] = [[] for _ in images]
        for n, ((i, face), crop, prob) in enumerate(zip(meta, crops, probs)):
            results[i].append(
                FaceResult(
                    box=face.box if face else whole_image_box(images[i]),
                    landmarks=face.landmarks if face else None,
                    detector_score=face.score if face else 0.0,
                    fake_probability=float(prob),
                    whole_image=face is None,
                    cut_off=face is not None and outside_fraction(face.box, images[i].shape[:2]) > CUT_OFF_FRACTION,
                    crop=crop.pixels,
                    crop_to_image=crop.crop_to_image,
                    cam=None if cams is None else cams[n],
                )
            )
        return results

    def attach_cams(self, faces: list[FaceResult], method: str) -> None:
        cams = self.cams([f.crop for f in faces], method)
        if cams is None:
            return
        for face, cam in zip(faces, cams):
            face.cam = cam


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


def _edge_taper(size: int, fraction: float = 0.12) -> np.ndarray:
    """1 inside, easing to 0 over the crop's outer band: the heatmap fades out instead of ending
    at the crop's square edge, which readers took for a box the model drew."""
    ramp = np.clip(np.minimum(np.arange(size), np.arange(size)[::-1]) / (fraction * size), 0, 1)
    ramp = 0.5 - 0.5 * np.cos(np.pi * ramp)
    return np.outer(ramp, ramp).astype(np.float32)


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


def deciding_face(faces: list[FaceResult]) -> FaceResult:
    """The face whose score is the picture's: the most suspicious whole face, or the most
    suspicious of all when every face is cut off by the picture's edge."""
    whole = [f for f in faces if not f.cut_off] or faces
    return max(whole, key=lambda f: f.fake_probability)


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


def render_overlay(
    image: np.ndarray, faces: list[FaceResult], opacity: float = 0.45, show_regions: bool = True
) -> np.ndarray:
    """The Grad-CAM heatmap of every face over the image, with suspicious-region boxes."""
    picture = image.copy()
    explained = [f for f in faces if f.cam is not None]
    if explained:
        x0, y0, x1, y1 = window = _window(explained, image.shape[:2])
        merged = merge_cams([_cam_in_window(f, window) for f in explained], (y1 - y0, x1 - x0))
        picture[y0:y1, x0:x1] = overlay(picture[y0:y1, x0:x1], merged, opacity)
    regions = [r for f in faces for r in f.suspicious_regions]
    return draw_regions(picture, regions) if show_regions and regions else picture


__all__ = ["CAM_METHODS", "DetectionEngine", "deciding_face", "explain_faces", "render_overlay", "select_device", "summarize_faces"]
