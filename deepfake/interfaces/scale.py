"""``scan`` on a Ray cluster: ``python -m deepfake scan PATH... --engine ray [--address ADDR]``.

Ray Data maps the file list through a pool of actors (``map_batches`` with a callable class),
each holding one loaded engine, so a model is loaded once per worker, not once per file. Rows
stream back to the driver in input order, which writes the same CSV/JSON as a local scan.

The checkpoint travels through Ray's object store, so workers need not have it; the files to scan
(and ``--heatmaps``) must be at the same paths on every node, e.g. a shared filesystem, and every
node needs this package and its requirements (the Docker image has both).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import numpy as np
import ray
import ray.data
import torch

from deepfake.detector import ImageDeepfakeDetector
from deepfake.engine import DetectionEngine
from deepfake.interfaces.scanning import Outcome, ScanOptions, analyse_file
from deepfake.loading import DEFAULT_MODEL_PATH, load_model
from deepfake.video import VideoDeepfakeDetector


class DetectorActor:
    """One per Ray worker: loads the engine once, then analyses one batch of paths per call."""

    def __init__(self, model: list[ray.ObjectRef], model_name: str, options: ScanOptions, device: str | None,
                 trust_pickle: bool) -> None:  # fmt: skip
        torch.set_num_threads(1)  # one CPU per actor: the pool, not intra-op threads, uses the cores
        self._folder = tempfile.TemporaryDirectory(prefix="deepfake-ray-")
        path = Path(self._folder.name) / model_name  # same file name, so the model reports the same name
        path.write_bytes(ray.get(model[0]))
        engine = DetectionEngine.load(path, device=device, trust_pickle=trust_pickle)
        self.images = ImageDeepfakeDetector(engine=engine, provenance=options.provenance)
        self.videos = VideoDeepfakeDetector(engine=engine, provenance=options.provenance)
        self.options = options

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        rows, results = [], []
        for path in batch["path"]:
            row, result = analyse_file(self.images, self.videos, str(path), self.options)
            # JSON strings: nested results of varying shape do not fit an Arrow schema.
            rows.append(json.dumps(row))
            results.append(json.dumps(result))
        return {"index": batch["index"], "row": rows, "result": results}


class RayScan:
    """A scan on Ray. Joins ``address`` (or $RAY_ADDRESS, else starts a local Ray) on enter, and
    shuts down on exit only a Ray it started itself."""

    def __init__(self, model: str | None, options: ScanOptions, *, workers: int | None = None,
                 address: str | None = None, device: str | None = None, trust_pickle: bool = False) -> None:  # fmt: skip
        self.model_path = Path(model) if model else DEFAULT_MODEL_PATH
        self.options = options
        self.workers = workers or 0
        self.address = address
        self.device = device
        self.trust_pickle = trust_pickle
        self._started = False

    def __enter__(self) -> RayScan:
        load_model(self.model_path, device="cpu", trust_pickle=self.trust_pickle)  # a bad model fails here, clearly
        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
            self._started = True
        self.workers = self.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # the report lists files in the order given
        context.enable_progress_bars = False  # the CLI draws its own
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # per-dataset INFO lines would break up the bar
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if self._started:
            ray.shutdown()

    def run(self, files: list[str]) -> Iterator[Outcome]:
        model = ray.put(self.model_path.read_bytes())
        dataset = ray.data.from_items([{"index": i, "path": path} for i, path in enumerate(files)])
        dataset = dataset.map_batches(
            DetectorActor,
            fn_constructor_kwargs={
                "model": [model],
                "model_name": self.model_path.name,
                "options": self.options,
                "device": self.device,
                "trust_pickle": self.trust_pickle,
            },  # fmt: skip
            batch_size=1,  # images and videos differ a hundredfold in cost: hand them out one by one
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=min(self.workers, len(files))),
            num_cpus=1,
        )
        for item in dataset.iter_rows():
            yield Outcome(int(item["index"]), json.loads(item["row"]), json.loads(item["result"]))
