"""Throughput of ``scan``: local threads (``--workers N``) against Ray actors, in images per second.

    python benchmarks/bench_scan.py [--model models/image_model.pth] [--images 60] [--workers 1 2] [--ray 2]

Protocol: N copies of the bundled Grace Hopper photo scaled to 1 MP (JPEG, one face), scanned as
``scan`` does without ``--heatmaps`` (face detection + scoring, no Grad-CAM). Local runs share one
engine loaded beforehand and are timed from the first file to the last. Ray runs start a local Ray
(one actor per worker, one CPU each) and are timed twice: end to end (Ray start, actor start and
model loading included) and steady state (first result to last). Prints a markdown table.
Throughput does not depend on the weights, so without ``--model`` a random-weight checkpoint is used.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from bench_engine import photo_1mp

from deepfake import DetectionEngine
from deepfake.interfaces.scanning import ScanOptions, scan_local
from deepfake.loading import save_checkpoint
from deepfake.model import create_model, default_config


def local_rate(files: list[str], engine: DetectionEngine, workers: int) -> float:
    started = time.perf_counter()
    outcomes = list(scan_local(files, engine, ScanOptions(), workers))
    assert all(o.result is not None for o in outcomes)
    return len(files) / (time.perf_counter() - started)


def ray_rates(files: list[str], model: str, workers: int) -> tuple[float, float]:
    from deepfake.interfaces.scale import RayScan

    started = time.perf_counter()
    arrivals = []
    with RayScan(model, ScanOptions(), workers=workers) as scan:
        for outcome in scan.run(files):
            assert outcome.result is not None
            arrivals.append(time.perf_counter())
    end_to_end = len(files) / (arrivals[-1] - started)
    steady = (len(files) - 1) / (arrivals[-1] - arrivals[0])
    return end_to_end, steady


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model")
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--ray", type=int, nargs="*", default=[2], help="Ray actor counts (none: skip Ray)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        model = args.model
        if model is None:
            model = str(Path(folder) / "random.pth")
            save_checkpoint(model, create_model("efficientnet_lite0"), default_config("efficientnet_lite0"))
        photo = photo_1mp()
        files = []
        for i in range(args.images):
            files.append(str(Path(folder) / f"photo_{i:04d}.jpg"))
            Path(files[-1]).write_bytes(photo)

        engine = DetectionEngine.load(model, device="cpu")
        list(scan_local(files[:3], engine, ScanOptions(), 1))  # warm-up: first calls allocate
        load_before = os.getloadavg()[0]
        rows = [(f"local threads, --workers {w}", f"{local_rate(files, engine, w):.2f}", "") for w in args.workers]
        for actors in args.ray:
            end_to_end, steady = ray_rates(files, model, actors)
            name = f"Ray Data, {actors} actor{'' if actors == 1 else 's'} (local Ray)"
            rows.append((name, f"{steady:.2f}", f"{end_to_end:.2f}"))
        load_after = os.getloadavg()[0]

    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
          f"({torch.get_num_threads()} intra-op threads), {platform.python_version()}; "
          f"1-min load average {load_before:.1f} before, {load_after:.1f} after.")  # fmt: skip
    print(f"Protocol: {args.images} x 1 MP JPEG (one face), scan without --heatmaps.\n")
    print("| path | images/s (steady) | images/s (end to end, with Ray and model start) |")
    print("|---|---:|---:|")
    for name, steady, end_to_end in rows:
        print(f"| {name} | {steady} | {end_to_end or 'same'} |")


if __name__ == "__main__":
    main()
