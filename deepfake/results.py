"""The one result type that the app, the API, the CLI and the exports share.

Results are dataclasses with ``to_dict()`` (JSON-safe) and dict-style access to the same keys.
Pixel data (the decoded image, face crops, CAMs) rides along for rendering but is never
serialised.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from deepfake.provenance.findings import Finding
from explainability.explanation_builder import SuspiciousRegion

REAL, FAKE, NO_FACE = "REAL", "FAKE", "NO FACE"

# The history/export schema: one row per analysed file, shared by the dashboard, API and CLI.
HISTORY_COLUMNS = (
    "analyzed_at", "file_name", "sha256", "media_type", "verdict", "classification", "fake_probability",
    "confidence", "threshold", "faces", "frames", "model_name", "model_version", "duration_ms", "warnings", "error",
    "blending_probability", "generation_probability", "dominant_evidence", "evidence", "decided_by",
)  # fmt: skip
EVIDENCE_KINDS = ("blending", "generation")  # the heads of a two-head (v2) model


def history_row_of(result: dict, file_name: str | None = None) -> dict:
    """One row of the shared history/export schema (HISTORY_COLUMNS) from a result's JSON
    (``to_dict()``, as the API returns it too); ``file_name`` replaces its source (the API strips paths)."""
    return {
        "analyzed_at": result["analyzed_at"],
        "file_name": result["source"] if file_name is None else file_name,
        "sha256": result["sha256"],
        "media_type": result["media_type"],
        "verdict": result["verdict"],
        "classification": result["classification"],
        "fake_probability": result["fake_probability"],
        "confidence": result["confidence"],
        "threshold": result["threshold"],
        "faces": result["face_count"],
        "frames": result.get("frames_analyzed", 0),
        "model_name": result["model_name"],
        "model_version": result["model_version"],
        "duration_ms": result["timings"]["total_ms"],
        "warnings": " | ".join(result["warnings"]),  # caveats travel with the verdict into every export
        "error": "",
        **{key: result[key] for key in ("blending_probability", "generation_probability", "dominant_evidence")},
        # What the file says about itself, in sentences (the model's own score has its columns).
        "evidence": " | ".join(f["summary"] for f in result["evidence"] if f["source"] != "model"),
        "decided_by": result["decided_by"] or "",
    }


def dominant_evidence(head_probabilities: dict[str, float]) -> str | None:
    """The kind of evidence that speaks loudest (the head with the higher probability), or None
    for a one-logit model."""
    named = {k: v for k, v in head_probabilities.items() if k in EVIDENCE_KINDS}
    return max(named, key=named.__getitem__) if named else None


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


def head_scores(head_probabilities: dict[str, float]) -> dict:
    """Both kinds of evidence and which dominates (None each for a one-logit model, or no face)."""
    return {"blending_probability": _rounded(head_probabilities.get("blending")),
            "generation_probability": _rounded(head_probabilities.get("generation")),
            "dominant_evidence": dominant_evidence(head_probabilities)}  # fmt: skip


def classify(probability: float, threshold: float) -> str:
    return FAKE if probability >= threshold else REAL


def deciding_face(faces: list[FaceResult]) -> FaceResult:
    """The face whose score is the picture's: the most suspicious whole face, or the most
    suspicious of all when every face is cut off by the picture's edge."""
    whole = [f for f in faces if not f.cut_off] or faces
    return max(whole, key=lambda f: f.fake_probability)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class Timings:
    """Milliseconds per stage."""

    decode_ms: float = 0.0
    faces_ms: float = 0.0
    model_ms: float = 0.0
    explanation_ms: float = 0.0
    total_ms: float = 0.0

    @classmethod
    def from_marks(cls, started: float, decoded: float, found: float, modelled: float, done: float) -> Timings:
        """From ``time.perf_counter()`` marks taken at the end of each stage."""
        return cls((decoded - started) * 1e3, (found - decoded) * 1e3, (modelled - found) * 1e3,
                   (done - modelled) * 1e3, (done - started) * 1e3)  # fmt: skip

    def to_dict(self) -> dict:
        return {k: round(float(v), 1) for k, v in dataclasses.asdict(self).items()}


@dataclass
class FaceResult:
    """One scored face (or the whole image when no face was found)."""

    box: tuple[float, float, float, float]
    landmarks: np.ndarray | None
    detector_score: float
    fake_probability: float
    suspicious_regions: list[SuspiciousRegion] = field(default_factory=list)
    explanation: str = ""
    whole_image: bool = False
    cut_off: bool = False  # partly outside the picture: scored, but it decides the verdict only if every face is
    crop: np.ndarray | None = field(default=None, repr=False)
    crop_to_image: np.ndarray | None = field(default=None, repr=False)
    cam: np.ndarray | None = field(default=None, repr=False)  # in crop coordinates, 0..1
    head_probabilities: dict[str, float] = field(default_factory=dict)  # each head's own calibrated score

    @property
    def dominant_evidence(self) -> str | None:
        return dominant_evidence(self.head_probabilities)

    def head_scores(self) -> dict:
        return head_scores(self.head_probabilities)

    def to_dict(self) -> dict:
        return {
            "box": [round(float(v), 1) for v in self.box],
            "landmarks": None
            if self.landmarks is None
            else [[round(float(x), 1), round(float(y), 1)] for x, y in self.landmarks],
            "detector_score": round(float(self.detector_score), 4),
            "fake_probability": round(float(self.fake_probability), 6),
            **self.head_scores(),
            "whole_image": self.whole_image,
            "cut_off": self.cut_off,
            "suspicious_regions": [r.to_dict() for r in self.suspicious_regions],
            "explanation": self.explanation,
        }


class _Mapping:
    """Dict-style read access to a result's JSON keys (``result["classification"]``)."""

    def to_dict(self) -> dict:  # pragma: no cover - overridden
        raise NotImplementedError

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_dict().get(key, default)

    def keys(self):
        return self.to_dict().keys()

    def __contains__(self, key: object) -> bool:
        return key in self.to_dict()


@dataclass
class AnalysisResult(_Mapping):
    """What image and video results have in common."""

    source: str
    sha256: str
    width: int
    height: int
    fake_probability: float
    threshold: float
    face_found: bool
    model_name: str
    model_version: str
    timings: Timings
    explanation: str = ""
    heatmap_overlay_path: str | None = None
    cam_method: str | None = None
    warnings: list[str] = field(default_factory=list)
    analyzed_at: str = field(default_factory=now_iso)
    # The model's finding, then what the file says about itself (deepfake.provenance.findings.ordered).
    evidence: list[Finding] = field(default_factory=list)

    media_type = "image"

    @property
    def model_classification(self) -> str:
        return classify(self.fake_probability, self.threshold)

    @property
    def decided_by(self) -> Finding | None:
        """A finding that declares the file AI-generated or AI-edited (a valid C2PA manifest, or
        embedded metadata): it makes the verdict FAKE whatever the model says."""
        return next((f for f in self.evidence if f.decides), None)

    @property
    def classification(self) -> str:
        return FAKE if self.decided_by is not None else self.model_classification

    @property
    def confidence(self) -> float:
        """The model's confidence in its own call (a declaration overruling it does not change it)."""
        return self.fake_probability if self.model_classification == FAKE else 1.0 - self.fake_probability

    @property
    def deciding(self) -> FaceResult | None:
        """The face whose score is the result's (for a video, in its most suspicious frame)."""
        raise NotImplementedError  # pragma: no cover - overridden

    def head_scores(self) -> dict:
        face = self.deciding
        return head_scores(face.head_probabilities if face else {})

    @property
    def verdict(self) -> str:
        """What a badge shows: REAL, FAKE, or NO FACE when the score is for the whole image;
        FAKE, with or without a face, when the file declares itself AI-made."""
        return self.classification if self.face_found or self.decided_by is not None else NO_FACE

    def _common_dict(self) -> dict:
        return {
            "source": self.source,
            "media_type": self.media_type,
            "sha256": self.sha256,
            "width": self.width,
            "height": self.height,
            "classification": self.classification,
            "verdict": self.verdict,
            "fake_probability": round(float(self.fake_probability), 6),
            **self.head_scores(),
            "confidence": round(float(self.confidence), 6),
            "threshold": float(self.threshold),
            "face_found": self.face_found,
            "explanation": self.explanation,
            "heatmap_overlay_path": self.heatmap_overlay_path,
            "cam_method": self.cam_method,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "timings": self.timings.to_dict(),
            "warnings": list(self.warnings),
            "analyzed_at": self.analyzed_at,
            "model_classification": self.model_classification,
            "decided_by": self.decided_by.assertion if self.decided_by else None,
            "evidence": [f.to_dict() for f in self.evidence],
        }

    def history_row(self) -> dict:
        """One row of the shared history/export schema (see HISTORY_COLUMNS)."""
        return history_row_of(self.to_dict())

    @property
    def face_count(self) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def frame_count(self) -> int:
        return 0


@dataclass
class DetectionResult(AnalysisResult):
    faces: list[FaceResult] = field(default_factory=list)
    jpeg_quality: int | None = None  # estimated from the file's quantisation tables; None if not a JPEG file
    image: np.ndarray | None = field(default=None, repr=False)

    media_type = "image"

    @property
    def face_count(self) -> int:
        return sum(not f.whole_image for f in self.faces)

    @property
    def deciding(self) -> FaceResult | None:
        return deciding_face(self.faces) if self.faces else None

    def to_dict(self) -> dict:
        return {**self._common_dict(), "face_count": self.face_count, "jpeg_quality": self.jpeg_quality,
                "faces": [f.to_dict() for f in self.faces]}  # fmt: skip


@dataclass
class FrameResult:
    """One sampled video frame: its faces and its score (the highest face)."""

    index: int
    time_s: float
    fake_probability: float
    face_found: bool
    faces: list[FaceResult] = field(default_factory=list)
    heatmap_overlay_path: str | None = None
    image: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        return {
            "index": int(self.index),
            "time_s": round(float(self.time_s), 3),
            "fake_probability": round(float(self.fake_probability), 6),
            "face_found": self.face_found,
            "face_probabilities": [round(float(f.fake_probability), 6) for f in self.faces if not f.whole_image],
            "faces": [f.to_dict() for f in self.faces],
            "heatmap_overlay_path": self.heatmap_overlay_path,
        }


@dataclass
class VideoResult(AnalysisResult):
    fps: float = 0.0
    duration_s: float = 0.0
    decoded_until_s: float | None = None  # frames stopped here, before the stated end: truncated or damaged
    aggregation: dict = field(default_factory=dict)
    timeline: list[FrameResult] = field(default_factory=list)
    suspicious_frames: list[int] = field(default_factory=list)  # positions in ``timeline``, most suspicious first
    annotated_video_path: str | None = None

    media_type = "video"

    @property
    def deciding(self) -> FaceResult | None:
        if not self.suspicious_frames:
            return None
        faces = self.timeline[self.suspicious_frames[0]].faces
        return deciding_face(faces) if faces else None

    @property
    def face_count(self) -> int:
        """Most faces seen in one sampled frame."""
        return max((sum(not f.whole_image for f in fr.faces) for fr in self.timeline), default=0)

    @property
    def frame_count(self) -> int:
        return len(self.timeline)

    def to_dict(self) -> dict:
        return {
            **self._common_dict(),
            "fps": round(float(self.fps), 3),
            "duration_s": round(float(self.duration_s), 3),
            "decoded_until_s": None if self.decoded_until_s is None else round(float(self.decoded_until_s), 3),
            "frames_analyzed": self.frame_count,
            "face_count": self.face_count,
            "aggregation": self.aggregation,
            "timeline": [fr.to_dict() for fr in self.timeline],
            "suspicious_frames": [self.timeline[i].index for i in self.suspicious_frames],
            "annotated_video_path": self.annotated_video_path,
        }

