"""Deepfake detection workbench: face-aware image and video detectors with Grad-CAM explanations."""

from deepfake.detector import ImageDeepfakeDetector
from deepfake.engine import DetectionEngine
from deepfake.errors import DeepfakeError, InputError, ModelError
from deepfake.results import DetectionResult, FaceResult, FrameResult, VideoResult
from deepfake.video import VideoDeepfakeDetector

__version__ = "0.1.0"

__all__ = [
    "DeepfakeError",
    "DetectionEngine",
    "DetectionResult",
    "FaceResult",
    "FrameResult",
    "ImageDeepfakeDetector",
    "InputError",
    "ModelError",
    "VideoDeepfakeDetector",
    "VideoResult",
]
