"""Evaluate a detector (protocol v2): ``python -m deepfake.evaluate --data DIR --out reports/``.

Everything is measured on the identity-disjoint validation split of the training cache (``--cache``,
built as the trainer builds it when missing), through the product's own engine:

- *Fake folders* (``gan``, ``stylegan_ffhq``, ``sd21``, ...): every held-out file, real or fake, goes
  through the app's engine (face detection, crop, calibrated score); a file's score is its deciding
  face, as in the app. The headline, threshold report, per-source and per-group tables are these.
- *Made kinds* (self-blend, part swap, decoder blend, TAEF2 whole-crop reconstructions): made, seeded,
  from held-out real crops of the cache and framed as the engine frames a face; each is compared
  with the real crops it was made from.
- Each kind against its reals, as given and with both classes re-saved at one JPEG quality
  (compression matched: the sources come at different qualities, which alone can tell them apart);
  calibration (ECE) per kind; for two-head models each head's AUC per kind.
- A degradation ladder (JPEG, half size, H.264) applied alike to reals and fakes: AUC, false alarms
  at the model's threshold and the reals' mean P(fake) per step.
- Authentic media: every face of a folder of photos and every clip of a folder of videos (through
  the product's video detector), with the clips whose frames were trained on marked.
- Leave one kind out: checkpoints trained without a kind (``--loko-models kind=path``), each scored
  on its left-out kind with compression matched, or an earlier evaluation's results kept
  (``--loko-from metrics.json``).

Every item's score under every condition is kept (``scores.csv``): two evaluations of the same items
compare pair by pair (:mod:`deepfake.evaluation.compare`).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from deepfake.detector import ImageDeepfakeDetector
from deepfake.engine import DetectionEngine
from deepfake.errors import DeepfakeError
from deepfake.evaluation.metrics import (
    auc_interval,
    expected_calibration_error,
    interval_text,
    precision_recall_curve,
    reliability,
    roc_auc,
    roc_curve,
    summarize,
    threshold_sweep,
)
from deepfake.faces import limit_detail
from deepfake.loading import DEFAULT_MODEL_PATH
from deepfake.media import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, load_image
from deepfake.results import deciding_face
from deepfake.training.augment import frame_crop
from deepfake.training.data import FRAME_SEP, VIDEO_SOURCE, CropCache, build_cache
from deepfake.training.degradation import LADDER, degrade_crop
from deepfake.training.pseudofakes import decoder_blend, part_swap, self_blend
from deepfake.training.train import TRACE_KINDS, TrainConfig
from deepfake.video import VideoDeepfakeDetector

FALSE_ALARM_BUDGET = 0.10
MADE_KINDS = ("self_blend", "part_swap", "decoder_blend", "taef2")
AS_GIVEN = "as given"
# LFW, the most compressed source, is saved at quality 75: re-saved at 75, every file's last
# compression is the same for both classes. (Lower qualities measure robustness: the ladder's job.)
MATCHED = "JPEG 75"
# The reals' mean P(fake) must not climb with compression by more than this (v1 flagged compressed
# authentic media): checked at the ladder's harshest JPEG and H.264 steps.
CLIMB_LIMIT = 0.05
CLIMB_STEPS = ("JPEG 30", "H.264 CRF 40")
VIDEO_FRAMES = 32  # the product's default
FILE_BATCH = 4  # files per engine call (times the conditions: every condition of a file in one batch)
CROP_BATCH = 8
MISSES_LISTED = 10
# Every scored item, row for row, under every condition: what lets two evaluations of the same
# items be compared pair by pair (deepfake.evaluation.compare).
SCORES_FILE = "scores.csv"
_UNIT_COLUMNS = ("kind", "label", "source", "path", "crop", "gender", "group")

Degrade = Callable[[np.ndarray], np.ndarray]


CONDITIONS: dict[str, Degrade | None] = {AS_GIVEN: None, **LADDER}


@dataclass
class EvalConfig:
    data: str  # folder with real/<source>/** and fake/<source>/** (the cache's root)
    out: str = "reports"
    model: str | None = None  # default: models/image_model.pth
    cache: str = TrainConfig.cache  # the training cache: its validation split is the held-out set
    # Cap per real source, fake folder and made kind. At about 50 ms a scored face on 2 cores
    # (reports/BENCHMARKS.md), 150 makes a full run (9 conditions) about 12 minutes, under 25 with a
    # training job beside it. Of the folders, only LFW, UTK and the GAN portraits have more held out.
    per_kind: int | None = 150
    photos: str | None = None  # folder of authentic photos
    videos: str | None = None  # folder of authentic clips (also the cache's video source when it is built)
    taef2: str | None = None  # TAEF2 weights: reconstructions the cache lacks are made with them
    loko_models: dict[str, str] = field(default_factory=dict)  # left-out kind -> checkpoint trained without it
    # Or a previous evaluation's metrics.json whose leave-one-kind-out rows are kept as measured (a
    # recalibrated default model leaves them as they were; each took longer to train than the whole
    # evaluation runs): its checkpoints are not re-scored, this model's column is refreshed.
    loko_from: str | None = None
    threshold: float | None = None  # default: the model's
    seed: int = 0


@dataclass(frozen=True)
class Unit:
    """One held-out item: a file scored by the engine, or (``crop`` set) a crop of the cache."""

    kind: str  # "real", a fake folder's name, or a made kind
    label: int
    source: str  # real source or fake folder; for a made fake, the source of its real crop
    path: str  # the file; for a crop, the file it was cut from
    crop: int | None = None  # cache row of the real crop (made kinds and their reals)
    gender: str = ""
    group: str = ""

    @property
    def population(self) -> str:
        return "files" if self.crop is None else "made"


@dataclass
class Scored:
    """Scores of a unit list under one condition, row for row."""

    fake: np.ndarray  # [N] calibrated P(fake)
    heads: np.ndarray  # [N, H] each head's own probability (H = 0 for a one-logit model)


@dataclass
class FileDetails:
    """What the engine found in the files as given."""

    unreadable: list[dict] = field(default_factory=list)
    no_face: list[str] = field(default_factory=list)
    face_labels: list[int] = field(default_factory=list)
    face_scores: list[float] = field(default_factory=list)
    several_faces: int = 0


class Maker:
    """The pixels of a crop unit: a held-out real crop, or a fake made from it. Seeded per crop and
    kind, so every model and every call sees the same pictures."""

    def __init__(self, cache: CropCache, bases: list[int], reconstructions: dict[int, np.ndarray], seed: int) -> None:
        self.cache, self.bases, self.reconstructions, self.seed = cache, bases, reconstructions, seed

    def pixels(self, unit: Unit) -> np.ndarray:
        assert unit.crop is not None
        crop, landmarks = np.asarray(self.cache.crops[unit.crop]), self.cache.landmarks[unit.crop]
        if unit.kind == "real":
            return crop
        rng = np.random.default_rng((self.seed, MADE_KINDS.index(unit.kind), unit.crop))
        if unit.kind == "self_blend":
            return self_blend(crop, landmarks, rng).image
        if unit.kind == "part_swap":
            others = [b for b in self.bases if b != unit.crop] or [unit.crop]
            donor = int(rng.choice(others))
            return part_swap(crop, landmarks, np.asarray(self.cache.crops[donor]), self.cache.landmarks[donor], rng).image
        if unit.kind == "decoder_blend":
            return decoder_blend(crop, self.reconstructions[unit.crop], landmarks, rng).image
        return self.reconstructions[unit.crop]  # taef2


def _sample(items: list, cap: int | None, rng: np.random.Generator) -> list:
    if cap is None or len(items) <= cap:
        return items
    return [items[i] for i in sorted(rng.choice(len(items), cap, replace=False))]


def held_out_files(cache: CropCache, per_kind: int | None, seed: int) -> tuple[list[Unit], dict]:
    """Held-out files (video frames aside: the clips are scored whole, as authentic media), at most
    ``per_kind`` per real source and per fake folder; and the counts before and after the cap."""
    rng = np.random.default_rng(seed)
    groups: dict[tuple[int, str], list[Unit]] = defaultdict(list)
    for record, is_val in zip(cache.records, cache.is_val):
        if is_val and FRAME_SEP not in record.path:
            kind = "real" if record.label == 0 else record.source
            groups[(record.label, record.source)].append(
                Unit(kind, record.label, record.source, record.path, None, record.gender, record.group))
    units, counts = [], {}
    for (label, source), group in sorted(groups.items()):
        chosen = _sample(group, per_kind, rng)
        units += chosen
        counts[f"{'real' if label == 0 else 'fake'}/{source}"] = {"held_out": len(group), "used": len(chosen)}
    return units, counts


def made_bases(cache: CropCache, per_kind: int | None, seed: int) -> list[int]:
    """Up to ``per_kind`` held-out real crops with a face, drawn in turn from each real source. Within
    a source, crops whose TAEF2 reconstruction is cached come first: the cache drew those at random,
    so this saves making them without favouring any kind of face."""
    rng = np.random.default_rng((seed, 1))
    cached = set(cache.reconstruction_of())
    pools: dict[str, list[int]] = defaultdict(list)
    for i, (record, is_val, found) in enumerate(zip(cache.records, cache.is_val, cache.face_found)):
        if is_val and found and record.label == 0:
            pools[record.source].append(i)
    queues = []
    for source in sorted(pools):
        shuffled = [pools[source][k] for k in rng.permutation(len(pools[source]))]
        queues.append(sorted(shuffled, key=lambda i: i not in cached))  # stable: random within each group
    bases: list[int] = []
    cap = per_kind if per_kind is not None else sum(map(len, queues))
    while len(bases) < cap and any(queues):
        for queue in queues:
            if queue and len(bases) < cap:
                bases.append(queue.pop(0))
    return bases


def reconstructions_for(cache: CropCache, bases: list[int], taef2: str | None) -> tuple[dict[int, np.ndarray], dict]:
    """TAEF2 reconstructions of the base crops: the cache's, and with ``taef2`` the missing ones made now."""
    rows = cache.reconstruction_of()
    assert cache.reconstructions is not None or not rows
    out = {i: np.asarray(cache.reconstructions[rows[i]]) for i in bases if i in rows}
    missing = [i for i in bases if i not in out]
    made = 0
    if taef2 and missing:
        from deepfake.training.taef2 import load_taef2

        model = load_taef2(taef2)
        for start in tqdm(range(0, len(missing), 4), desc="TAEF2 reconstructions", unit="batch"):
            ids = missing[start : start + 4]
            for i, image in zip(ids, model.roundtrip(np.stack([np.asarray(cache.crops[i]) for i in ids]))):
                out[i] = image
            made += len(ids)
    return out, {"cached": len(out) - made, "made": made, "missing": len(bases) - len(out)}


def made_units(cache: CropCache, bases: list[int], reconstructions: dict[int, np.ndarray]) -> list[Unit]:
    units = []
    for i in bases:
        record = cache.records[i]
        for kind in ("real", *MADE_KINDS):
            if kind in TRACE_KINDS and i not in reconstructions:
                continue
            units.append(Unit(kind, int(kind != "real"), record.source, record.path, i, record.gender, record.group))
    return units


def _head_names(engine: DetectionEngine) -> tuple[str, ...]:
    """Heads worth reporting one by one: a one-logit model's only head is its FAKE score."""
    return engine.heads if len(engine.heads) > 1 else ()


def _finish_crop(crop: np.ndarray, degrade: Degrade | None, detail_size: int | None) -> np.ndarray:
    """A framed crop degraded as a file would be, then brought to the model's input as the engine does
    (a half-size picture's face is cropped small and resized up; then the detail ceiling)."""
    return limit_detail(crop if degrade is None else degrade_crop(crop, degrade), detail_size)


def score_units(engine: DetectionEngine, units: list[Unit], conditions: dict[str, Degrade | None],
                maker: Maker) -> tuple[dict[str, Scored], np.ndarray, FileDetails]:  # fmt: skip
    """Every unit under every condition: files through the engine (detect, crop, score; the deciding
    face), crops framed as the engine frames a face. Returns the scores, a mask of the units that could
    be read (unreadable files are left out of every condition) and the files' details as given."""
    heads = _head_names(engine)
    fake = np.full((len(units), len(conditions)), np.nan)
    head_scores = np.full((len(units), len(conditions), len(heads)), np.nan)
    readable = np.ones(len(units), bool)
    details = FileDetails()
    degrades = list(conditions.values())
    as_given = list(conditions).index(AS_GIVEN) if AS_GIVEN in conditions else None

    files = [i for i, u in enumerate(units) if u.crop is None]
    for start in tqdm(range(0, len(files), FILE_BATCH), desc="Scoring files", unit="batch", mininterval=10):
        images, owners = [], []
        for i in files[start : start + FILE_BATCH]:
            try:
                image = load_image(units[i].path)
            except DeepfakeError as exc:
                details.unreadable.append({"path": units[i].path, "reason": exc.message})
                readable[i] = False
                continue
            for c, degrade in enumerate(degrades):
                images.append(image if degrade is None else degrade(image))
                owners.append((i, c))
        found = engine.faces_for(images)
        for (i, c), faces, scored in zip(owners, found, engine.score_faces(images, found)):
            decider = deciding_face(scored)
            fake[i, c] = decider.fake_probability
            head_scores[i, c] = [decider.head_probabilities[h] for h in heads]
            if c == as_given:
                details.no_face += [] if faces else [units[i].path]
                details.several_faces += max(0, len(faces) - 1)
                whole = [f.fake_probability for f in scored if not f.whole_image]
                details.face_labels += [units[i].label] * len(whole)
                details.face_scores += whole

    crops = [i for i, u in enumerate(units) if u.crop is not None]
    config = engine.model.config
    for start in tqdm(range(0, len(crops), CROP_BATCH), desc="Scoring made crops", unit="batch", mininterval=10):
        batch = crops[start : start + CROP_BATCH]
        pixels = []
        for i in batch:
            framed = frame_crop(maker.pixels(units[i]), config.face_margin, engine.input_size, None)
            pixels += [_finish_crop(framed, degrade, config.detail_size) for degrade in degrades]
        scores = engine.score_heads(pixels)
        fake[batch] = scores.fake.reshape(len(batch), len(degrades))
        if heads:
            head_scores[batch] = scores.heads.reshape(len(batch), len(degrades), len(heads))
    scored = {name: Scored(fake[readable, c], head_scores[readable, c]) for c, name in enumerate(conditions)}
    return scored, readable, details


def write_scores(units: list[Unit], scored: dict[str, Scored], path: Path) -> None:
    """One row per unit (``crop`` empty for a file), one column per condition's P(fake)."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*_UNIT_COLUMNS, *scored])
        for i, u in enumerate(units):
            writer.writerow([u.kind, u.label, u.source, u.path, "" if u.crop is None else u.crop, u.gender, u.group,
                             *(f"{s.fake[i]:.7g}" for s in scored.values())])  # fmt: skip


def read_scores(path: Path) -> tuple[list[Unit], dict[str, np.ndarray]]:
    """The units and each condition's P(fake) as :func:`write_scores` wrote them."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or set(_UNIT_COLUMNS) - set(rows[0]):
        raise SystemExit(f"{path} holds no per-item scores (written by evaluations since 2026-12-07).")
    units = [Unit(r["kind"], int(r["label"]), r["source"], r["path"], int(r["crop"]) if r["crop"] else None,
                  r["gender"], r["group"]) for r in rows]  # fmt: skip
    conditions = [c for c in rows[0] if c not in _UNIT_COLUMNS]
    return units, {c: np.array([float(r[c]) for r in rows]) for c in conditions}


def _auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    return roc_auc(labels, scores) if 0 < labels.sum() < labels.size else None


def _rate(values: np.ndarray) -> float | None:
    return float(values.mean()) if values.size else None


def fake_kinds(units: list[Unit]) -> list[str]:
    """Fake folders (sorted), then the made kinds that were made."""
    kinds = {u.kind for u in units if u.label == 1}
    return sorted(k for k in kinds if k not in MADE_KINDS) + [k for k in MADE_KINDS if k in kinds]


def against_reals(units: list[Unit], kind: str) -> np.ndarray:
    """Mask of a kind's fakes and the reals they are compared with (files: every real file; made
    kinds: the real crops they were made from)."""
    population = "made" if kind in MADE_KINDS else "files"
    return np.array([u.kind == kind or (u.label == 0 and u.population == population) for u in units])


def kind_report(units: list[Unit], scored: dict[str, Scored], threshold: float, heads: tuple[str, ...],
                prior: float | None = None) -> dict:  # fmt: skip
    """Per kind: its fakes against its reals, as given and compression matched (summaries include
    ECE, and with ``prior`` also the ECE at the base rate the model was calibrated for); for
    two-head models each head's AUC."""
    labels = np.array([u.label for u in units])
    out = {}
    for kind in fake_kinds(units):
        mask = against_reals(units, kind)
        entry: dict = {"population": "made" if kind in MADE_KINDS else "files", "n_real": int((labels[mask] == 0).sum()),
                       "n_fake": int(labels[mask].sum())}  # fmt: skip
        for key, condition in (("as_given", AS_GIVEN), ("matched", MATCHED)):
            entry[key] = summarize(labels[mask], scored[condition].fake[mask], threshold)
            entry[key]["auc_interval"] = auc_interval(labels[mask], scored[condition].fake[mask])
            if prior is not None:
                entry[key]["ece_at_prior"] = expected_calibration_error(labels[mask], scored[condition].fake[mask],
                                                                        prior=prior)  # fmt: skip
        if heads:
            entry["heads"] = {head: {key: _auc(labels[mask], scored[condition].heads[mask, h])
                                     for key, condition in (("as_given", AS_GIVEN), ("matched", MATCHED))}
                              for h, head in enumerate(heads)}  # fmt: skip
        out[kind] = entry
    return out


def ladder_report(units: list[Unit], scored: dict[str, Scored], threshold: float) -> dict:
    """Per step: AUC (fake folders against real files; made fakes against their real crops; each
    kind), false alarms at the threshold and the mean P(fake) of the real files."""
    labels = np.array([u.label for u in units])
    files = np.array([u.population == "files" for u in units])
    real_files = files & (labels == 0)
    base = float(scored[AS_GIVEN].fake[real_files].mean()) if real_files.any() else None
    rows = {}
    for name in CONDITIONS:
        scores = scored[name].fake
        real_mean = float(scores[real_files].mean()) if real_files.any() else None
        rows[name] = {
            "auc_files": _auc(labels[files], scores[files]), "auc_made": _auc(labels[~files], scores[~files]),
            "fpr": _rate(scores[real_files] >= threshold), "recall_files": _rate(scores[files & (labels == 1)] >= threshold),
            "real_mean": real_mean, "real_mean_change": None if base is None else real_mean - base,
            "auc_by_kind": {k: _auc(labels[m], scores[m]) for k in fake_kinds(units) for m in [against_reals(units, k)]},
        }  # fmt: skip
    changes = [rows[s]["real_mean_change"] for s in CLIMB_STEPS]
    return {"rows": rows, "target": {"steps": list(CLIMB_STEPS), "limit": CLIMB_LIMIT, "changes": changes,
                                     "met": None if base is None else all(c <= CLIMB_LIMIT for c in changes)}}  # fmt: skip


def clip_status(cache: CropCache, clip: Path) -> str:
    """Whether a clip's frames were trained on: the cache's video records of it and their split."""
    sides = {bool(v) for r, v in zip(cache.records, cache.is_val) if r.source == VIDEO_SOURCE
             and r.identity == f"real/{VIDEO_SOURCE}/{clip.stem}"}  # fmt: skip
    if not sides:
        return "not in the cache"
    return "training" if False in sides else "held out"


def authentic_report(engine: DetectionEngine, cache: CropCache, threshold: float, photos: str | None,
                     videos: str | None) -> dict:  # fmt: skip
    """Every face of every photo in ``photos`` and every clip in ``videos``, through the product's
    image and video detectors, with their scores and how many are flagged at the threshold."""
    heads = _head_names(engine)
    out: dict = {"threshold": threshold}
    if photos:
        detector = ImageDeepfakeDetector(engine=engine, threshold=threshold)
        faces, files, unreadable = [], [], []
        for path in sorted(p for p in Path(photos).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS):
            try:
                result = detector.detect(path, explain=False)
            except DeepfakeError as exc:
                unreadable.append({"file": path.name, "reason": exc.message})
                continue
            files.append({"file": path.name, "size": f"{result.width}x{result.height}", "faces": len(result.faces),
                          "p_fake": result.fake_probability, "flagged": result.fake_probability >= threshold,
                          "face_found": result.face_found})  # fmt: skip
            for k, face in enumerate(result.faces):
                faces.append({"file": path.name, "face": k, "p_fake": face.fake_probability,
                              "flagged": face.fake_probability >= threshold, "whole_image": face.whole_image,
                              "cut_off": face.cut_off, "side_px": round(max(face.box[2] - face.box[0], face.box[3] - face.box[1])),
                              **{f"p_{h}": face.head_probabilities[h] for h in heads}})  # fmt: skip
        out["photos"] = {"folder": photos, "files": files, "faces": faces, "unreadable": unreadable,
                         "n_faces": len(faces), "flagged_faces": sum(f["flagged"] for f in faces),
                         "n_files": len(files), "flagged_files": sum(f["flagged"] for f in files)}  # fmt: skip
    if videos:
        detector = VideoDeepfakeDetector(engine=engine, threshold=threshold)
        clips, unreadable = [], []
        for path in tqdm(sorted(p for p in Path(videos).iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS),
                         desc="Authentic clips", unit="clip"):  # fmt: skip
            try:
                result = detector.detect(path, num_frames=VIDEO_FRAMES, explain=False)
            except DeepfakeError as exc:
                unreadable.append({"file": path.name, "reason": exc.message})
                continue
            with_faces = [f.fake_probability for f in result.timeline if f.face_found]
            clips.append({"file": path.name, "in_training": clip_status(cache, path), "p_fake": result.fake_probability,
                          "flagged": result.fake_probability >= threshold, "frames": len(result.timeline),
                          "frames_with_faces": len(with_faces), "flagged_frames": sum(p >= threshold for p in with_faces),
                          "max_frame": max(with_faces, default=None), "rule": result.aggregation["rule"]})  # fmt: skip
        out["videos"] = {"folder": videos, "frames_per_clip": VIDEO_FRAMES, "clips": clips, "unreadable": unreadable,
                         "model_trained_on_video": VIDEO_SOURCE in engine.model.trained_on,
                         "n_clips": len(clips), "flagged_clips": sum(c["flagged"] for c in clips),
                         "flagged_clips_held_out": sum(c["flagged"] for c in clips if c["in_training"] != "training")}  # fmt: skip
    return out


def _left_out_in_training(engine: DetectionEngine, path: str, kind: str) -> bool | None:
    """Whether the checkpoint's recorded training configuration left ``kind`` out (None: not recorded)."""
    if engine.model.source_format != "checkpoint":
        return None
    leave_out = torch.load(path, map_location="cpu", weights_only=True).get("train_config", {}).get("leave_out")
    return None if leave_out is None else kind in {k.removeprefix("fake:") for k in leave_out}


def _calibration_prior(path: str | Path) -> float | None:
    """The fake base rate the checkpoint's FAKE probability was calibrated for (None: not recorded)."""
    try:
        prior = torch.load(path, map_location="cpu", weights_only=True).get("train_config", {}).get("fake_prior")
    except (OSError, RuntimeError):
        return None
    return float(prior) if prior is not None else None


def loko_report(models: dict[str, str], units: list[Unit], maker: Maker, kinds: dict) -> dict:
    """Each checkpoint trained without a kind, scored on that kind against its reals, compression matched."""
    out: dict = {"given": bool(models), "condition": MATCHED, "models": {}}
    for kind, path in models.items():
        engine = DetectionEngine.load(path)
        chosen = [u for u, m in zip(units, against_reals(units, kind)) if m]
        scored, readable, _ = score_units(engine, chosen, {MATCHED: CONDITIONS[MATCHED]}, maker)
        labels = np.array([u.label for u, r in zip(chosen, readable) if r])
        out["models"][kind] = {
            "model": path, "version": engine.model.version, "left_out_in_training": _left_out_in_training(engine, path, kind),
            "n_real": int((labels == 0).sum()), "n_fake": int(labels.sum()),
            "auc_matched": _auc(labels, scored[MATCHED].fake),
            "auc_matched_interval": auc_interval(labels, scored[MATCHED].fake),
            "main_model_auc_matched": kinds[kind]["matched"]["auc"],
        }  # fmt: skip
    return out


def carried_loko(path: str, kinds: dict) -> dict:
    """The leave-one-kind-out rows of the evaluation saved at ``path``, beside this model's AUCs."""
    try:
        previous = json.loads(Path(path).read_text())
        loko = previous["loko"]
        rows = {kind: dict(row) for kind, row in loko["models"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SystemExit(f"--loko-from {path}: no leave-one-kind-out results to keep ({exc!r}).") from exc
    if not rows or set(rows) - set(kinds):
        raise SystemExit(f"--loko-from {path}: its kinds {sorted(rows)} are not among this evaluation's {sorted(kinds)}.")
    for kind, row in rows.items():
        row["main_model_auc_matched"] = kinds[kind]["matched"]["auc"]
    carried = {"report": str(path), "model_version": previous.get("model", {}).get("version")}
    return {**loko, "models": rows, "carried_from": carried}


def breakdown(units: list[Unit], scores: np.ndarray, threshold: float) -> dict:
    """Metrics per source (each real source against all fakes, each fake source against all reals)
    and per demographic group (reals and fakes of that group)."""
    labels = np.array([u.label for u in units])
    out: dict = {"by_source": {}, "by_group": {}}
    for source in sorted({u.source for u in units}):
        mine = np.array([u.source == source for u in units])
        others = labels != labels[mine][0]
        out["by_source"][source] = summarize(labels[mine | others], scores[mine | others], threshold) | {"n_source": int(mine.sum())}
    groups: dict[str, list[int]] = defaultdict(list)
    for i, u in enumerate(units):
        if u.gender or u.group:
            for name in (f"{u.gender or '?'}/{u.group or '?'}", f"{u.gender or '?'}/*", f"*/{u.group or '?'}"):
                groups[name].append(i)
    for name in sorted(groups):
        out["by_group"][name] = summarize(labels[groups[name]], scores[groups[name]], threshold)
    return out


def misses(units: list[Unit], scored: Scored, threshold: float) -> dict:
    """The worst calls as given: real files called FAKE (highest first) and, per kind, the lowest-scored
    fakes called REAL (a made fake is named by the file of its real crop)."""
    order = np.argsort(scored.fake, kind="stable")
    missed: dict[str, list] = defaultdict(list)
    for i in order:
        unit, score = units[i], float(scored.fake[i])
        if unit.label == 1 and score < threshold and len(missed[unit.kind]) < MISSES_LISTED:
            missed[unit.kind].append({"path": unit.path, "p_fake": score})
    alarms = [i for i in order[::-1] if units[i].label == 0 and units[i].crop is None and scored.fake[i] >= threshold]
    return {"false_alarms": [{"path": units[i].path, "source": units[i].source, "p_fake": float(scored.fake[i])}
                             for i in alarms[:MISSES_LISTED]],
            "n_false_alarms": len(alarms), "missed": {k: missed[k] for k in fake_kinds(units) if missed[k]}}  # fmt: skip


def _plots(labels: np.ndarray, scores: np.ndarray, threshold: float, out: Path, prefix: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []

    def save(fig, name: str) -> None:
        path = out / f"{prefix}{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path.name)

    fpr, tpr, _ = roc_curve(labels, scores)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(fpr, tpr, lw=2)
    ax.plot([0, 1], [0, 1], "--", color="grey")
    ax.set(xlabel="False positive rate", ylabel="True positive rate", title="ROC")
    save(fig, "roc")

    precision, recall = precision_recall_curve(labels, scores)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.step(recall, precision, where="post", lw=2)
    ax.set(xlabel="Recall", ylabel="Precision", title="Precision-recall", ylim=(0, 1.02))
    save(fig, "pr")

    m = summarize(labels, scores, threshold)["confusion"]
    matrix = np.array([[m["tn"], m["fp"]], [m["fn"], m["tp"]]])
    fig, ax = plt.subplots(figsize=(4, 3.6))
    ax.imshow(matrix, cmap="Blues")
    for (r, c), v in np.ndenumerate(matrix):
        ax.text(c, r, str(v), ha="center", va="center", color="black", fontsize=13)
    ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["REAL", "FAKE"], yticklabels=["REAL", "FAKE"],
           xlabel="Predicted", ylabel="Actual", title=f"Confusion at {threshold:.2f}")  # fmt: skip
    save(fig, "confusion")

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    bins = np.linspace(0, 1, 41)
    ax.hist(scores[labels == 0], bins=bins, alpha=0.6, label="real", color="tab:green")
    ax.hist(scores[labels == 1], bins=bins, alpha=0.6, label="fake", color="tab:red")
    ax.axvline(threshold, color="black", ls="--", label=f"threshold {threshold:.2f}")
    ax.set(xlabel="Fake probability", ylabel="Count", title="Scores per class", yscale="log")
    ax.legend()
    save(fig, "histogram")

    rel = reliability(labels, scores)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "--", color="grey")
    ax.plot(rel["confidence"], rel["fake_rate"], "o-")
    ax.set(xlabel="Predicted fake probability", ylabel="Observed fake rate", title="Reliability")
    save(fig, "reliability")
    return written


def open_cache(config: EvalConfig) -> CropCache:
    """The training cache; built as the trainer builds it when missing, so the split is the trainer's."""
    meta = Path(config.cache) / "meta.json"
    if meta.exists():
        root = json.loads(meta.read_text())["root"]
        if Path(root).resolve() != Path(config.data).resolve():
            raise SystemExit(f"The cache {config.cache} was built from {root}, not {config.data}: its split would "
                             "not describe this data. Pass --cache of a cache built from it.")  # fmt: skip
    return build_cache(config.data, config.cache, val_fraction=TrainConfig.val_fraction, seed=TrainConfig.seed,
                       videos=config.videos)  # fmt: skip


def evaluate(config: EvalConfig) -> dict:
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    engine = DetectionEngine.load(config.model)
    threshold = float(config.threshold if config.threshold is not None else engine.model.threshold)
    cache = open_cache(config)
    files, counts = held_out_files(cache, config.per_kind, config.seed)
    bases = made_bases(cache, config.per_kind, config.seed)
    reconstructions, recon_counts = reconstructions_for(cache, bases, config.taef2)
    maker = Maker(cache, bases, reconstructions, config.seed)
    units = files + made_units(cache, bases, reconstructions)
    loko_models = {k.removeprefix("fake:"): v for k, v in config.loko_models.items()}
    unknown = set(loko_models) - set(fake_kinds(units))
    if unknown:
        raise SystemExit(f"--loko-models names kinds not in the held-out set: {sorted(unknown)}; "
                         f"known: {fake_kinds(units)}.")  # fmt: skip
    seconds["preparing"] = time.perf_counter() - started

    mark = time.perf_counter()
    scored, readable, details = score_units(engine, units, CONDITIONS, maker)
    units = [u for u, r in zip(units, readable) if r]
    seconds["scoring"] = time.perf_counter() - mark
    heads = _head_names(engine)

    files_mask = np.array([u.population == "files" for u in units])
    file_units = [u for u in units if u.population == "files"]
    labels, scores = np.array([u.label for u in file_units]), scored[AS_GIVEN].fake[files_mask]
    made_mask = ~files_mask
    prior = _calibration_prior(config.model or DEFAULT_MODEL_PATH)
    kinds = kind_report(units, scored, threshold, heads, prior)

    mark = time.perf_counter()
    authentic = authentic_report(engine, cache, threshold, config.photos, config.videos)
    seconds["authentic media"] = time.perf_counter() - mark
    mark = time.perf_counter()
    loko = carried_loko(config.loko_from, kinds) if config.loko_from else loko_report(loko_models, units, maker, kinds)
    seconds["leave one kind out"] = time.perf_counter() - mark
    seconds["total"] = time.perf_counter() - started

    model = engine.model
    report = {
        "model": {"name": model.name, "version": model.version, "trained_on": model.trained_on,
                  "temperature": model.temperature, "heads": list(model.config.heads)},  # fmt: skip
        "protocol": {
            "version": 2, "data": config.data, "cache": config.cache, "split": "val", "per_kind": config.per_kind,
            "seed": config.seed, "threshold": threshold, "matched": MATCHED, "conditions": list(CONDITIONS),
            "counts": counts, "made_from": len(bases), "reconstructions": recon_counts, "taef2": config.taef2,
            "photos": config.photos, "videos": config.videos, "seconds": {k: round(v, 1) for k, v in seconds.items()},
        },  # fmt: skip
        "image_level": summarize(labels, scores, threshold),
        "face_level": summarize(details.face_labels, details.face_scores, threshold),
        "made_level": summarize([u.label for u in units if u.population == "made"], scored[AS_GIVEN].fake[made_mask],
                                threshold) if made_mask.any() else None,  # fmt: skip
        "threshold_sweep": threshold_sweep(labels, scores),
        "files": {"scored": len(file_units), "unreadable": details.unreadable, "no_face": details.no_face,
                  "several_faces": details.several_faces},  # fmt: skip
        "kinds": kinds,
        "ladder": ladder_report(units, scored, threshold),
        "authentic": authentic,
        "loko": loko,
        "misses": misses(units, scored[AS_GIVEN], threshold),
        **breakdown(file_units, scores, threshold),
    }
    out_dir = Path(config.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    report["plots"] = _plots(labels, scores, threshold, out_dir, "")
    write_scores(units, scored, out_dir / SCORES_FILE)
    (out_dir / "metrics.json").write_text(json.dumps(report, indent=1, default=float))
    write_reports(report, out_dir)
    return report


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _table(rows: dict, keys=("n", "auc", "accuracy", "precision", "recall", "f1", "eer", "fpr", "fnr", "ece")) -> str:
    head = "| | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys) + "\n"
    return head + "".join(f"| {name} | " + " | ".join(_fmt(m.get(k)) for k in keys) + " |\n" for name, m in rows.items())


def _protocol_lines(report: dict) -> list[str]:
    p, files = report["protocol"], report["files"]
    lines = [
        f"- Held-out set: split `{p['split']}` of the training cache `{p.get('cache')}`, built from `{p['data']}`: "
        "identity-disjoint from training (LFW by person, near-duplicates grouped, video clips whole).",
        f"- Files: every held-out file goes through the app's engine (YuNet faces, the model's crops, calibrated "
        f"scores); a file's score is its deciding face (faces cut off by the edge only when no whole face); "
        f"threshold {p['threshold']:.2f}. Files scored: {files['scored']}; unreadable: {len(files['unreadable'])}; "
        f"no face found (scored whole): {len(files['no_face'])}; extra faces beyond one per file: {files['several_faces']}.",
    ]  # fmt: skip
    if "counts" in p:
        recon = p["reconstructions"]
        lines += [
            f"- Made kinds: from {p['made_from']} held-out real crops with a face, drawn in turn from each real source "
            f"(seed {p['seed']}): self-blend, part swap (the donor another of these crops), decoder blend and TAEF2 "
            f"whole-crop reconstruction (these two need the crop's TAEF2 reconstruction: {recon['cached']} from the "
            f"cache, {recon['made']} made now, {recon['missing']} missing). Framed as the engine frames a face (the "
            "model's margin and detail ceiling), and compared with the real crops they were made from.",
            f"- Compression matched (`{p['matched']}`): both classes re-saved at that JPEG quality before detection "
            "(LFW's quality, the lowest of the sources), so the sources' own compression cannot separate them. "
            "Picture sizes are not matched; every face is resized to the model's input.",
            f"- Degradations ({', '.join(p['conditions'][1:])}) are applied alike to every real and fake: to the whole "
            "file before face detection, and to a made crop after framing.",
            f"- Caps: at most {p['per_kind'] or 'all'} files per real source and per fake folder, and as many real "
            "crops for the made kinds (video frames of the cache are not files here: the clips are scored whole "
            "under *Authentic media*). Held out / used: "
            + ", ".join(f"{k} {c['held_out']}/{c['used']}" for k, c in p["counts"].items()) + ".",
            "- Time: " + ", ".join(f"{k} {v:.0f} s" for k, v in p["seconds"].items()) + ".",
        ]  # fmt: skip
    return lines


def _kind_lines(report: dict) -> list[str]:
    kinds = report["kinds"]
    rows = {kind: {"reals": k["n_real"], "fakes": k["n_fake"], "AUC as given": k["as_given"]["auc"],
                   "AUC matched": k["matched"]["auc"], "95% interval": interval_text(k["matched"].get("auc_interval")),
                   "caught as given": k["as_given"]["recall"],
                   "caught matched": k["matched"]["recall"], "false alarms": k["as_given"]["fpr"],
                   "ECE as given": k["as_given"]["ece"], "ECE matched": k["matched"]["ece"]}
            | ({"ECE at prior": k["as_given"]["ece_at_prior"]} if "ece_at_prior" in k["as_given"] else {})
            for kind, k in kinds.items()}  # fmt: skip
    lines = ["## Per kind of fake", "",
             "Each kind against its reals (fake folders: every held-out real file; made kinds: the real crops they "
             f"were made from), as given and compression matched. *95% interval*: of the AUC matched, a percentile "
             "bootstrap (1,000 resamples of the reals and of the fakes, each class kept at its size): the spread one "
             "draw of held-out items leaves. *Caught*: share of the kind's fakes at or above "
             f"{report['protocol']['threshold']:.2f}; *false alarms*: share of its reals above it; ECE: calibration "
             "error of P(fake) on that mix; *ECE at prior* (as given): the same with fakes weighted to the base rate "
             "the model is calibrated for (its `fake_prior`), the error a user sees on a stream with that rate.", "", _table(rows, tuple(next(iter(rows.values()), {})))]  # fmt: skip
    heads = report["model"].get("heads", [])
    if len(heads) > 1:
        head_rows = {kind: {f"{h} {key.replace('_', ' ')}": k["heads"][h][key] for h in heads
                            for key in ("as_given", "matched")} for kind, k in kinds.items()}  # fmt: skip
        lines += ["### Each head on each kind (AUC)", "",
                  "Does the blending head fire on blends and the generation head on generated faces?", "",
                  _table(head_rows, tuple(next(iter(head_rows.values()), {})))]  # fmt: skip
    else:
        lines += ["One-logit model: there are no separate blending and generation heads to report.", ""]
    return lines


def _ladder_lines(report: dict) -> list[str]:
    ladder, t = report["ladder"], report["protocol"]["threshold"]
    rows = {step: {"AUC files": r["auc_files"], "AUC made": r["auc_made"], "false alarms": r["fpr"],
                   "fakes caught (files)": r["recall_files"], "reals' mean P(fake)": r["real_mean"],
                   "change": r["real_mean_change"]} for step, r in ladder["rows"].items()}  # fmt: skip
    by_kind = {step: r["auc_by_kind"] for step, r in ladder["rows"].items()}
    target = ladder["target"]
    verdict = ("met" if target["met"] else "NOT met") if target["met"] is not None else "not measured"
    return ["## Degradation ladder", "",
            "The held-out files and made crops, reals and fakes alike, after each degradation. *AUC files*: fake "
            "folders against real files; *AUC made*: made fakes against their real crops; false alarms and the "
            f"reals' mean P(fake) are over the real files, at {t:.2f}.", "",
            _table(rows, tuple(next(iter(rows.values())))),
            f"Target: the reals' mean P(fake) must not climb more than {target['limit']:.2f} at "
            + " or ".join(f"{s} ({_fmt(c)})" for s, c in zip(target["steps"], target["changes"])) + f": **{verdict}**.",
            "", "AUC per kind and step:", "", _table(by_kind, tuple(next(iter(by_kind.values())))) if by_kind else ""]  # fmt: skip


def _authentic_lines(report: dict) -> list[str]:
    authentic, t = report["authentic"], report["protocol"]["threshold"]
    lines = ["## Authentic media", ""]
    photos, videos = authentic.get("photos"), authentic.get("videos")
    if photos:
        rows = {f"{f['file']} face {f['face']}": {k: v for k, v in f.items() if k not in ("file", "face")}
                for f in photos["faces"]}  # fmt: skip
        lines += [f"Every face of every photo in `{photos['folder']}` through the image detector: "
                  f"**{photos['flagged_faces']} of {photos['n_faces']} faces** and {photos['flagged_files']} of "
                  f"{photos['n_files']} photos flagged at {t:.2f}.", "",
                  _table(rows, tuple(next(iter(rows.values()), {})))]  # fmt: skip
        lines += [f"- unreadable: `{u['file']}` ({u['reason']})" for u in photos["unreadable"]]
    else:
        lines += ["No photo folder was given (`--photos`).", ""]
    if videos:
        rows = {c["file"]: {k: v for k, v in c.items() if k != "file"} for c in videos["clips"]}
        lines += [f"Every clip in `{videos['folder']}` through the video detector ({videos['frames_per_clip']} frames "
                  f"each): **{videos['flagged_clips']} of {videos['n_clips']} clips** flagged at {t:.2f} "
                  f"({videos['flagged_clips_held_out']} of those whose frames were not trained on). *in_training*: "
                  "the cache's frames of the clip were in the training split, or held out."
                  + ("" if videos["model_trained_on_video"] else " This model's checkpoint does not list video among "
                     "its training sources, so it was trained on none of these clips, whatever the cache's split."),
                  "",
                  _table(rows, tuple(next(iter(rows.values()), {})))]  # fmt: skip
        lines += [f"- unreadable: `{u['file']}` ({u['reason']})" for u in videos["unreadable"]]
    else:
        lines += ["No video folder was given (`--videos`).", ""]
    return lines


def _loko_lines(report: dict) -> list[str]:
    loko = report["loko"]
    lines = ["## Leave one kind out", ""]
    if not loko["given"]:
        return lines + ["**None were given**: no checkpoint trained without a kind was evaluated, so this report "
                        "says nothing about kinds of fake never seen in training. Train one with "
                        "`python -m deepfake.train ... --leave-out KIND` and pass `--loko-models KIND=PATH`.", ""]  # fmt: skip
    rows = {kind: {k: interval_text(v) if k == "auc_matched_interval" else v for k, v in m.items() if k != "model"}
            | {"model": f"`{m['model']}`"} for kind, m in loko["models"].items()}  # fmt: skip
    if "carried_from" in loko:
        came = loko["carried_from"]
        lines += [f"Kept from the evaluation of version `{came['model_version']}` (`{came['report']}`): these "
                  "checkpoints were not scored again; the column of this model's AUC is this evaluation's.", ""]  # fmt: skip
    return lines + [f"Each checkpoint scored on the kind it was trained without, against that kind's reals, "
                    f"compression matched ({loko['condition']}); beside it, the evaluated model's AUC on the same set. "
                    "*left_out_in_training*: what the checkpoint's own training configuration records; "
                    "*auc_matched_interval*: its 95% bootstrap interval (as under *Per kind of fake*).", "",
                    _table(rows, tuple(next(iter(rows.values()))))]  # fmt: skip


def _misses_lines(report: dict) -> list[str]:
    found = report["misses"]
    lines = ["## Misses", "", f"Real files called FAKE as given: {found['n_false_alarms']}"
             + (f"; the worst {len(found['false_alarms'])}:" if found["false_alarms"] else "."), ""]  # fmt: skip
    lines += [f"- {m['p_fake']:.3f} `{m['path']}` ({m['source']})" for m in found["false_alarms"]]
    for kind, missed in found["missed"].items():
        made = " (named by the file of the real crop it was made from)" if kind in MADE_KINDS else ""
        lines += ["", f"Lowest-scored {kind} fakes called REAL{made}:", ""]
        lines += [f"- {m['p_fake']:.3f} `{m['path']}`" for m in missed]
    return lines + ["", "Every kind's share of fakes caught is in *Per kind of fake*.", ""]


def write_reports(report: dict, out: Path) -> None:
    t = report["protocol"]["threshold"]
    img, face = report["image_level"], report["face_level"]
    files = report["files"]
    levels = {"image level": img, "face level": face} | ({"made crops": report["made_level"]} if report.get("made_level") else {})
    lines = [
        "# Evaluation report", "",
        f"Model **{report['model']['name']}** version `{report['model']['version']}`, trained on "
        f"{', '.join(report['model']['trained_on']) or 'unknown'}; temperature {report['model']['temperature']:.3f}.", "",
        "## Protocol", "", *_protocol_lines(report), "",
        "## Headline (real files vs fake folders, as given)", "",
        _table(levels),
        f"Confusion at {t:.2f} (image level): {img['confusion']}.", "",
    ]  # fmt: skip
    for key, section in (("kinds", _kind_lines), ("ladder", _ladder_lines), ("authentic", _authentic_lines),
                         ("loko", _loko_lines), ("misses", _misses_lines)):  # fmt: skip
        if key in report:
            lines += section(report)
    lines += ["## Per source", "", "Each real source against all fake files; each fake folder against all real files.",
              "", _table(report["by_source"]), "## Per demographic group", "",
              "Gender/ethnicity from file names where they exist (UTKFace, GAN portraits). `fpr` is the false-alarm "
              "rate on that group's real faces; groups with one class only show no AUC.", "",
              _table(report["by_group"]), "## Plots", "", "Real files against fake folders, as given.", ""]  # fmt: skip
    lines += [f"![{p}]({p})" for p in report["plots"]]
    if files["unreadable"] or files["no_face"]:
        lines += ["", "## Files listed", ""] + [f"- unreadable: `{u['path']}` ({u['reason']})" for u in files["unreadable"]]
        lines += [f"- no face: `{p}`" for p in files["no_face"]]
    (out / "EVALUATION_REPORT.md").write_text("\n".join(lines) + "\n")

    sweep = report["threshold_sweep"]
    rows = {f"{r['threshold']:.2f}": r for r in sweep["rows"]}
    current = next((r for r in sweep["rows"] if abs(r["threshold"] - t) < 1e-9), None)
    best = rows[f"{sweep['best_f1_threshold']:.2f}"]
    # Users act on a FAKE verdict (a story dropped, a post removed): a threshold is only a fair
    # candidate if it keeps false alarms on authentic faces within a budget.
    within = [r for r in sweep["rows"] if r["fpr"] <= FALSE_ALARM_BUDGET] or sweep["rows"]
    budget = max(within, key=lambda r: (r["f1"], -abs(r["threshold"] - t)))
    facts = (
        f"Best F1 overall: {best['threshold']:.2f} (F1 {best['f1']:.4f}, false-alarm rate {best['fpr']:.4f}). "
        f"Best F1 with at most {FALSE_ALARM_BUDGET:.0%} false alarms: {budget['threshold']:.2f} "
        f"(F1 {budget['f1']:.4f}, false-alarm rate {budget['fpr']:.4f})."
    )
    if current is not None and budget["f1"] - current["f1"] <= 0.02:
        advice = (f"{facts} Keep {t:.2f}: its F1 ({current['f1']:.4f}) is within 0.02 of the best within the "
                  f"false-alarm budget, with a false-alarm rate of {current['fpr']:.4f}.")
    else:
        at_default = f"F1 {current['f1']:.4f}, false-alarm rate {current['fpr']:.4f}" if current else "not on the grid"
        advice = (f"{facts} At {t:.2f}: {at_default}. On this evaluation set the evidence favours "
                  f"{budget['threshold']:.2f}. The shipped default stays {t:.2f} until that is confirmed on other "
                  "kinds of fakes (a threshold tuned on one kind does not transfer); the dashboard, the API and "
                  "the CLI let users move it.")
    threshold_lines = [
        "# Threshold optimization report", "",
        f"Image-level scores of `{report['protocol']['data']}` (split `{report['protocol']['split']}`), "
        "real files vs fake folders; a score at or above the threshold means FAKE.", "",
        _table(rows, ("accuracy", "precision", "recall", "f1", "fpr", "fnr")),
        f"- Youden's J (recall − FPR) is highest at **{sweep['youden_threshold']:.2f}**.",
        f"- F1 is highest at **{sweep['best_f1_threshold']:.2f}**.",
        f"- At the default **{t:.2f}**: " + (", ".join(f"{k} {current[k]:.4f}" for k in ("accuracy", "precision", "recall", "f1", "fpr", "fnr")) if current else "not on the grid") + ".",  # noqa: E501
        "", "## Recommendation", "", advice, "",
    ]  # fmt: skip
    (out / "THRESHOLD_OPTIMIZATION_REPORT.md").write_text("\n".join(threshold_lines))


def _kind_paths(values: list[str]) -> dict[str, str]:
    pairs = {}
    for value in values:
        kind, sep, path = value.partition("=")
        if not (sep and kind and path):
            raise SystemExit(f"--loko-models takes KIND=PATH, got {value!r}")
        pairs[kind] = path
    return pairs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m deepfake.evaluate", description=__doc__.split("\n")[0])
    defaults = EvalConfig(data="")
    parser.add_argument("--data", required=True, help="folder with real/** and fake/** (the training cache's root)")
    parser.add_argument("--model", help="checkpoint (default: models/image_model.pth)")
    parser.add_argument("--out", default=defaults.out)
    parser.add_argument("--cache", default=defaults.cache, help="training cache whose validation split is evaluated")
    parser.add_argument("--per-kind", type=int, default=defaults.per_kind,
                        help="at most this many files per real source and fake folder, and real crops for the made kinds "
                             "(0: no cap)")  # fmt: skip
    parser.add_argument("--photos", help="folder of authentic photos: every face is scored and listed")
    parser.add_argument("--videos", help="folder of authentic clips: each is scored by the video detector")
    parser.add_argument("--taef2", help="TAEF2 weights folder: reconstructions the cache lacks are made with it")
    parser.add_argument("--loko-models", nargs="*", default=[], metavar="KIND=PATH",
                        help="checkpoints trained with --leave-out KIND, each scored on its left-out kind")  # fmt: skip
    parser.add_argument("--loko-from", metavar="METRICS_JSON",
                        help="keep the leave-one-kind-out results of this earlier evaluation instead of scoring checkpoints")  # fmt: skip
    parser.add_argument("--threshold", type=float)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    args = parser.parse_args(argv)
    if args.loko_from and args.loko_models:
        parser.error("--loko-from and --loko-models exclude each other")
    config = EvalConfig(data=args.data, out=args.out, model=args.model, cache=args.cache, per_kind=args.per_kind or None,
                        photos=args.photos, videos=args.videos, taef2=args.taef2,
                        loko_models=_kind_paths(args.loko_models), loko_from=args.loko_from, threshold=args.threshold,
                        seed=args.seed)  # fmt: skip
    report = evaluate(config)
    img = report["image_level"]
    print(f"files (real vs fake folders): AUC {_fmt(img['auc'])}, accuracy {img['accuracy']:.4f}, "
          f"false alarms {img['fpr']:.4f}, ECE {_fmt(img['ece'])}")  # fmt: skip
    for kind, k in report["kinds"].items():
        print(f"  {kind}: AUC as given {_fmt(k['as_given']['auc'])}, matched {_fmt(k['matched']['auc'])}, "
              f"ECE {_fmt(k['as_given']['ece'])}")  # fmt: skip
    for step, row in report["ladder"]["rows"].items():
        print(f"  {step}: AUC files {_fmt(row['auc_files'])}, made {_fmt(row['auc_made'])}, false alarms "
              f"{_fmt(row['fpr'])}, reals' mean {_fmt(row['real_mean'])}")  # fmt: skip
    authentic = report["authentic"]
    if "photos" in authentic:
        print(f"photos: {authentic['photos']['flagged_faces']} of {authentic['photos']['n_faces']} faces flagged")
    if "videos" in authentic:
        print(f"clips: {authentic['videos']['flagged_clips']} of {authentic['videos']['n_clips']} flagged")
    print(f"reports in {args.out} ({report['protocol']['seconds']['total']:.0f} s)")


if __name__ == "__main__":
    main()
