"""Shared fixtures: sample pictures, a random-weight checkpoint, one engine per session, a synthetic clip.

Everything is made offline from data that ships with the installed packages; nothing is read
from ``shared/``.
"""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
import cv2
import matplotlib.cbook
import numpy as np
import pytest
import skimage.data
import torch
from torch import nn

from deepfake.engine import DetectionEngine
from deepfake.loading import save_checkpoint
from deepfake.media import load_image
from deepfake.model import ModelConfig, create_model, default_config

# One intra-op thread: on a small, busy machine (a training job next door) PyTorch's thread pool
# makes a forward pass over 10x slower than a single thread does.
torch.set_num_threads(1)
cv2.setNumThreads(1)

CLIP_SIZE = (320, 240)  # width, height
CLIP_FPS = 10
CLIP_FRAMES = 20


def make_clip(frames: list[np.ndarray], fps: float, codec: str = "libx264") -> bytes:
    """Encode RGB uint8 frames (all the same even size) as an MP4 in memory."""
    height, width = frames[0].shape[:2]
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def face_frames(face: np.ndarray, count: int = CLIP_FRAMES, size: tuple[int, int] = CLIP_SIZE) -> list[np.ndarray]:
    """``face`` (resized to 2/3 of the frame height) moving 3 px right per frame on grey."""
    width, height = size
    face_h = height * 2 // 3
    face_w = round(face.shape[1] * face_h / face.shape[0])
    small = cv2.resize(face, (face_w, face_h), interpolation=cv2.INTER_AREA)
    top = (height - face_h) // 2
    frames = []
    for i in range(count):
        frame = np.full((height, width, 3), 128, np.uint8)
        left = 40 + 3 * i
        frame[top : top + face_h, left : left + face_w] = small
        frames.append(frame)
    return frames


@pytest.fixture(scope="session")
def hopper_path() -> Path:
    return Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


@pytest.fixture(scope="session")
def hopper_rgb(hopper_path) -> np.ndarray:
    return load_image(hopper_path)


@pytest.fixture(scope="session")
def hopper_jpeg_bytes(hopper_path) -> bytes:
    return hopper_path.read_bytes()


@pytest.fixture(scope="session")
def astronaut_rgb() -> np.ndarray:
    return skimage.data.astronaut()


def random_model(seed: int = 0, outputs: int = 1) -> nn.Module:
    """EfficientNet-Lite0 with random weights whose BatchNorm statistics are measured on noise.

    With the default BN statistics (mean 0, var 1) the random network's activations shrink to
    ~1e-8 and every input gets the same score; measured statistics keep them at unit scale, so
    the score depends on the picture and Grad-CAM maps are not flat.
    """
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = create_model("efficientnet_lite0", num_outputs=outputs)
        norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # cumulative average over the calibration batch
        model.train()
        with torch.no_grad():
            model(torch.rand(8, 3, 224, 224) * 2 - 1)
        for norm in norms:
            norm.momentum = 0.01
        return model.eval()
    finally:
        torch.random.set_rng_state(generator_state)


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "random_lite0.pth"
    save_checkpoint(path, random_model(), default_config("efficientnet_lite0"), version="test")
    return path


TWO_HEADS = ModelConfig(arch="efficientnet_lite0", heads=("blending", "generation"), combine_weights=(0.8, 1.2),
                        combine_bias=-0.3, head_temperatures=(1.5, 0.7))  # fmt: skip


@pytest.fixture(scope="session")
def two_head_checkpoint(tmp_path_factory) -> Path:
    """A detector v2 layout: two heads, each calibrated, combined by a fitted weighting."""
    path = tmp_path_factory.mktemp("models") / "random_two_heads.pth"
    save_checkpoint(path, random_model(1, outputs=2), TWO_HEADS, version="test-2h")
    return path


@pytest.fixture(scope="session")
def engine(random_checkpoint) -> DetectionEngine:
    return DetectionEngine.load(random_checkpoint, device="cpu")


@pytest.fixture(scope="session")
def synthetic_clip(hopper_rgb) -> bytes:
    """2 s, 10 fps, 320x240 H.264 MP4 of Grace Hopper's face drifting right on grey."""
    return make_clip(face_frames(hopper_rgb), CLIP_FPS)
