"""Training data: folder layout, identity-aware splits and the face-crop cache.

Layout: ``<root>/real/<source>/**`` and ``<root>/fake/<source>/**``, plus, optionally, a folder of
authentic videos whose sampled frames are real faces too (source ``video``, identity = the clip).
Every image goes through the engine's face detector and cropper once; crops (with a wider margin
than inference, so training can jitter the framing) and their landmarks are cached as a
memory-mapped array. TAEF2 reconstructions of a share of the real crops are cached beside them
(``add_reconstructions``): slow to make (about a second a crop on 2 cores), used for many samples.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import av
import cv2
import numpy as np
from tqdm import tqdm

from deepfake.errors import DeepfakeError
from deepfake.faces import Face, crop_face, face_detector
from deepfake.media import IMAGE_EXTENSIONS, jpeg_quality, load_image

log = logging.getLogger(__name__)

CACHE_MARGIN = 1.6
CACHE_SIZE = 288
LABELS = {"real": 0, "fake": 1}
VIDEO_SOURCE = "video"
FRAME_SEP = "#frame="  # a record's path for a video frame: <clip path>#frame=<index>
# The cache every report in reports/ was measured on: every 5th frame of each clip (40 of an 8 s HDTF
# clip), 250 TAEF2 renderings a real source in the first call (it draws the held-out renderings, hence the
# evaluation's made crops), then 1000 a source (training crops only). These defaults rebuild it; a cache
# rebuilt with every 8th frame and 150 renderings (the defaults before 2026-12-07) scored other made crops.
FRAME_EVERY = 5
RECONSTRUCTIONS_PER_SOURCE = 250
UTK_RACES = {"0": "white", "1": "black", "2": "asian", "3": "indian", "4": "other"}
GENDERS = {"0": "male", "1": "female"}


@dataclass
class Record:
    path: str
    label: int  # 0 real, 1 fake
    source: str  # first folder under real/ or fake/
    identity: str  # files of one identity never straddle train and validation
    gender: str = ""
    group: str = ""  # ethnicity/race where the file name says


def _demographics(source: str, path: Path) -> tuple[str, str]:
    parts = path.stem.split("_")
    if source == "utk" and len(parts) >= 4:
        return GENDERS.get(parts[1], ""), UTK_RACES.get(parts[2], "")
    if source == "gan" and len(parts) >= 3 and parts[0] in ("male", "female"):
        return parts[0], parts[1]
    return "", ""


def scan(root: str | Path) -> list[Record]:
    """Every image under real/ and fake/; identity = the person folder where there is one."""
    root = Path(root)
    records = []
    for class_name, label in LABELS.items():
        base = root / class_name
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*")):
            if path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file():
                continue
            relative = path.relative_to(base)
            source = relative.parts[0] if len(relative.parts) > 1 else class_name
            # A folder between the source and the file is a person (LFW); otherwise the file is.
            identity = "/".join(relative.parts[:-1]) if len(relative.parts) > 2 else str(relative)
            gender, group = _demographics(source, path)
            records.append(Record(str(path), label, source, f"{class_name}/{identity}", gender, group))
    if not records:
        raise FileNotFoundError(f"No images under {root}/real or {root}/fake.")
    return records


def scan_videos(folder: str | Path, every: int) -> list[Record]:
    """Every ``every``-th frame of each clip in ``folder``, as real faces (one identity per clip)."""
    records = []
    for clip in sorted(Path(folder).glob("*.mp4")):
        with av.open(str(clip)) as container:
            frames = container.streams.video[0].frames or sum(1 for _ in container.decode(video=0))
        records += [Record(f"{clip}{FRAME_SEP}{i}", 0, VIDEO_SOURCE, f"real/{VIDEO_SOURCE}/{clip.stem}")
                    for i in range(0, frames, every)]  # fmt: skip
    return records


def _video_frames(path: str, wanted: set[int]) -> dict[int, np.ndarray]:
    frames = {}
    with av.open(path) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                frames[i] = frame.to_ndarray(format="rgb24")
    return frames


def _dhash(image: np.ndarray) -> str:
    gray = cv2.resize(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), (9, 8), interpolation=cv2.INTER_AREA)
    return np.packbits(gray[:, 1:] > gray[:, :-1]).tobytes().hex()


def assign_splits(records: list[Record], hashes: list[str], val_fraction: float, seed: int) -> np.ndarray:
    """True where a record is in validation. Identities and near-duplicates (same difference
    hash) are kept together with a union-find, then whole groups go to one side."""
    parent = list(range(len(records)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_seen: dict[str, int] = {}
    for i, key in enumerate([r.identity for r in records] + hashes):
        j = first_seen.setdefault(f"{i >= len(records)}:{key}", i % len(records))
        parent[find(i % len(records))] = find(j)
    is_val = np.zeros(len(records), dtype=bool)
    for i in range(len(records)):
        digest = hashlib.sha256(f"{seed}:{records[find(i)].identity}".encode()).digest()
        is_val[i] = int.from_bytes(digest[:8], "big") / 2**64 < val_fraction
    return is_val


def _main_face(faces: list[Face], shape: tuple[int, int]) -> Face | None:
    """The subject: large and near the centre (LFW photos hold bystanders too)."""
    if not faces:
        return None
    cy, cx = shape[0] / 2, shape[1] / 2

    def badness(f: Face) -> float:
        fx, fy = (f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2
        return np.hypot(fx - cx, fy - cy) / max(shape) - f.size / max(shape)

    return min(faces, key=badness)


@dataclass
class CropCache:
    """Memory-mapped face crops at CACHE_SIZE with landmarks in crop coordinates."""

    crops: np.ndarray  # (N, S, S, 3) uint8
    landmarks: np.ndarray  # (N, 5, 2) float32
    records: list[Record]
    is_val: np.ndarray
    face_found: np.ndarray
    failed: list[dict]  # unreadable files: path and reason
    # Source pixels across each crop's side: below CACHE_SIZE the crop was blown up and holds less
    # detail than its size says (LFW crops span about 200 source pixels, the StyleGAN portraits 370).
    # None in caches built before spans were kept.
    spans: np.ndarray | None = None
    # JPEG quality each crop's file was saved at; 0 where it is not a JPEG (a video frame, a PNG).
    # None in caches built before qualities were kept.
    qualities: np.ndarray | None = None
    # TAEF2 reconstructions of some real crops: row k of ``reconstructions`` belongs to crop
    # ``reconstructed[k]``; only the first ``reconstructions_done`` rows are made yet.
    reconstructions: np.ndarray | None = None
    reconstructed: np.ndarray | None = None
    reconstructions_done: int = 0

    @classmethod
    def open(cls, folder: str | Path) -> CropCache:
        folder = Path(folder)
        meta = json.loads((folder / "meta.json").read_text())
        arrays = np.load(folder / "arrays.npz")
        cache = cls(
            crops=np.load(folder / "crops.npy", mmap_mode="r"),
            landmarks=arrays["landmarks"],
            records=[Record(**r) for r in meta["records"]],
            is_val=arrays["is_val"],
            face_found=arrays["face_found"],
            failed=meta["failed"],
            spans=arrays["spans"] if "spans" in arrays.files else None,
            qualities=arrays["qualities"] if "qualities" in arrays.files else None,
        )
        progress = folder / "reconstructions.json"
        if progress.exists():
            cache.reconstructions = np.load(folder / "reconstructions.npy", mmap_mode="r")
            cache.reconstructed = np.load(folder / "reconstructed.npy")
            cache.reconstructions_done = json.loads(progress.read_text())["done"]
        return cache

    def reconstruction_of(self) -> dict[int, int]:
        """Crop index -> row of its finished reconstruction."""
        if self.reconstructed is None:
            return {}
        return {int(i): k for k, i in enumerate(self.reconstructed[: self.reconstructions_done])}


def add_reconstructions(folder: str | Path, taef2_folder: str | Path, per_source: int, seed: int = 0,
                        batch: int = 4) -> CropCache:  # fmt: skip
    """Round-trip ``per_source`` real crops of each real source (training and validation alike,
    in proportion) through TAEF2, resumably: the chosen crops and a progress count are on disk,
    so an interrupted run continues where it stopped. A larger ``per_source`` on a cache that has
    reconstructions adds *training* crops only (``more_training_crops``), so the validation pairs
    and the evaluation's held-out renderings stay the ones earlier models were measured on."""
    from deepfake.training.taef2 import load_taef2

    folder = Path(folder)
    cache = CropCache.open(folder)
    if cache.reconstructed is None:
        rng = np.random.default_rng(seed)
        chosen = []
        for source in sorted({r.source for r in cache.records if r.label == 0}):
            pool = [i for i, r in enumerate(cache.records) if r.source == source and cache.face_found[i]]
            chosen += [pool[k] for k in rng.permutation(len(pool))[:per_source]]
        _write_reconstruction_rows(folder, cache, np.array(chosen, np.int64))
        (folder / "reconstructions.json").write_text(json.dumps({"done": 0}))
        cache = CropCache.open(folder)
    elif extra := more_training_crops(cache, per_source, seed):
        _write_reconstruction_rows(folder, cache, np.concatenate([cache.reconstructed, np.array(extra, np.int64)]))
        cache = CropCache.open(folder)
    assert cache.reconstructed is not None
    rows = np.load(folder / "reconstructions.npy", mmap_mode="r+")
    model = load_taef2(taef2_folder)
    done = cache.reconstructions_done
    with tqdm(total=len(cache.reconstructed), initial=done, desc="TAEF2 reconstructions", unit="crop") as bar:
        while done < len(cache.reconstructed):
            ids = cache.reconstructed[done : done + batch]
            rows[done : done + len(ids)] = model.roundtrip(np.stack([cache.crops[i] for i in ids]))
            rows.flush()
            done += len(ids)
            (folder / "reconstructions.json").write_text(json.dumps({"done": done}))
            bar.update(len(ids))
    return CropCache.open(folder)


def more_training_crops(cache: CropCache, per_source: int, seed: int) -> list[int]:
    """Training-split real crops to reconstruct on top of the cache's, so that each real source
    has ``per_source`` (or all its training crops). v2.14.0 told the 833 training renderings it saw
    about 40 times each from their reals at AUC 0.97, and the 157 held-out ones at 0.72."""
    assert cache.reconstructed is not None
    rng = np.random.default_rng((seed, len(cache.reconstructed)))
    taken = set(int(i) for i in cache.reconstructed)
    extra: list[int] = []
    for source in sorted({r.source for r in cache.records if r.label == 0}):
        have = sum(cache.records[i].source == source for i in taken)
        pool = [i for i, r in enumerate(cache.records)
                if r.source == source and cache.face_found[i] and not cache.is_val[i] and i not in taken]  # fmt: skip
        extra += [pool[k] for k in rng.permutation(len(pool))[: max(0, per_source - have)]]
    return extra


def _write_reconstruction_rows(folder: Path, cache: CropCache, chosen: np.ndarray) -> None:
    """Room for the reconstructions of ``chosen`` crops, keeping the rows already made (the
    chosen list only grows). The rows file is replaced before the list that indexes it, so an
    interruption leaves the old, consistent pair or a rows file with spare room."""
    rows = np.lib.format.open_memmap(folder / "reconstructions.npy.part", mode="w+", dtype=np.uint8,
                                     shape=(len(chosen), *cache.crops.shape[1:]))  # fmt: skip
    if cache.reconstructions is not None:
        done = cache.reconstructions_done
        rows[:done] = cache.reconstructions[:done]
    rows.flush()
    del rows
    (folder / "reconstructions.npy.part").replace(folder / "reconstructions.npy")
    np.save(folder / "reconstructed.npy", chosen)


def build_cache(
    root: str | Path,
    folder: str | Path,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    batch: int = 32,
    videos: str | Path | None = None,
    frame_every: int = FRAME_EVERY,
) -> CropCache:
    """Detect, crop and cache every image once; resumable file by file is not needed (minutes).
    Clips in ``videos`` are split whole: every third clip (sorted by name) goes to validation."""
    folder = Path(folder)
    if (folder / "meta.json").exists():
        return CropCache.open(folder)
    folder.mkdir(parents=True, exist_ok=True)
    records = scan(root) + (scan_videos(videos, frame_every) if videos else [])
    detector = face_detector()
    tmp = folder / "crops.npy.part"
    crops = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(records), CACHE_SIZE, CACHE_SIZE, 3))
    landmarks = np.zeros((len(records), 5, 2), np.float32)
    face_found = np.zeros(len(records), bool)
    spans = np.zeros(len(records), np.float32)
    qualities = np.zeros(len(records), np.int16)
    hashes = [""] * len(records)
    keep = np.ones(len(records), bool)
    failed = []
    pending: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        by_shape: dict[tuple, list[tuple[int, np.ndarray]]] = {}
        for item in pending:
            by_shape.setdefault(item[1].shape, []).append(item)
        for items in by_shape.values():
            found = detector.detect_batch([im for _, im in items])
            for (i, image), faces in zip(items, found):
                face = _main_face(faces, image.shape[:2])
                box = face.box if face else (0.0, 0.0, float(image.shape[1]), float(image.shape[0]))
                crop = crop_face(image, box, CACHE_MARGIN if face else 1.0, CACHE_SIZE)
                crops[i] = crop.pixels
                spans[i] = crop.crop_to_image[0, 0] * CACHE_SIZE
                if face:
                    landmarks[i] = crop.landmarks_in_crop(face.landmarks)
                face_found[i] = face is not None
                hashes[i] = _dhash(crop.pixels)
        pending.clear()

    clip_frames: dict[str, dict[int, np.ndarray]] = {}
    for i, record in enumerate(tqdm(records, desc="Detecting and cropping faces", unit="img")):
        try:
            if FRAME_SEP in record.path:
                clip, index = record.path.split(FRAME_SEP)
                if clip not in clip_frames:  # one decode per clip, only its sampled frames kept
                    wanted = {int(r.path.split(FRAME_SEP)[1]) for r in records if r.path.startswith(clip + FRAME_SEP)}
                    clip_frames = {clip: _video_frames(clip, wanted)}
                pending.append((i, clip_frames[clip][int(index)]))
            else:
                pending.append((i, load_image(record.path)))
                qualities[i] = jpeg_quality(Path(record.path).read_bytes()) or 0
        except DeepfakeError as exc:
            failed.append({"path": record.path, "reason": exc.message})
            keep[i] = False
        if len(pending) >= batch:
            flush()
    flush()
    crops.flush()
    tmp.replace(folder / "crops.npy")
    hashes = [h or f"missing:{i}" for i, h in enumerate(hashes)]
    is_val = assign_splits(records, hashes, val_fraction, seed)
    clips = sorted({r.identity for r in records if r.source == VIDEO_SOURCE})
    for i, record in enumerate(records):
        if record.source == VIDEO_SOURCE:
            is_val[i] = clips.index(record.identity) % 3 == 2
    is_val[~keep] = False
    np.savez(folder / "arrays.npz", landmarks=landmarks, is_val=is_val, face_found=face_found & keep, spans=spans,
             qualities=qualities)
    (folder / "meta.json").write_text(json.dumps({
        "root": str(root), "margin": CACHE_MARGIN, "size": CACHE_SIZE, "seed": seed,
        "val_fraction": val_fraction, "videos": str(videos) if videos else None, "frame_every": frame_every,
        "records": [asdict(r) for r in records], "failed": failed,
    }))  # fmt: skip
    log.info("cached %d crops, %d without a face, %d unreadable", len(records), int((~face_found).sum()), len(failed))
    return CropCache.open(folder)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Build the face-crop cache for training.")
    parser.add_argument("--data", required=True)
    parser.add_argument("--cache", required=True)
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--videos", help="folder of authentic clips whose frames are added as real faces")
    parser.add_argument("--frame-every", type=int, default=FRAME_EVERY)
    parser.add_argument("--taef2", help="TAEF2 weights folder: add reconstructions of real crops")
    parser.add_argument("--reconstructions-per-source", type=int, default=RECONSTRUCTIONS_PER_SOURCE,
                        help="real crops per source to round-trip; raising it later adds training crops only")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    cache = build_cache(args.data, args.cache, val_fraction=args.val_fraction, seed=args.seed, videos=args.videos,
                        frame_every=args.frame_every)  # fmt: skip
    if args.taef2:
        cache = add_reconstructions(args.cache, args.taef2, args.reconstructions_per_source, args.seed)
    print(f"{len(cache.records)} images, {int(cache.is_val.sum())} in validation, "
          f"{int((~cache.face_found).sum())} without a face, {len(cache.failed)} unreadable")
