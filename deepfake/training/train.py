"""Train a detector: ``python -m deepfake.train --data ../shared/data/faces --out models/image_model.pth``.

Version 2 recipe. One network, two heads: *blending* (a face region pasted, swapped or edited into
a real photo: self-blends, part swaps, TAEF2-rendered regions blended in) and *generation* (the
whole face synthesised: the fake folders, and whole crops round-tripped through TAEF2).

Samples come in pairs, SBI-style: a real crop and a fake (made from that very crop where the kind
allows) share one batch and pass through one degradation chain with identical parameters (framing
jitter, flips, colour, resizing, blur, noise, JPEG, H.264), applied after the manipulation. So no
degradation can tell the classes apart; only the manipulation can.

Faces are detected and cropped once into a cache; training runs for ``--total-samples`` in
``--epoch-size`` chunks. Each chunk ends with a validation on identity-disjoint faces, a resumable
state (``<out>.state.pt``), the chunk's calibrated checkpoint (``<out>.last.pth``) and, when the
selection score improves, a calibrated checkpoint at ``--out``. ``--init CHECKPOINT --total-samples 0``
only recalibrates a trained model; ``--init`` with several checkpoints averages their weights first,
or with ``--ensemble`` keeps them whole, as members of an ensemble that is calibrated, not trained.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from deepfake.engine import select_device
from deepfake.evaluation.metrics import expected_calibration_error, fit_temperature, roc_auc
from deepfake.faces import limit_detail
from deepfake.loading import DEFAULT_THRESHOLD, load_model, save_checkpoint
from deepfake.model import (
    COMBINE_FORMS,
    Ensemble,
    ModelConfig,
    combine_heads,
    create_model,
    ensemble_arch,
    head_logits,
)
from deepfake.training.augment import frame_crop, paired_look
from deepfake.training.data import (
    CACHE_MARGIN,
    RECONSTRUCTIONS_PER_SOURCE,
    VIDEO_SOURCE,
    CropCache,
    add_reconstructions,
    build_cache,
)
from deepfake.training.degradation import (
    LADDER,
    Degradation,
    DegradationConfig,
    apply_degradation,
    degrade_crop,
    jpeg_in_grid,
    sample_degradation,
)
from deepfake.training.pseudofakes import decoder_blend, part_swap, resynthesize, self_blend

log = logging.getLogger("deepfake.training.train")

HEADS = ("blending", "generation")
BLENDING_KINDS = ("self_blend", "part_swap", "resynthesis", "decoder_blend")
MADE_GENERATION_KINDS = ("taef2",)  # whole crops round-tripped through TAEF2
# Share of pairs per kind of fake. Fake-folder kinds are named "fake:<folder>"; a kind that is left
# out or has no data gets no share (the others are renormalised).
# v2.1: blends (validation AUC 0.68 after 48k samples) get more of the share that the saturated GAN
# folder (0.999) had.
MIXTURE = {"self_blend": 0.22, "part_swap": 0.14, "resynthesis": 0.05, "decoder_blend": 0.12, "taef2": 0.13,
           "fake:gan": 0.10, "fake:stylegan_ffhq": 0.12, "fake:sd21": 0.12}  # fmt: skip
# Fake folders whose pictures were made to match one real source: their partner reals come from it.
MATCHED_REALS = {"fake:stylegan_ffhq": "ffhq"}
IGNORE = -1.0  # a head's target that the sample says nothing about
TRACE_KINDS = ("taef2", "decoder_blend")  # made with a TAEF2 rendering: a decoder's traces, whole or pasted
# When a pair is degraded this heavily, the manipulation's traces are often gone and the pair
# cannot be told apart; with equal weights the model then answers 0.5 for both, so authentic
# compressed media climbs towards the threshold (what made v1 flag news clips). The fake of such a
# pair weighs less, so that where no evidence survives, the answer leans REAL (optimum w/(1+w)).
HEAVY_FAKE_WEIGHT = 0.35
# v2.2: v2.0.0's generation head scored the same press photo 0.53 at 240p and 0.76 at 1080p: it had
# learned "sharp = generated", since its generated faces are sharp and most of its reals (LFW) are
# blown up. Pairs now share one level of detail (a member holding more is resampled down to the
# other's, unless within this tolerance), and a fake folder's partner reals come from every real
# source in equal shares, so that sharp reals (UTK, FFHQ, video frames) meet the generated faces.
DETAIL_TOLERANCE = 0.95
# Compression parity, for the same reason: every real source was saved at JPEG 75, the GAN and SD 2.1
# faces at 92, and a TAEF2 reconstruction carries no JPEG grid at all; so "no JPEG grid" meant
# "generated" (v2.0.0 scored clean held-out video frames 0.66 on the generation head, 0.52 once
# re-saved at JPEG 75). The cleaner member of a pair is re-saved at the other's quality, in its
# own source's pixel grid, before the shared chain. Quality 100 stands for "no JPEG".
NO_JPEG = 100
# Where a made fake differs from its real after the shared chain (what the model could see), as a
# per-pixel map: mean absolute difference over the channels, smoothed over 5x5 pixels, above this
# many grey levels. A fake folder's picture is not made from its partner: its map is UNKNOWN.
CHANGE_LEVEL = 2.0
UNKNOWN = 255


def is_heavy(params: Degradation) -> bool:
    return ((params.h264_crf is not None and params.h264_crf >= 32)
            or (params.jpeg_quality is not None and params.jpeg_quality <= 40) or params.resize_scale <= 0.45)  # fmt: skip


@dataclass
class TrainConfig:
    data: str
    out: str
    cache: str = ".cache/faces-v2"
    videos: str | None = None  # folder of authentic clips: their frames are real faces too
    taef2: str | None = None  # TAEF2 weights folder: decoder-trace fakes
    reconstructions_per_source: int = RECONSTRUCTIONS_PER_SOURCE  # TAEF2 renderings a real source (data.py)
    arch: str = "efficientnet_lite0"
    input_size: int = 192  # v2: full detail at 192 px, 0.73x the pixels (and compute) of 224
    face_margin: float = 1.3
    detail_size: int | None = None
    total_samples: int = 150_000
    epoch_size: int = 10_000  # samples between validations and checkpoints
    batch_size: int = 32  # samples, i.e. half as many pairs
    lr: float = 3e-4
    weight_decay: float = 1e-4
    seed: int = 0
    leave_out: list[str] = field(default_factory=list)  # fake kinds never trained on (e.g. fake:sd21, taef2)
    # Start from this checkpoint instead of ImageNet; from several, from their weights' average.
    init: list[str] = field(default_factory=list)
    # With several --init checkpoints: keep each whole, as a member of an ensemble (model.Ensemble),
    # and only calibrate it (--total-samples 0). For lineages that weight averaging cannot join.
    ensemble: bool = False
    # Go on with the run that wrote this checkpoint (its best or latest chunk) from the chunk after it,
    # for when the run's state file is lost: its weights, history and place in the schedule are in the
    # checkpoint; the optimizer's moments (and a change-map head) start afresh. The run's settings must match.
    continue_from: str | None = None
    val_fraction: float = 0.1
    val_per_kind: int = 200
    workers: int = 1
    device: str | None = None
    # bfloat16 autocast on the CPU: measure before turning it on. It was about twice as fast on the
    # machines v2.0 trained on, and 1.6x slower on a later 2-core Xeon with AMX (3.09 s against
    # 1.92 s a step of 32 samples at 192 px, float32 channels-last), which is why v2.2 trained at
    # half the speed.
    bf16: bool = False
    max_steps: int | None = None  # stop early (tests)
    version: str = "2.0.0"
    flip_average: bool = True
    # Base rate the FAKE probability is calibrated for: one fake in four faces checked. With
    # balanced classes, a weakly separated kind puts reals near 0.5 and many over 0.6; a screening
    # prior makes a FAKE verdict at 0.6 mean a likelihood ratio of 4.5 or more, not 1.5.
    fake_prior: float = 0.25
    # How the heads' logits make the FAKE logit (ModelConfig.combine). The mixture ranks blends better
    # than the linear form; fitted freely it flagged an authentic news clip (v2.3.0), so its false
    # alarms are now held to the linear fit's (fit_combiner), and on v2.4's weights it beat linear.
    combine: str = "mixture"
    # Quantile of the validation reals' head logits past which each mixture term gets a steeper
    # slope of its own (ModelConfig.combine_knots); 0: none. 0.99 since v2.14.0: out of fold on
    # v2.13.0's validation logits, ECE at the prior 0.049/0.040 -> 0.025/0.027, same false alarms.
    combine_knee: float = 0.99
    # A checkpoint whose false alarms cap this model's: after calibration, the FAKE logit is lowered
    # by the least shift that flags no more validation stills, and no more news-clip frames, at the
    # threshold as given than that model flags on the same pairs. The calibration's own guard cannot
    # hold a better ranker at the default's operating point: on some 700 stills, v2.25.0-lite1 and
    # v2.28.0-pairl1 flagged about as many as v2.19.0 and 11 and 10 held-out files against its 4
    # (model card, 2026-12-07). Set before two fresh models were evaluated, this cap took them to 2.
    false_alarms_of: str | None = None
    # Weight of the change-map loss: a training-only 1x1 convolution on the last feature map predicts,
    # cell by cell, where the fake differs from its real (``change_map``), so that the features the
    # heads pool must locate the manipulation (as Face X-ray's boundary supervision does), not only
    # register it. The checkpoint does not keep that convolution: inference is unchanged. 0: off.
    mask_loss: float = 0.0
    # Share of pairs per kind (MIXTURE's keys), and DegradationConfig fields that differ from its
    # defaults: both travel with the checkpoint's train_config, so a run says how it was made.
    mixture: dict[str, float] = field(default_factory=lambda: dict(MIXTURE))
    degradation: dict[str, float] = field(default_factory=dict)
    # DegradationConfig fields for the decoder-trace kinds' pairs (TAEF2 renderings, decoder blends),
    # over ``degradation``. Decoder traces are fine detail that most of the chain erases (about one
    # pair in eight passes it untouched): v2.14.0 told held-out renderings from their reals at AUC
    # 0.78 (0.69 both re-saved at JPEG 75), a model trained on them without the chain at 0.98 (0.89)
    # (model card, 2026-12-06). Still one draw for both members of a pair: degradation tells nothing.
    trace_degradation: dict[str, float] = field(default_factory=dict)


def _targets(kind: str) -> tuple[float, float]:
    """(blending, generation) targets of a fake of ``kind``. A decoder blend pastes a generated
    region, so the generation head is not told either way."""
    if kind == "decoder_blend":
        return 1.0, IGNORE
    if kind in BLENDING_KINDS:
        return 1.0, 0.0
    return 0.0, 1.0


def make_fake(kind: str, cache: CropCache, index: int, rng: np.random.Generator, donors: np.ndarray,
              recon_row: dict[int, int]) -> np.ndarray:  # fmt: skip
    """A fake of ``kind`` made from real crop ``index`` (the pseudo-fake kinds)."""
    crop, landmarks = np.asarray(cache.crops[index]), cache.landmarks[index]
    if kind == "self_blend":
        return self_blend(crop, landmarks, rng).image
    if kind == "part_swap":
        donor = int(rng.choice(donors))
        return part_swap(crop, landmarks, np.asarray(cache.crops[donor]), cache.landmarks[donor], rng).image
    if kind == "resynthesis":
        return resynthesize(crop, landmarks, rng).image
    assert cache.reconstructions is not None
    reconstruction = np.asarray(cache.reconstructions[recon_row[index]])
    if kind == "decoder_blend":
        return decoder_blend(crop, reconstruction, landmarks, rng).image
    return reconstruction  # taef2


def change_map(real: np.ndarray, fake: np.ndarray) -> np.ndarray:
    """uint8 [S, S]: 1 where ``fake`` differs visibly from ``real`` (both uint8 RGB, same chain)."""
    difference = np.abs(real.astype(np.float32) - fake.astype(np.float32)).mean(axis=2)
    return (cv2.blur(difference, (5, 5)) > CHANGE_LEVEL).astype(np.uint8)


class PairSet(Dataset):
    """Item = one pair (real, fake) as uint8 [2, 3, S, S], targets [2, 2] (IGNORE = no target), loss
    weights [2] and change maps uint8 [2, S, S] (``change_map``; the real's is 0, UNKNOWN where the
    fake is not made from its real)."""

    def __init__(self, cache: CropCache, pairs: list[tuple[int, str, int]], donors: np.ndarray,
                 config: TrainConfig, train: bool, condition: str = "as given") -> None:  # fmt: skip
        self.cache, self.pairs, self.donors, self.config, self.train = cache, pairs, donors, config, train
        self.condition = condition
        self.degradation = DegradationConfig(**config.degradation)
        self.trace_degradation = DegradationConfig(**{**config.degradation, **config.trace_degradation})
        self.recon_row = cache.reconstruction_of()
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.pairs)

    def detail(self, index: int) -> float:
        """Share of the model input's resolution that crop ``index`` really holds (1: full detail;
        LFW faces framed at 192 px hold 0.84 on average, blown up from fewer source pixels)."""
        return min(1.0, self.source_pixels(index) / self.config.input_size)

    def quality(self, index: int) -> int:
        """JPEG quality crop ``index``'s file was saved at (NO_JPEG when it was not a JPEG)."""
        if self.cache.qualities is None:
            return NO_JPEG
        return int(self.cache.qualities[index]) or NO_JPEG

    def source_pixels(self, index: int) -> float:
        """Source pixels across the model's framing of crop ``index``: where its file's JPEG grid was."""
        if self.cache.spans is None:
            return float(self.config.input_size)
        return float(self.cache.spans[index]) * self.config.face_margin / CACHE_MARGIN

    def _finish(self, crop: np.ndarray, look_seed: int, degradation: DegradationConfig, keep_detail: float = 1.0,
                resave: int = NO_JPEG, source_pixels: float = 0.0) -> tuple[np.ndarray, bool]:  # fmt: skip
        """Framing, source parity, look and degradation (and whether it was heavy): a function of
        the seed alone, never of the pixels, so both members of a pair get identical parameters.
        ``resave`` < NO_JPEG re-saves the framed crop at that JPEG quality in a grid of
        ``source_pixels``; ``keep_detail`` < 1 then resamples it down to that share of its detail."""
        rng = np.random.default_rng(look_seed)
        heavy = False
        if self.train:
            crop = frame_crop(crop, self.config.face_margin, self.config.input_size, rng)
            if resave < NO_JPEG:
                crop = jpeg_in_grid(crop, resave, source_pixels)
            if keep_detail < DETAIL_TOLERANCE:
                crop = limit_detail(crop, round(crop.shape[0] * keep_detail))
            crop = paired_look(crop, rng)
            params = sample_degradation(rng, degradation)
            crop, heavy = apply_degradation(crop, params, int(rng.integers(2**31))), is_heavy(params)
        else:
            crop = frame_crop(crop, self.config.face_margin, self.config.input_size, None)
            crop = degrade_for_condition(crop, self.condition)
        return limit_detail(crop, self.config.detail_size), heavy

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        real, kind, other = self.pairs[i]
        # Seeded per pair and epoch: the same run gives the same samples with any worker count, and
        # validation samples are identical at every validation.
        rng = np.random.default_rng((self.config.seed, self.epoch if self.train else 10_000, i))
        if kind.startswith("fake:"):
            fake = np.asarray(self.cache.crops[other])
        else:
            fake = make_fake(kind, self.cache, real, rng, self.donors, self.recon_row)
        look_seed = int(rng.integers(2**62))
        # Detail parity: the sharper member is brought down to the other's detail, so that the
        # sources' resolutions (LFW blown up, generated portraits sharp) cannot tell the classes
        # apart; a made fake shares its real's crop and detail.
        source = other if kind.startswith("fake:") else real
        real_detail, fake_detail = self.detail(real), self.detail(source)
        shared = min(real_detail, fake_detail)
        # A made fake keeps its real's JPEG grid, except a TAEF2 rendering (whole or pasted).
        real_quality = self.quality(real)
        fake_quality = NO_JPEG if kind in TRACE_KINDS else self.quality(source)
        resave = min(real_quality, fake_quality)
        real_resave = resave if real_quality > resave else NO_JPEG
        fake_resave = resave if fake_quality > resave else NO_JPEG
        if not kind.startswith("fake:"):
            # A made fake and its real share one grid: a TAEF2 rendering re-saved there is resampled to
            # the source's size and back (192 -> 164 -> 192 px for LFW), so its real is re-saved alike,
            # or that resampling alone would set the fake apart (and mark a third of the crop as changed).
            real_resave = fake_resave
        degradation = self.trace_degradation if kind in TRACE_KINDS else self.degradation
        (real_pixels, heavy), (fake_pixels, _) = (
            self._finish(np.asarray(self.cache.crops[real]), look_seed, degradation, shared / real_detail,
                         real_resave, self.source_pixels(real)),
            self._finish(fake, look_seed, degradation, shared / fake_detail, fake_resave,
                         self.source_pixels(source)))  # fmt: skip
        pixels = torch.from_numpy(np.ascontiguousarray(np.stack([real_pixels, fake_pixels]))).permute(0, 3, 1, 2)
        weights = torch.tensor([1.0, HEAVY_FAKE_WEIGHT if heavy else 1.0])
        changed = np.zeros((2, *real_pixels.shape[:2]), np.uint8)
        changed[1] = UNKNOWN if kind.startswith("fake:") else change_map(real_pixels, fake_pixels)
        return pixels, torch.tensor([(0.0, 0.0), _targets(kind)]), weights, torch.from_numpy(changed)


# Validation conditions: each pair is scored as given and re-encoded the same way for both classes.
CONDITIONS = ("as given", "JPEG 75", "half size + JPEG 50", "H.264 CRF 35")


def degrade_for_condition(crop: np.ndarray, condition: str) -> np.ndarray:
    return crop if condition == "as given" else degrade_crop(crop, LADDER[condition])


def kinds_available(cache: CropCache, config: TrainConfig, validation: bool) -> dict[str, list[int]]:
    """Per kind, the crops a pair can start from: real crops for the made kinds, fake crops for
    the fake folders. Validation uses the identity-disjoint split."""
    usable = cache.face_found & (cache.is_val == validation)
    recon = cache.reconstruction_of()
    reals = [i for i, r in enumerate(cache.records) if usable[i] and r.label == 0]
    kinds: dict[str, list[int]] = {"self_blend": reals, "part_swap": reals, "resynthesis": reals,
                                   "decoder_blend": [i for i in reals if i in recon]}  # fmt: skip
    kinds["taef2"] = kinds["decoder_blend"]
    for i, record in enumerate(cache.records):
        if usable[i] and record.label == 1:
            kinds.setdefault(f"fake:{record.source}", []).append(i)
    return {k: v for k, v in kinds.items() if v and k not in config.leave_out}


def kind_share(mixture: dict[str, float], kind: str) -> float:
    """Share of pairs of ``kind`` before normalising; a fake folder the mixture does not name gets 0.1."""
    return mixture.get(kind, 0.1)


def draw_pairs(cache: CropCache, kinds: dict[str, list[int]], count: int, rng: np.random.Generator,
               mixture: dict[str, float]) -> list[tuple[int, str, int]]:  # fmt: skip
    """``count`` pairs (real index, kind, fake index or -1) with kinds in ``mixture`` proportions
    (a fake folder it does not name gets 0.1)."""
    reals = kinds["self_blend"]
    by_source: dict[str, list[int]] = {}
    for i in reals:
        by_source.setdefault(cache.records[i].source, []).append(i)
    names = [k for k in mixture if k in kinds] + [k for k in kinds if k.startswith("fake:") and k not in mixture]
    weights = np.array([kind_share(mixture, k) for k in names])
    chosen = rng.choice(len(names), size=count, p=weights / weights.sum())
    pairs = []
    for n in chosen:
        kind = names[n]
        if kind.startswith("fake:"):
            source = MATCHED_REALS.get(kind) or sorted(by_source)[int(rng.integers(len(by_source)))]
            partners = by_source.get(source, reals)
            pairs.append((int(rng.choice(partners)), kind, int(rng.choice(kinds[kind]))))
        else:
            pairs.append((int(rng.choice(kinds[kind])), kind, -1))
    return pairs


def validation_pairs(cache: CropCache, kinds: dict[str, list[int]], config: TrainConfig) -> list[tuple[int, str, int]]:
    """Up to ``val_per_kind`` pairs of each kind, fixed for the whole run."""
    rng = np.random.default_rng(1234)
    pairs = []
    reals = kinds["self_blend"]
    for kind, pool in kinds.items():
        picks = rng.permutation(len(pool))[: config.val_per_kind]
        for k in picks:
            if kind.startswith("fake:"):
                pairs.append((int(rng.choice(reals)), kind, pool[k]))
            else:
                pairs.append((pool[k], kind, -1))
    return pairs


def average_weights(checkpoints: list[dict], names: list[str]) -> dict[str, torch.Tensor]:
    """The uniform average of the checkpoints' weights (a "model soup"), for checkpoints of one run
    or of runs continued from one another: v2.7.0, the average of v2.4.1 and two later chunks, scored
    0.791 on validation against 0.766-0.787 for each. BatchNorm statistics are averaged too; integer
    buffers are the first's."""
    first = checkpoints[0]["state_dict"]
    for checkpoint, name in zip(checkpoints[1:], names[1:]):
        state = checkpoint["state_dict"]
        if state.keys() != first.keys() or any(state[k].shape != v.shape for k, v in first.items()):
            raise SystemExit(f"--init: {name} does not have the layout of {names[0]}; only models of one "
                             "architecture and heads can be averaged.")  # fmt: skip
    return {k: torch.stack([c["state_dict"][k].double() for c in checkpoints]).mean(0).to(v.dtype)
            if v.is_floating_point() else v for k, v in first.items()}  # fmt: skip


class ChangeMapHead(nn.Module):
    """Training only: a change-map logit per cell of ``model``'s last feature map (caught by a hook
    on ``model.head`` during the model's own forward pass, so the features are computed once)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.conv = nn.Conv2d(model.classifier.in_features, 1, 1)
        self.features: torch.Tensor | None = None
        model.head.register_forward_hook(lambda _module, _inputs, output: setattr(self, "features", output))

    def loss(self, changed: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Weighted BCE between the last forward pass's change-map logits and ``changed`` [B, S, S]
        (each cell's target: the share of its pixels that changed); UNKNOWN samples are left out."""
        assert self.features is not None, "run the model forward first"
        logits = self.conv(self.features.float()).squeeze(1)
        known = changed[:, 0, 0] != UNKNOWN
        target = nn.functional.adaptive_avg_pool2d((changed == 1).float()[:, None], logits.shape[-2:])[:, 0]
        per_sample = nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none").mean((1, 2))
        weights = weights * known
        return (per_sample * weights).sum() / weights.sum().clamp(min=1e-6)


def _normalise(batch: torch.Tensor, config: ModelConfig, device) -> torch.Tensor:
    mean = torch.tensor(config.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(config.std, device=device).view(1, 3, 1, 1)
    return ((batch.to(device).float() / 255 - mean) / std).contiguous(memory_format=torch.channels_last)


def _flatten(*pairs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """[P, 2, ...] pairs -> [2P, ...] samples."""
    return tuple(t.flatten(0, 1) for t in pairs)


@torch.inference_mode()
def predict(model: nn.Module, loader: DataLoader, config: ModelConfig, device) -> np.ndarray:
    """Head logits [2P, heads] (flip-averaged as the config says), pairs flattened real-first."""
    model.eval()
    out = []
    for pixels, *_ in loader:
        out.append(head_logits(model, _normalise(pixels.flatten(0, 1), config, device), config).cpu().numpy())
    return np.concatenate(out)


@dataclass
class Validation:
    """Head logits per condition for the fixed validation pairs (flattened: real, fake, real, ...)."""

    kinds: np.ndarray  # [2P]: "real", "repeat" (a real already counted) or the fake's kind
    logits: dict[str, np.ndarray]  # condition -> [2P, heads]
    sources: np.ndarray  # [2P]: a real's source (lfw, video, ...); "" for a fake


def run_validation(model, cache, pairs, config, model_config, device, conditions=CONDITIONS) -> Validation:
    logits = {}
    for condition in conditions:
        dataset = PairSet(cache, pairs, np.array([0]), config, train=False, condition=condition)
        loader = DataLoader(dataset, batch_size=32, num_workers=config.workers)
        logits[condition] = predict(model, loader, model_config, device)
    # A real partnered with several fakes counts once as "real"; its repeats are set aside.
    kinds, sources, seen = [], [], set()
    for real, kind, _ in pairs:
        kinds += ["real" if real not in seen else "repeat", kind]
        sources += [cache.records[real].source, ""]
        seen.add(real)
    return Validation(np.array(kinds), logits, np.array(sources))


def fit_combiner(logits: np.ndarray, labels: np.ndarray, fake_prior: float, form: str,
                 threshold: float = DEFAULT_THRESHOLD, knee: float = 0.0) -> dict:  # fmt: skip
    """The ``form`` (``ModelConfig.combine``) of the FAKE logit on the head logits that best
    predicts the FAKE label, with fakes weighted to ``fake_prior`` of the total (the probability
    then means the same whatever the mix of kinds in validation). Returns ModelConfig fields.
    The linear form is a logistic regression (convex); the mixture starts from it, and calls no
    more reals FAKE at ``threshold`` than the linear fit does; ``knee`` > 0 adds to each of its
    terms a slope past that quantile of the reals' head logit (``ModelConfig.combine_knots``)."""
    x = torch.tensor(logits, dtype=torch.float64)
    y = torch.tensor(labels, dtype=torch.float64)
    weight = torch.where(y > 0.5, fake_prior / max(1, int(labels.sum())),
                         (1 - fake_prior) / max(1, int((1 - labels).sum())))  # fmt: skip
    w = torch.ones(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)

    def fit(params: list[torch.Tensor], combined) -> None:
        optimizer = torch.optim.LBFGS(params, max_iter=200, line_search_fn="strong_wolfe")

        def closure():
            optimizer.zero_grad()
            loss = (weight * nn.functional.binary_cross_entropy_with_logits(combined(), y, reduction="none")).sum()
            loss.backward()
            return loss

        optimizer.step(closure)

    fit([w, b], lambda: x @ w + b)
    if form == "linear":
        return {"combine": "linear", "combine_weights": _rounded(w), "combine_bias": round(float(b.detach()), 5),
                "combine_offsets": (), "combine_knots": (), "combine_slopes": ()}  # fmt: skip
    reals, cut = x[y < 0.5], math.log(threshold / (1 - threshold))
    allowed = int(((reals @ w + b).detach() >= cut).sum())  # the linear fit's false alarms
    # From the linear fit's weights, each head's term with an even share of its bias.
    o = torch.full((x.shape[1],), float(b.detach()) - math.log(x.shape[1]), dtype=torch.float64, requires_grad=True)
    fit([w, o], lambda: torch.logsumexp(x * w + o, dim=1))
    knots = torch.quantile(reals, knee, dim=0) if knee > 0 else torch.full((x.shape[1],), math.inf, dtype=x.dtype)
    raw = torch.full((x.shape[1],), -3.0, dtype=torch.float64, requires_grad=knee > 0)  # slope = softplus(raw) >= 0

    def mixture(z: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(z * w + o + nn.functional.softplus(raw) * torch.relu(z - knots), dim=1)

    if knee > 0:
        fit([w, o, raw], lambda: mixture(x))
    # v2.3.0: the best-fitting mixture called 4.4% of validation reals FAKE (the linear fit 1.5%) and
    # flagged an authentic news clip. Lowering both offsets by one shift keeps the mixture's ranking
    # (what it gains on blends) and moves the reals' (allowed + 1)-th highest score under the threshold.
    mixed = mixture(reals).detach().sort(descending=True).values
    if allowed < len(mixed) and mixed[allowed] >= cut:
        o = o - (float(mixed[allowed] - cut) + 1e-6)
    knees = (_rounded(knots), _rounded(nn.functional.softplus(raw))) if knee > 0 else ((), ())
    return {"combine": "mixture", "combine_weights": _rounded(w), "combine_bias": 0.0, "combine_offsets": _rounded(o),
            "combine_knots": knees[0], "combine_slopes": knees[1]}  # fmt: skip


def _rounded(values: torch.Tensor) -> tuple[float, ...]:
    return tuple(round(float(v), 5) for v in values.detach())


def calibrate(val: Validation, model_config: ModelConfig, fake_prior: float, form: str, knee: float) -> ModelConfig:
    """Head temperatures (each head on its own task) and the combiner, fitted on all conditions
    pooled, so the calibration holds for re-encoded files too."""
    used = val.kinds != "repeat"
    logits = np.concatenate([val.logits[c][used] for c in CONDITIONS])
    kinds = np.tile(val.kinds[used], len(CONDITIONS))
    is_real = kinds == "real"
    temperatures = []
    for h in range(len(HEADS)):
        own = [k for k in set(kinds) if k != "real" and _targets(str(k))[h] == 1.0]
        mask = is_real | np.isin(kinds, own)
        temperatures.append(round(fit_temperature(logits[mask, h], (~is_real[mask]).astype(float)), 5)
                            if own else 1.0)  # fmt: skip
    combiner = fit_combiner(logits, (~is_real).astype(float), fake_prior, form, knee=knee)
    return ModelConfig(**{**asdict(model_config), **combiner, "head_temperatures": tuple(temperatures)})


def alarm_groups(val: Validation) -> dict[str, np.ndarray]:
    """The validation reals whose false alarms are capped apart: stills, and frames of news clips
    (the authentic media a model most often reads as generated)."""
    reals, frames = val.kinds == "real", val.sources == VIDEO_SOURCE
    return {"stills": reals & ~frames, "frames": reals & frames}


def false_alarm_caps(path: str, cache: CropCache, pairs: list, config: TrainConfig, device) -> dict[str, int]:
    """How many validation reals of each group the checkpoint at ``path`` flags as given, at the
    threshold the capped model is saved with (``lower_to_caps``'s)."""
    reference = load_model(path, device=device)
    val = run_validation(reference.module, cache, pairs, config, reference.config, device, conditions=("as given",))
    scores = fake_scores(val.logits["as given"], reference.config)
    return {group: int((scores[mask] >= DEFAULT_THRESHOLD).sum()) for group, mask in alarm_groups(val).items()}


def lower_to_caps(val: Validation, model_config: ModelConfig, caps: dict[str, int],
                  threshold: float = DEFAULT_THRESHOLD) -> tuple[ModelConfig, float]:  # fmt: skip
    """``model_config`` with its FAKE logit lowered by the least shift after which no group of
    validation reals (``alarm_groups``) has more than ``caps`` of it at ``threshold`` as given; and
    the shift. A uniform shift keeps every ranking (AUC) as it was."""
    logits = combine_heads(torch.from_numpy(val.logits["as given"]).double(), model_config).numpy()
    cut, shift = math.log(threshold / (1 - threshold)), 0.0
    for group, mask in alarm_groups(val).items():
        highest = np.sort(logits[mask])[::-1]
        if caps[group] < len(highest):
            shift = max(shift, float(highest[caps[group]] - cut) + 1e-5)
    return ModelConfig(**{**asdict(model_config), "combine_bias": round(model_config.combine_bias - shift, 5)}), shift


def fake_scores(logits: np.ndarray, model_config: ModelConfig) -> np.ndarray:
    """Calibrated FAKE probabilities of head logits [N, heads], as the engine computes them."""
    return torch.sigmoid(combine_heads(torch.from_numpy(logits).double(), model_config)).numpy()


def summarise(val: Validation, model_config: ModelConfig) -> dict:
    """Per condition and kind: AUC of the calibrated FAKE score (real vs that kind), the false-alarm
    rate at the threshold and the reals' mean score, overall and per real source (where a source
    of authentic media starts to look fake: v2.7.0 read a held-out news clip's frames as generated
    while every AUC held); plus ECE per kind as given."""
    report: dict = {}
    for condition in CONDITIONS:
        scores = fake_scores(val.logits[condition], model_config)
        reals = val.kinds == "real"
        row = {"false_alarms": round(float((scores[reals] >= DEFAULT_THRESHOLD).mean()), 4),
               "real_mean": round(float(scores[reals].mean()), 4)}  # fmt: skip
        for source in sorted(set(val.sources[reals])):
            row[f"real_mean:{source}"] = round(float(scores[reals & (val.sources == source)].mean()), 4)
        for kind in sorted(set(val.kinds) - {"real", "repeat"}):
            mask = reals | (val.kinds == kind)
            row[f"auc:{kind}"] = round(roc_auc((val.kinds[mask] != "real").astype(int), scores[mask]), 4)
            if condition == "as given":
                row[f"ece:{kind}"] = round(expected_calibration_error((val.kinds[mask] != "real").astype(int),
                                                                      scores[mask]), 4)  # fmt: skip
        report[condition] = row
    aucs = [v for c in CONDITIONS[1:] for k, v in report[c].items() if k.startswith("auc:")]
    climb = max(report[c]["real_mean"] for c in CONDITIONS) - report["as given"]["real_mean"]
    # Selection: ranking under re-encoding (matched for both classes), minus any rise of the
    # reals' score with compression (what made v1 flag compressed authentic media).
    report["selection"] = round(float(np.mean(aucs)) - max(0.0, climb - 0.05), 4)
    return report


def train(config: TrainConfig) -> dict:
    torch.manual_seed(config.seed)
    device = select_device(config.device)
    if device.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    out = Path(config.out)
    state_path = out.with_name(out.stem + ".state.pt")
    build_cache(config.data, config.cache, val_fraction=config.val_fraction, seed=config.seed, videos=config.videos)
    if config.taef2:
        add_reconstructions(config.cache, config.taef2, config.reconstructions_per_source, config.seed)
    cache = CropCache.open(config.cache)
    train_kinds, val_kinds = kinds_available(cache, config, False), kinds_available(cache, config, True)
    if not train_kinds.get("self_blend"):
        raise SystemExit("No real faces to train on.")
    donors = np.array(train_kinds["self_blend"])
    val_pairs = validation_pairs(cache, val_kinds, config)
    caps = false_alarm_caps(config.false_alarms_of, cache, val_pairs, config, device) if config.false_alarms_of else {}

    def calibrated_for(val: Validation) -> ModelConfig:
        calibrated = calibrate(val, model_config, config.fake_prior, config.combine, config.combine_knee)
        if not caps:
            return calibrated
        lowered, shift = lower_to_caps(val, calibrated, caps)
        log.info("false alarms capped at %s's %s: FAKE logit lowered by %.4f", config.false_alarms_of, caps, shift)
        return lowered

    log.info("training kinds %s; validation kinds %s; left out %s", {k: len(v) for k, v in train_kinds.items()},
             {k: len(v) for k, v in val_kinds.items()}, config.leave_out)  # fmt: skip

    model_config = ModelConfig(arch=config.arch, input_size=config.input_size, face_margin=config.face_margin,
                               detail_size=config.detail_size, flip_average=config.flip_average, heads=HEADS,
                               combine_weights=(1.0, 1.0), head_temperatures=(1.0, 1.0))  # fmt: skip
    history, lineage = [], []
    inits = [torch.load(path, map_location="cpu", weights_only=True) for path in config.init]
    # Every run that shaped the weights, oldest first, each once (a soup's ingredients share most).
    for init in inits:
        for run in [*init.get("lineage", []), init.get("train_config")]:
            if run is not None and run not in lineage:
                lineage.append(run)
    if config.ensemble:
        model, model_config = ensemble_of(config.init, model_config)
    elif config.init:
        loaded = load_model(config.init[0])
        model = loaded.module
        if loaded.config.heads != HEADS:
            raise SystemExit(f"--init needs a {HEADS} model; {config.init[0]} has heads {loaded.config.heads}.")
        if len(inits) > 1:
            model.load_state_dict(average_weights(inits, config.init))
        for p in model.parameters():
            p.requires_grad_(True)
        history = list(inits[0].get("metrics", {}).get("history", []))
    else:
        model = create_model(config.arch, pretrained=True, num_outputs=len(HEADS))
    model = model.to(device).to(memory_format=torch.channels_last)
    change_head = ChangeMapHead(model).to(device) if config.mask_loss > 0 and not config.ensemble else None
    trained = list(model.parameters()) + (list(change_head.parameters()) if change_head else [])
    optimizer = torch.optim.AdamW(trained, lr=config.lr, weight_decay=config.weight_decay)
    pairs_per_batch = max(1, config.batch_size // 2)
    epochs = math.ceil(config.total_samples / config.epoch_size)
    steps_per_epoch = math.ceil(config.epoch_size / (2 * pairs_per_batch))
    total_steps = max(1, steps_per_epoch * epochs)
    warmup = min(300, total_steps // 10 + 1)

    def warmup_cosine(s: int) -> float:
        return min(1.0, (s + 1) / warmup) * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine)
    start_epoch, best = 0, -1.0
    if config.continue_from and not state_path.exists():
        start_epoch, history, best, lineage = continue_run(config, model, schedule, steps_per_epoch)
    if state_path.exists():
        state = torch.load(state_path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        if change_head is not None:
            change_head.load_state_dict(state["change_head"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        start_epoch, history, best = state["epoch"], json.loads(state["history"]), float(state["best"])
        log.info("resumed from %s at epoch %d (%d samples seen)", state_path, start_epoch,
                 start_epoch * steps_per_epoch * 2 * pairs_per_batch)  # fmt: skip

    use_bf16 = config.bf16 and device.type == "cpu" and torch.backends.mkldnn.is_available()
    loss_fn = nn.BCEWithLogitsLoss(reduction="none")
    step = start_epoch * steps_per_epoch
    final = dict(history[-1]) if history else {}
    for epoch in range(start_epoch, epochs):
        # Reopened every chunk: reconstructions that a background cache build finished meanwhile join in.
        cache = CropCache.open(config.cache)
        train_kinds = kinds_available(cache, config, False)
        log.info("chunk %d kinds %s", epoch + 1, {k: len(v) for k, v in train_kinds.items()})
        rng = np.random.default_rng((config.seed, epoch))
        dataset = PairSet(cache, draw_pairs(cache, train_kinds, steps_per_epoch * pairs_per_batch, rng, config.mixture),
                          donors, config, train=True)  # fmt: skip
        dataset.epoch = epoch
        loader = DataLoader(dataset, batch_size=pairs_per_batch, shuffle=False, num_workers=config.workers,
                            persistent_workers=False, prefetch_factor=4 if config.workers else None)  # fmt: skip
        model.train()
        started, running = time.time(), []
        bar = tqdm(loader, desc=f"chunk {epoch + 1}/{epochs}", unit="batch", file=sys.stderr, mininterval=30)
        for pixels, targets, pair_weights, changed in bar:
            images, labels, weights, changed = _flatten(pixels, targets, pair_weights, changed)
            labels, weights = labels.to(device), weights.to(device)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
                logits = model(_normalise(images, model_config, device))
            known = (labels != IGNORE) * weights[:, None]
            losses = loss_fn(logits.float(), labels.clamp(min=0)) * known
            loss = losses.sum() / known.sum().clamp(min=1e-6)
            if change_head is not None:
                loss = loss + config.mask_loss * change_head.loss(changed.to(device), weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            running.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(running[-50:]):.4f}", lr=f"{schedule.get_last_lr()[0]:.2e}")
            if config.max_steps and step >= config.max_steps:
                break
        seconds = time.time() - started
        val = run_validation(model, cache, val_pairs, config, model_config, device)
        calibrated = calibrated_for(val)
        report = summarise(val, calibrated)
        samples = (epoch + 1) * steps_per_epoch * 2 * pairs_per_batch
        final = {"chunk": epoch + 1, "samples": samples, "loss": round(float(np.mean(running)), 5),
                 "train_seconds": round(seconds, 1), "samples_per_s": round(len(running) * 2 * pairs_per_batch / seconds, 2),
                 **report}  # fmt: skip
        history.append(final)
        log.info("chunk %d: %s", epoch + 1, json.dumps(final))
        if report["selection"] > best:
            best = report["selection"]
            _save(out, model, calibrated, report, history, cache, config, lineage, train_kinds)
        # The selection score is noisy (100 pairs a kind): the latest chunk is kept too, so that a run
        # whose score peaked early can still be judged at its end, by the full evaluation.
        _save(out.with_name(out.stem + ".last.pth"), model, calibrated, report, history, cache, config, lineage,
              train_kinds)  # fmt: skip
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                    "epoch": epoch + 1, "history": json.dumps(history), "best": best,
                    "change_head": change_head.state_dict() if change_head else {}}, state_path)  # fmt: skip
        if config.max_steps and step >= config.max_steps:
            break
    if epochs == 0 or start_epoch >= epochs:  # recalibration only (or a finished run asked again)
        val = run_validation(model, cache, val_pairs, config, model_config, device)
        calibrated = calibrated_for(val)
        final = summarise(val, calibrated)
        _save(out, model, calibrated, final, history, cache, config, lineage, train_kinds)
    return final


# Settings that say where and how a run is carried out, not what it trains: a continued run may change them.
NOT_THE_RUN = {"data", "out", "cache", "videos", "taef2", "reconstructions_per_source", "workers", "device", "max_steps",
               "version", "continue_from", "false_alarms_of"}  # fmt: skip


def continue_run(config: TrainConfig, model: nn.Module, schedule: torch.optim.lr_scheduler.LRScheduler,
                 steps_per_epoch: int) -> tuple[int, list, float, list]:  # fmt: skip
    """Load ``config.continue_from``'s weights into ``model`` and step ``schedule`` to where its run
    stopped; return (chunks done, history, best selection, lineage). Ends the run with a message when
    the checkpoint was trained with other settings (what its train_config does not name is not compared)."""
    checkpoint = torch.load(config.continue_from, map_location="cpu", weights_only=True)
    theirs = checkpoint.get("train_config") or {}
    ours = asdict(config)
    differ = [n for n in ours if n not in NOT_THE_RUN and n in theirs and theirs[n] != ours[n]]
    if not theirs or differ:
        raise SystemExit(f"--continue-from: {config.continue_from} was trained with other settings: "
                         + (", ".join(f"{n}={theirs[n]!r} (here {ours[n]!r})" for n in differ) or "none recorded"))  # fmt: skip
    model.load_state_dict(checkpoint["state_dict"])
    history = list(checkpoint["metrics"]["history"])
    done = int(history[-1]["chunk"])
    with warnings.catch_warnings():  # stepping the schedule without optimizer steps is the point here
        warnings.simplefilter("ignore")
        for _ in range(done * steps_per_epoch):
            schedule.step()
    best = max(float(h["selection"]) for h in history[-done:])
    log.info("continued %s at chunk %d (lr %.2e); optimizer moments start afresh", config.continue_from, done + 1,
             schedule.get_last_lr()[0])  # fmt: skip
    return done, history, best, list(checkpoint.get("lineage", []))


# What an ensemble's members must agree on: they score the same crops, and their head logits are averaged.
# (Mirror averaging is the ensemble's own choice: it scores each pass with every member.)
SHARED_BY_MEMBERS = ("input_size", "mean", "std", "face_margin", "detail_size", "heads")


def ensemble_of(paths: list[str], model_config: ModelConfig) -> tuple[Ensemble, ModelConfig]:
    """The checkpoints at ``paths`` as one ensemble, and its (uncalibrated) config; members that do
    not prepare crops as ``model_config`` says, or have other heads, end the run with a message."""
    if len(paths) < 2:
        raise SystemExit("--ensemble needs at least two --init checkpoints.")
    members = [load_model(path) for path in paths]
    for path, member in zip(paths, members):
        if isinstance(member.module, Ensemble):
            raise SystemExit(f"--ensemble: {path} is an ensemble already; name its members instead.")
        differ = [name for name in SHARED_BY_MEMBERS if getattr(member.config, name) != getattr(model_config, name)]
        if differ:
            raise SystemExit(f"--ensemble: {path} differs from this run's settings in {', '.join(differ)} "
                             f"({', '.join(f'{n}={getattr(member.config, n)}' for n in differ)}).")  # fmt: skip
    arch = ensemble_arch([m.config.arch for m in members])
    return Ensemble([m.module for m in members]), ModelConfig(**{**asdict(model_config), "arch": arch})


def _save(out: Path, model: nn.Module, model_config: ModelConfig, report: dict, history: list, cache: CropCache,
          config: TrainConfig, lineage: list, train_kinds: dict) -> None:  # fmt: skip
    metrics = {**report, "history": history,
               "protocol": "identity-disjoint validation split (LFW by person, near-duplicates grouped, video clips "
                           "whole); pairs of a real face and a fake, each condition applied to both"}  # fmt: skip
    trained_on = sorted({r.source for r in cache.records if r.label == 0})
    # A kind the mixture gives no share was never drawn, so it is not one the model trained on.
    drawn = [k for k in train_kinds if kind_share(config.mixture, k) > 0]
    trained_on += [k for k in drawn if not k.startswith("fake:")] + [k[5:] for k in drawn if k.startswith("fake:")]
    save_checkpoint(out, model, model_config, threshold=DEFAULT_THRESHOLD, temperature=1.0, metrics=metrics,
                    trained_on=trained_on, version=config.version,
                    extra={"name": f"{model_config.arch}-deepfake", "train_config": asdict(config), "lineage": lineage})  # fmt: skip
    log.info("wrote %s (selection %.4f, %s combiner %s / %s + %s, head temperatures %s)", out, report["selection"],
             model_config.combine, model_config.combine_weights, model_config.combine_offsets, model_config.combine_bias,
             model_config.head_temperatures)  # fmt: skip


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    parser = argparse.ArgumentParser(prog="python -m deepfake.train", description=__doc__.split("\n")[0])
    defaults = TrainConfig(data="", out="")
    parser.add_argument("--data", required=True, help="folder with real/<source>/** and fake/<source>/**")
    parser.add_argument("--out", default="models/image_model.pth")
    parser.add_argument("--cache", default=defaults.cache, help="face-crop cache folder (a build artifact)")
    parser.add_argument("--videos", help="folder of authentic clips; their frames join the real faces")
    parser.add_argument("--taef2", help="TAEF2 weights folder (decoder-trace fakes)")
    for name in ("total_samples", "epoch_size", "batch_size", "seed", "input_size", "val_per_kind",
                 "workers", "max_steps", "detail_size", "reconstructions_per_source"):  # fmt: skip
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(defaults, name))
    for name in ("lr", "weight_decay", "face_margin", "val_fraction", "fake_prior", "mask_loss", "combine_knee"):
        parser.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(defaults, name))
    parser.add_argument("--arch", default=defaults.arch)
    parser.add_argument("--false-alarms-of", metavar="CHECKPOINT",
                        help="cap the model's validation false alarms (stills, news-clip frames) at this model's")
    parser.add_argument("--combine", choices=COMBINE_FORMS, default=defaults.combine,
                        help="how the heads' logits make the FAKE score (fitted on validation)")
    parser.add_argument("--leave-out", nargs="*", default=[],
                        help="fake kinds to hold out of training: fake:<folder>, taef2, decoder_blend, ...")  # fmt: skip
    parser.add_argument("--mixture", nargs="*", default=[], metavar="KIND=SHARE",
                        help=f"shares of pairs per kind, replacing the named ones of {MIXTURE}")
    parser.add_argument("--degradation", nargs="*", default=[], metavar="FIELD=PROBABILITY",
                        help="how often each degradation step is drawn (DegradationConfig's probabilities)")
    parser.add_argument("--trace-degradation", nargs="*", default=[], metavar="FIELD=PROBABILITY",
                        help="the same for the decoder-trace kinds' pairs (taef2, decoder_blend), over --degradation")
    parser.add_argument("--init", nargs="+", default=[], metavar="CHECKPOINT",
                        help="start from this checkpoint; from several (of one lineage), from their average")
    parser.add_argument("--continue-from", metavar="CHECKPOINT",
                        help="go on with the run that wrote CHECKPOINT after its last chunk when its state file is lost")
    parser.add_argument("--ensemble", action="store_true",
                        help="keep the --init checkpoints whole, as an ensemble, and calibrate it (--total-samples 0)")
    parser.add_argument("--device")
    parser.add_argument("--version", default=defaults.version)
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=defaults.bf16,
                        help="bfloat16 autocast on the CPU (measure first: it can be slower than float32)")
    parser.add_argument("--no-flip-average", dest="flip_average", action="store_false",
                        help="score crops as given, without averaging with their mirror image")  # fmt: skip
    args = vars(parser.parse_args(argv))
    probabilities = [f.name for f in fields(DegradationConfig) if f.type == "float"]
    args["mixture"] = {**MIXTURE, **_assignments(parser, "--mixture", args["mixture"], list(MIXTURE))}
    for option in ("degradation", "trace_degradation"):
        args[option] = _assignments(parser, "--" + option.replace("_", "-"), args[option], probabilities)
    try:
        DegradationConfig(**args["degradation"])
        DegradationConfig(**{**args["degradation"], **args["trace_degradation"]})
    except ValueError as exc:
        parser.error(f"--degradation / --trace-degradation: {exc}")
    if args["continue_from"] and (args["init"] or args["ensemble"]):
        parser.error("--continue-from goes on with one run's checkpoint: it takes no --init or --ensemble")
    if args["ensemble"] and args["total_samples"]:
        parser.error("--ensemble calibrates an ensemble of trained models and does not train it: add --total-samples 0")
    return TrainConfig(**args)


def _assignments(parser: argparse.ArgumentParser, option: str, values: list[str], known: list[str]) -> dict[str, float]:
    """``NAME=NUMBER`` arguments as a dict; unknown names and bad numbers end the run with a message."""
    out = {}
    for value in values:
        name, _, number = value.partition("=")
        if name not in known:
            parser.error(f"{option}: unknown name {name!r}; known: {', '.join(known)}")
        try:
            out[name] = float(number)
        except ValueError:
            parser.error(f"{option}: {value!r} is not NAME=NUMBER")
        if out[name] < 0:
            parser.error(f"{option}: {name} must not be negative")
    return out


def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv)
    log_path = Path(config.out).with_suffix(".log")  # next to the checkpoint it describes
    log_path.parent.mkdir(parents=True, exist_ok=True)
    handlers = [logging.StreamHandler(), logging.FileHandler(log_path)]
    logger = logging.getLogger("deepfake")
    logger.setLevel(logging.INFO)
    for handler in handlers:
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        logger.addHandler(handler)
    try:
        train(config)
    finally:  # callers in the same process (tests, notebooks) must not inherit our handlers
        for handler in handlers:
            logger.removeHandler(handler)
            handler.close()


if __name__ == "__main__":
    main()
