"""Explanations for the deepfake detector: Grad-CAM maps and what they point at."""

from explainability.explanation_builder import (
    FACE_PARTS,
    SuspiciousRegion,
    cam_to_image,
    colorize,
    describe_regions,
    draw_regions,
    find_suspicious_regions,
    merge_cams,
    overlay,
)
from explainability.gradcam import (
    CAM_METHODS,
    BaseCAM,
    GradCAM,
    GradCAMPlusPlus,
    create_cam,
)

__all__ = [
    "CAM_METHODS",
    "FACE_PARTS",
    "BaseCAM",
    "GradCAM",
    "GradCAMPlusPlus",
    "SuspiciousRegion",
    "cam_to_image",
    "colorize",
    "create_cam",
    "describe_regions",
    "draw_regions",
    "find_suspicious_regions",
    "merge_cams",
    "overlay",
]
