"""Deepfake detection workbench: face-aware image and video detectors with Grad-CAM explanations.

The public names load on first use, so ``import deepfake.results`` (or the explainability
package, which builds on it) does not pull in the whole engine.
"""

from typing import TYPE_CHECKING

from deepfake.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "DeepfakeError": "deepfake.errors",
    "DetectionEngine": "deepfake.engine",
    "DetectionResult": "deepfake.results",
    "FaceResult": "deepfake.results",
    "FrameResult": "deepfake.results",
    "ImageDeepfakeDetector": "deepfake.detector",
    "InputError": "deepfake.errors",
    "ModelError": "deepfake.errors",
    "VideoDeepfakeDetector": "deepfake.video",
    "VideoResult": "deepfake.results",
}

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

if TYPE_CHECKING:
    from deepfake.detector import ImageDeepfakeDetector
    from deepfake.engine import DetectionEngine
    from deepfake.errors import DeepfakeError, InputError, ModelError
    from deepfake.results import DetectionResult, FaceResult, FrameResult, VideoResult
    from deepfake.video import VideoDeepfakeDetector


__getattr__ = lazy_exports(__name__, _EXPORTS)
