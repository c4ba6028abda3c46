"""Per-stage speed of the engine: a 1-megapixel photo and a 10 s 720p clip at 32 frames.

    python benchmarks/bench_engine.py [--model models/image_model.pth] [--runs 15]

Prints medians and writes the engine section of reports/BENCHMARKS.md. Inputs are made here:
the bundled Grace Hopper photo scaled to 1 MP, and a clip written with PyAV in which that face
drifts over a textured background (H.264, 25 fps, keyframe every 250 frames as x264's default).

The yardstick is measured in the same run: one forward pass of EfficientNet-B4 at 380 px on one
face (random weights), the network of Self-Blended Images, a common deepfake detector. The whole
photo analysis, explanation included, is to take at most half of it.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import av
import cv2
import numpy as np
import torch
import torchvision
from matplotlib import cbook
from reporting import cpu_name, load_average, photo_1mp, publish

from deepfake import DetectionEngine, ImageDeepfakeDetector, VideoDeepfakeDetector
from deepfake.media import load_image

STAGES = ("decode_ms", "faces_ms", "model_ms", "explanation_ms", "total_ms")
REFERENCE_SIZE = 380  # EfficientNet-B4's input in Self-Blended Images


def clip_720p(seconds: int = 10, fps: int = 25) -> bytes:
    face = load_image(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    face = cv2.resize(face, (300, 352))
    rng = np.random.default_rng(0)
    background = cv2.GaussianBlur(rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8), (0, 0), 6)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        for i in range(seconds * fps):
            frame = background.copy()
            x = 200 + int(600 * i / (seconds * fps))
            y = 180 + int(40 * np.sin(i / 10))
            frame[y : y + 352, x : x + 300] = face
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def medians(timings: list[dict]) -> dict:
    return {stage: statistics.median(t[stage] for t in timings) for stage in STAGES}


def reference_forward() -> Callable[[], float]:
    """A timer of one EfficientNet-B4 forward pass at 380 px on one face: milliseconds per call."""
    model = torchvision.models.efficientnet_b4(weights=None).eval()
    face = torch.rand(1, 3, REFERENCE_SIZE, REFERENCE_SIZE)

    def forward_ms() -> float:
        with torch.inference_mode():
            started = time.perf_counter()
            model(face)
            return (time.perf_counter() - started) * 1e3

    return forward_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--video-runs", type=int, default=5)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    load_before = load_average()
    engine = DetectionEngine.load(args.model, device="cpu")
    photo, clip = photo_1mp(), clip_720p()
    reference = reference_forward()
    with tempfile.TemporaryDirectory() as out:
        images = ImageDeepfakeDetector(engine=engine, output_dir=out)
        videos = VideoDeepfakeDetector(engine=engine, output_dir=out)
        for _ in range(3):  # warm-up: first calls allocate and pick kernels
            images.detect(photo, name="photo.jpg")
            images.detect(photo, name="photo.jpg", explain=False)
            reference()
        # Interleaved with the reference, so that a load that comes and goes weighs on both alike.
        photo_runs, plain_runs, reference_runs = [], [], []
        for _ in range(args.runs):
            photo_runs.append(images.detect(photo, name="photo.jpg").timings.to_dict())
            plain_runs.append(images.detect(photo, name="photo.jpg", explain=False).timings.to_dict())
            reference_runs.append(reference())
        videos.detect(clip, name="clip.mp4", num_frames=32)
        video_runs = []
        for _ in range(args.video_runs):
            started = time.perf_counter()
            result = videos.detect(clip, name="clip.mp4", num_frames=32)
            video_runs.append({**result.timings.to_dict(), "wall_ms": (time.perf_counter() - started) * 1e3})
        faces_found = sum(fr.face_found for fr in result.timeline)

    photo_med, plain_med, video_med = medians(photo_runs), medians(plain_runs), medians(video_runs)
    reference_ms = statistics.median(reference_runs)
    ratio = photo_med["total_ms"] / reference_ms
    size = "{}x{}".format(*cv2.imdecode(np.frombuffer(photo, np.uint8), cv2.IMREAD_COLOR).shape[1::-1])
    lines = [
        "## Engine (benchmarks/bench_engine.py)", "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"OpenCV {cv2.__version__} ({cv2.getNumThreads()} threads), CPU only. Model: {engine.model.name} "
        f"{engine.model.version}. Medians of {args.runs} runs of each photo analysis (interleaved with as many "
        f"reference passes) and {args.video_runs} video runs, after warm-up. Load average (1, 5, 15 min) "
        f"{load_before} before the run and {load_average()} after it.", "",
        f"Reference: EfficientNet-B4 at {REFERENCE_SIZE} px, one face, random weights, one forward pass: "
        f"**{reference_ms:.0f} ms**. The photo with Grad-CAM and overlay took **{ratio:.2f}x** that (target ≤ 0.5x).", "",
        "| input | decode | faces | model | explanation | total | target |", "|---|---|---|---|---|---|---|",
        "| photo 1 MP JPEG ({}), Grad-CAM + overlay PNG | {} | {} | {} | {} | **{}** | ≤ {:.0f} ms (0.5x reference) |".format(
            size, *(f"{photo_med[s]:.0f} ms" for s in STAGES), reference_ms / 2),
        "| photo 1 MP JPEG ({}), no explanation | {} | {} | {} | {} | **{}** | ≤ 60 ms |".format(
            size, *(f"{plain_med[s]:.0f} ms" for s in STAGES)),
        "| clip 10 s 720p H.264, 32 frames, 3 heatmaps | {} | {} | {} | {} | **{}** | ≤ 1.7 s |".format(
            *(f"{video_med[s] / 1000:.2f} s" for s in STAGES)),
        "", f"Faces were found in {faces_found} of {len(result.timeline)} sampled frames. For the photo, the "
        "model stage includes Grad-CAM (its forward pass gives the scores too) and, for a model with "
        "flip_average, a pass over the mirrored crops; explanation is the suspicious "
        "regions, the overlay and writing the PNG. For the clip, every frame is scored first and Grad-CAM runs "
        "on the 3 most suspicious frames, inside explanation.", "",
    ]  # fmt: skip
    publish(lines, write=not args.no_write)


if __name__ == "__main__":
    main()
