"""Faces found by YuNet (the engine's detector) and by MTCNN (the one before it), side by side.

    python benchmarks/bench_faces.py --data ../shared/data [--per-set 300] [--no-write]

Sets: every photo in ``photos/real``; ``--per-set`` files drawn (seed 0) from each face folder;
16 frames of each news clip in ``videos/real``, sampled as the video detector samples them.
For each detector: the share of images with a face, faces per image and the median time per
image (CPU time, resizing included). Then YuNet alone at other score thresholds and search sizes: the
measurements its settings in deepfake/faces.py were chosen by. Writes the faces section of
reports/BENCHMARKS.md.

MTCNN comes from facenet-pytorch, which the project no longer installs; for its column,
``pip install facenet-pytorch==2.5.3`` (without it, YuNet is measured alone).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import cv2
import numpy as np
import torch
from reporting import cpu_name, load_average, publish

from deepfake.faces import MAX_SIDE, MIN_SCORE, FaceDetector, face_detector
from deepfake.media import IMAGE_EXTENSIONS, load_image
from deepfake.video import sample_frames

FACE_SETS = {  # name in the report: folder under the data root
    "LFW": "faces/real/lfw",
    "UTK": "faces/real/utk",
    "FFHQ": "faces/real/ffhq",
    "GAN": "faces/fake/gan",
    "StyleGAN (FFHQ pipeline)": "faces/fake/stylegan_ffhq",
    "SD 2.1": "faces/fake/sd21",
}
FRAMES_PER_CLIP = 16
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
SIDES = (320, 480, 640)
# MTCNN as the engine ran it: faces of 20 px and more, searched at 640 px, kept at 0.9.
MTCNN_MIN_FACE, MTCNN_MIN_SCORE, MTCNN_MAX_SIDE = 20, 0.9, 640

Boxes = list[tuple[float, float, float, float, float]]  # x1, y1, x2, y2, score


@dataclass
class Run:
    """One detector over one set: the faces of every image and the time each took."""

    boxes: list[Boxes] = field(default_factory=list)
    ms: list[float] = field(default_factory=list)

    def found(self, min_score: float = 0.0) -> int:
        return sum(any(b[4] >= min_score for b in boxes) for boxes in self.boxes)

    def faces(self, min_score: float = 0.0) -> int:
        return sum(b[4] >= min_score for boxes in self.boxes for b in boxes)


def sample_sets(root: Path, per_set: int) -> dict[str, list[np.ndarray]]:
    sets = {"photos/real": [load_image(p) for p in sorted((root / "photos" / "real").iterdir())]}
    for name, folder in FACE_SETS.items():
        files = sorted(p for p in (root / folder).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        random.Random(0).shuffle(files)
        sets[name] = [load_image(p) for p in files[:per_set]]
    clips = sorted((root / "videos" / "real").glob("*.mp4"))
    sets[f"news clips ({len(clips)}), {FRAMES_PER_CLIP} frames each"] = [
        frame.image for clip in clips for frame in sample_frames(clip.read_bytes(), clip.name, FRAMES_PER_CLIP)[1]
    ]
    return sets


def yunet(detector: FaceDetector) -> Callable[[np.ndarray], Boxes]:
    return lambda image: [(*f.box, f.score) for f in detector.detect(image)]


def mtcnn() -> Callable[[np.ndarray], Boxes] | None:
    try:
        from facenet_pytorch import MTCNN
    except ImportError:
        return None
    net = MTCNN(keep_all=True, min_face_size=MTCNN_MIN_FACE, post_process=False)

    def detect(image: np.ndarray) -> Boxes:
        height, width = image.shape[:2]
        scale = min(1.0, MTCNN_MAX_SIDE / max(height, width))
        if scale < 1.0:
            image = cv2.resize(image, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
        with torch.inference_mode():
            boxes, probs = net.detect(image)
        if boxes is None:
            return []
        found = []
        for box, prob in zip(boxes, probs):
            x1, y1, x2, y2 = np.clip(box / scale, 0, [width, height, width, height])  # as the engine clipped them
            if prob >= MTCNN_MIN_SCORE and x2 - x1 >= 2 and y2 - y1 >= 2:
                found.append((float(x1), float(y1), float(x2), float(y2), float(prob)))
        return found

    return detect


def run(detect: Callable[[np.ndarray], Boxes], images: list[np.ndarray]) -> Run:
    detect(images[0])  # warm-up: the first call sizes buffers
    result = Run()
    for image in images:
        started = time.process_time()  # CPU time: other work on a shared machine hardly moves it
        result.boxes.append(detect(image))
        result.ms.append((time.process_time() - started) * 1e3)
    return result


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def agreement(ours: Run, theirs: Run) -> tuple[int, int, int, float]:
    """Images with a face for MTCNN only and for YuNet only, MTCNN faces YuNet has no box on
    (IoU < 0.3), and the median ratio of YuNet's box side to MTCNN's on the faces both found."""
    only_theirs = sum(bool(t) and not o for o, t in zip(ours.boxes, theirs.boxes))
    only_ours = sum(bool(o) and not t for o, t in zip(ours.boxes, theirs.boxes))
    missed, ratios = 0, []
    for o, t in zip(ours.boxes, theirs.boxes):
        for face in t:
            best = max(o, key=lambda b: _iou(face, b), default=None)
            if best is None or _iou(face, best) < 0.3:
                missed += 1
            else:
                ratios.append(max(best[2] - best[0], best[3] - best[1]) / max(face[2] - face[0], face[3] - face[1]))
    return only_theirs, only_ours, missed, statistics.median(ratios) if ratios else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--per-set", type=int, default=300)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    # One thread each, so that CPU time is the time a call takes alone: on a shared machine
    # PyTorch's thread pool made MTCNN take 14 s a photo (wall clock) next to a training job.
    torch.set_num_threads(1)
    cv2.setNumThreads(1)

    load_before = load_average()
    sets = sample_sets(Path(args.data), args.per_set)
    reference = mtcnn()
    sweep_detectors = {side: FaceDetector(min_score=min(THRESHOLDS), max_side=side) for side in SIDES}
    main_rows, agree_rows, threshold_rows, side_rows = [], [], [], []
    for name, images in sets.items():
        ours = run(yunet(face_detector()), images)
        n = len(images)
        row = f"| {name} | {n} | {ours.found()} ({ours.found() / n:.1%}) | {ours.faces() / n:.2f} | {statistics.median(ours.ms):.1f} |"
        if reference is not None:
            theirs = run(reference, images)
            row += f" {theirs.found()} ({theirs.found() / n:.1%}) | {theirs.faces() / n:.2f} | {statistics.median(theirs.ms):.1f} |"
            only_theirs, only_ours, missed, ratio = agreement(ours, theirs)
            agree_rows.append(f"| {name} | {only_theirs} | {only_ours} | {missed} | {ratio:.2f} |")
        main_rows.append(row)
        swept = {side: run(yunet(detector), images) for side, detector in sweep_detectors.items()}
        threshold_rows.append(f"| {name} | " + " | ".join(
            f"{swept[MAX_SIDE].found(t)} / {swept[MAX_SIDE].faces(t)}" for t in THRESHOLDS) + " |")  # fmt: skip
        side_rows.append(f"| {name} | " + " | ".join(
            f"{swept[s].found(MIN_SCORE)} / {swept[s].faces(MIN_SCORE)}, {statistics.median(swept[s].ms):.1f} ms"
            for s in SIDES) + " |")  # fmt: skip
        print(main_rows[-1], flush=True)

    mtcnn_head = " MTCNN: with a face | faces/image | ms |" if reference is not None else ""
    lines = [
        "## Faces: YuNet against MTCNN (benchmarks/bench_faces.py)", "",
        f"Protocol (`python benchmarks/bench_faces.py --data ../shared/data --per-set {args.per_set}`), run "
        f"{date.today().isoformat()}: every photo in `photos/real`, {args.per_set} files drawn with seed 0 from each "
        f"face folder, and {FRAMES_PER_CLIP} frames of each news clip in `videos/real` sampled as the video detector "
        f"samples them. YuNet as the engine runs it (score ≥ {MIN_SCORE}, searched at ≤ {MAX_SIDE} px); MTCNN as the "
        f"engine ran it before (facenet-pytorch, faces ≥ {MTCNN_MIN_FACE} px, searched at ≤ {MTCNN_MAX_SIDE} px, "
        f"score ≥ {MTCNN_MIN_SCORE}). Time: median CPU time per image, resizing included, one image at a time on "
        "one thread (the engine gives OpenCV every core: about 1.7x faster on 2 cores).", "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, OpenCV {cv2.__version__}, torch {torch.__version__}. Load average (1, 5, 15 min) {load_before} before the run and "
        f"{load_average()} after it: the machine is shared, so CPU times, less moved by the load than the wall clock, "
        "are reported.", "",
        f"| set | images | YuNet: with a face | faces/image | ms |{mtcnn_head}",
        "|---|---:|---:|---:|---:|" + ("---:|---:|---:|" if reference is not None else ""),
        *main_rows, "",
    ]  # fmt: skip
    if reference is not None:
        lines += [
            "Where they differ: images where only one detector found a face; MTCNN faces on which YuNet put no "
            "box (IoU < 0.3); YuNet's box side over MTCNN's, median, on faces both found (the crop is 1.3x this "
            "side, so this is how much the framing changes).", "",
            "| set | face for MTCNN only | face for YuNet only | MTCNN faces YuNet has not | YuNet / MTCNN side |",
            "|---|---:|---:|---:|---:|", *agree_rows, "",
        ]  # fmt: skip
    lines += [
        f"YuNet at other score thresholds (searched at {MAX_SIDE} px): images with a face / faces.", "",
        "| set | " + " | ".join(f"≥ {t}" for t in THRESHOLDS) + " |", "|---|" + "---:|" * len(THRESHOLDS),
        *threshold_rows, "",
        f"YuNet at other search sizes (score ≥ {MIN_SCORE}): images with a face / faces, median time. Images no "
        "larger than the size are searched as they are.", "",
        "| set | " + " | ".join(f"≤ {s} px" for s in SIDES) + " |", "|---|" + "---:|" * len(SIDES), *side_rows, "",
    ]  # fmt: skip
    publish(lines, write=not args.no_write)


if __name__ == "__main__":
    main()
