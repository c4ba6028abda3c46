"""The detection engine: one model and one face detector, loaded once and shared.

Image and video detectors, the dashboard, the API and the CLI all score faces through a
:class:`DetectionEngine`, so a face is cropped, normalised, scored and explained one way.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from deepfake.faces import (
    Face,
    FaceCrop,
    FaceDetector,
    crop_face,
    face_detector,
    limit_detail,
    outside_fraction,
    whole_image_box,
)
from deepfake.loading import LoadedModel, load_model
from deepfake.model import cam_layers, combine_heads, fold_batchnorm, head_logits
from deepfake.results import FaceResult
from explainability.gradcam import CAM_METHODS, create_cam

# A face with more than this share of its box outside the picture is "cut off". The model was trained
# on whole faces, and on held-out real photos it flagged such faces (bystanders at the frame's edge)
# far more often than whole ones, so they are scored and shown but do not decide the verdict.
CUT_OFF_FRACTION = 0.1


FAKE_TARGET = "fake"  # heatmap target: the combined FAKE score


@dataclass
class Scores:
    """Per crop: the calibrated FAKE probability [N] and each head's own probability [N, heads]."""

    fake: np.ndarray
    heads: np.ndarray

    @classmethod
    def concatenate(cls, parts: list[Scores]) -> Scores:
        return cls(np.concatenate([p.fake for p in parts]), np.concatenate([p.heads for p in parts]))


def select_device(device: str | torch.device | None = None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class DetectionEngine:
    """Thread-safe: model calls are serialised by a lock (Grad-CAM hooks on a shared module must
    not see another request's activations); face detection runs outside it."""

    # Crops per forward pass. On a 2-core CPU, batches of 8 scored a 32-frame clip in 0.96 s against
    # 1.60 s as one batch of 32 (reports/BENCHMARKS.md): the activations of 8 crops stay in cache.
    def __init__(self, model: LoadedModel, face_detector: FaceDetector, device: torch.device, batch_size: int = 8):
        self.model = replace(model, module=fold_batchnorm(model.module))  # inference only, from here on
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
        return cls(model, face_detector(), device)

    @property
    def input_size(self) -> int:
        return self.model.config.input_size

    @property
    def cam_available(self) -> bool:
        return bool(cam_layers(self.model.module))

    def crop(self, image: np.ndarray, box: tuple[float, float, float, float], whole_image: bool = False) -> FaceCrop:
        margin = 1.0 if whole_image else self.model.config.face_margin
        crop = crop_face(image, box, margin, self.input_size)
        return FaceCrop(limit_detail(crop.pixels, self.model.config.detail_size), crop.crop_to_image)

    def _tensor(self, crops: list[np.ndarray]) -> torch.Tensor:
        batch = torch.from_numpy(np.stack(crops)).to(self.device).permute(0, 3, 1, 2).float().div_(255)
        return ((batch - self._mean) / self._std).contiguous(memory_format=torch.channels_last)

    @property
    def heads(self) -> tuple[str, ...]:
        return self.model.config.heads

    @property
    def cam_targets(self) -> tuple[str, ...]:
        """What a heatmap can explain: the combined FAKE score, or one head of a multi-head model."""
        return (FAKE_TARGET, *self.heads) if len(self.heads) > 1 else (FAKE_TARGET,)

    def _scores(self, logits: torch.Tensor) -> Scores:
        config = self.model.config
        fake = torch.sigmoid(combine_heads(logits, config) / self.model.temperature)
        temperatures = torch.tensor(config.head_temperatures, device=logits.device)
        return Scores(fake.cpu().numpy(), torch.sigmoid(logits / temperatures).cpu().numpy())

    def _target(self, name: str):
        """The scalar per crop a map explains: the combined FAKE logit, or one head's."""
        config = self.model.config
        if name == FAKE_TARGET:
            return lambda logits: combine_heads(logits[:, : len(config.heads)].float(), config)
        if name not in config.heads:
            raise ValueError(f"unknown heatmap target {name!r}; choose one of {list(self.cam_targets)}")
        index = config.heads.index(name)
        return lambda logits: logits[:, index]

    def score_heads(self, crops: list[np.ndarray]) -> Scores:
        """Calibrated FAKE probabilities and each head's own calibrated probability for RGB crops."""
        if not crops:
            return Scores(np.zeros(0, np.float32), np.zeros((0, len(self.heads)), np.float32))
        out = []
        with self._lock, torch.inference_mode():
            for start in range(0, len(crops), self.batch_size):
                batch = self._tensor(crops[start : start + self.batch_size])
                out.append(self._scores(head_logits(self.model.module, batch, self.model.config)))
        return Scores.concatenate(out)

    def score(self, crops: list[np.ndarray]) -> np.ndarray:
        """Calibrated fake probabilities, sigmoid(combined logit / temperature), for RGB crops."""
        return self.score_heads(crops).fake

    def score_and_cams(
        self, crops: list[np.ndarray], method: str = "gradcam", target: str = FAKE_TARGET
    ) -> tuple[Scores, np.ndarray | None]:
        """Scores and Grad-CAM maps (of ``target``, in crop coordinates) from one forward pass; maps
        are None, after a plain scoring pass, if the model has no CAM layer."""
        explained = self._cam_pass(crops, method, target, scores=True)
        return (self.score_heads(crops), None) if explained is None else explained

    def cams(self, crops: list[np.ndarray], method: str = "gradcam", target: str = FAKE_TARGET) -> np.ndarray | None:
        """Grad-CAM maps of ``target`` in crop coordinates, or None if the model has no CAM layer."""
        explained = self._cam_pass(crops, method, target, scores=False)
        return None if explained is None else explained[1]

    def _cam_pass(
        self, crops: list[np.ndarray], method: str, target: str, scores: bool
    ) -> tuple[Scores | None, np.ndarray] | None:
        """Maps and, with ``scores``, probabilities (a flip_average model adds its mirror-image pass
        only then); None if the model has no CAM layer."""
        layers = cam_layers(self.model.module)
        if not layers or not crops:
            return None
        select = self._target(target)
        parts, maps = [], []
        with self._lock:
            cam = create_cam(method, self.model.module, layers)
            for start in range(0, len(crops), self.batch_size):
                batch = self._tensor(crops[start : start + self.batch_size])
                batch_maps, logits = cam.compute(batch, target=select)  # the map explains the crop as given
                maps.append(batch_maps)
                if scores:
                    with torch.inference_mode():
                        parts.append(self._scores(head_logits(self.model.module, batch, self.model.config, given=logits)))
        return (Scores.concatenate(parts) if scores else None), np.concatenate(maps)

    def faces_for(self, images: list[np.ndarray]) -> list[list[Face]]:
        return self.face_detector.detect_batch(images)

    def score_faces(
        self, images: list[np.ndarray], faces_per_image: list[list[Face]], cam_method: str | None = None,
        cam_target: str = FAKE_TARGET,
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
        scores, cams = self.score_and_cams(pixels, cam_method, cam_target) if cam_method else (self.score_heads(pixels), None)
        named_heads = len(self.heads) > 1  # a one-logit model has no separate kinds of evidence
        results: list[list[FaceResult]] = [[] for _ in images]
        for n, ((i, face), crop, prob) in enumerate(zip(meta, crops, scores.fake)):
            results[i].append(
                FaceResult(
                    box=face.box if face else whole_image_box(images[i]),
                    landmarks=face.landmarks if face else None,
                    detector_score=face.score if face else 0.0,
                    fake_probability=float(prob),
                    head_probabilities=dict(zip(self.heads, map(float, scores.heads[n]))) if named_heads else {},
                    whole_image=face is None,
                    cut_off=face is not None and outside_fraction(face.box, images[i].shape[:2]) > CUT_OFF_FRACTION,
                    crop=crop.pixels,
                    crop_to_image=crop.crop_to_image,
                    cam=None if cams is None else cams[n],
                )
            )
        return results

    def attach_cams(self, faces: list[FaceResult], method: str, target: str = FAKE_TARGET) -> None:
        cams = self.cams([f.crop for f in faces], method, target)
        if cams is None:
            return
        for face, cam in zip(faces, cams):
            face.cam = cam


__all__ = ["CAM_METHODS", "FAKE_TARGET", "DetectionEngine", "Scores", "select_device"]
