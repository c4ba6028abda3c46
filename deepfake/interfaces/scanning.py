"""One file's analysis for a scan, shared by the local scan (CLI) and the Ray scan.

Both write the same rows of the export schema; a bad file is a failed row, never a crash.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from deepfake.detector import ImageDeepfakeDetector
from deepfake.engine import DetectionEngine
from deepfake.errors import DeepfakeError
from deepfake.exports import history_row
from deepfake.media import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, read_media
from deepfake.provenance.settings import ProvenanceSettings
from deepfake.video import VideoDeepfakeDetector

log = logging.getLogger("deepfake.interfaces.scanning")


@dataclass(frozen=True)
class ScanOptions:
    """What every file of a scan is analysed with (also shipped to Ray workers)."""

    threshold: float | None = None
    explain: bool = False
    heatmaps: str | None = None
    num_frames: int = 32
    provenance: ProvenanceSettings | None = None  # None: $DEEPFAKE_TRUST_ANCHORS, no GPS coordinates


@dataclass
class Outcome:
    """One file's row of the export schema, and its full ``to_dict()`` unless it failed."""

    index: int
    row: dict
    result: dict | None



def analyse_file(
    images: ImageDeepfakeDetector, videos: VideoDeepfakeDetector, path: str, options: ScanOptions
) -> tuple[dict, dict | None]:
    """Analyse one file with the given image and video detectors; never raises for a bad file."""
    kind = sha256 = ""  # known once the file is read
    try:
        media = read_media(path, name=path)
        kind, sha256 = media.kind, media.sha256
        common = {"name": media.name, "threshold": options.threshold, "explain": options.explain,
                  "output_dir": options.heatmaps}  # fmt: skip
        if media.kind == "image":
            result = images.detect(media, **common)
        else:
            result = videos.detect(media, num_frames=options.num_frames, **common)
    except DeepfakeError as exc:
        return history_row(file_name=path, error=exc.message, media_type=kind, sha256=sha256), None
    except Exception as exc:  # noqa: BLE001 - one file the engine chokes on must not end a scan of thousands
        log.warning("unexpected failure on %s", path, exc_info=True)  # a bug, not a bad file: keep the traceback
        error = f"unexpected error: {type(exc).__name__}: {exc}"
        return history_row(file_name=path, error=error, media_type=kind, sha256=sha256), None
    return result.history_row(), result.to_dict()


def find_files(paths: list[str], recursive: bool) -> list[str]:
    """Media files in the given folders (by extension) plus every file named explicitly, in order, once."""
    found: list[str] = []
    for given in paths:
        folder = Path(given)
        if folder.is_dir():
            entries = folder.rglob("*") if recursive else folder.iterdir()
            found += sorted(str(p) for p in entries
                            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)  # fmt: skip
        else:
            found.append(given)  # a missing or odd file is reported as a failed row, not dropped
    return list(dict.fromkeys(found))


def scan_local(files: list[str], engine: DetectionEngine, options: ScanOptions, workers: int) -> Iterator[Outcome]:
    """Outcomes in input order. Threads share the engine, whose lock serialises model calls;
    only a window of files is in flight, so memory does not grow with the collection."""
    images = ImageDeepfakeDetector(engine=engine, provenance=options.provenance)
    videos = VideoDeepfakeDetector(engine=engine, provenance=options.provenance)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scan")
    pending: deque[tuple[int, Future]] = deque()
    try:
        for index, path in enumerate(files):
            pending.append((index, pool.submit(analyse_file, images, videos, path, options)))
            if len(pending) > 2 * workers:
                done, future = pending.popleft()
                yield Outcome(done, *future.result())
        while pending:
            done, future = pending.popleft()
            yield Outcome(done, *future.result())
    finally:
        pool.shutdown(cancel_futures=True)  # on Ctrl-C or an error downstream, stop after the files in hand
