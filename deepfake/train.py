"""Train a detector: ``python -m deepfake.train --data ../shared/data/faces --out models/image_model.pth``.

Real faces, pseudo-fakes made from them on the fly, and (unless left out) the fake folders.
Faces are detected and cropped once into a cache; epochs read crops from it. Every epoch writes
a resumable state; the end writes a calibrated checkpoint (temperature scaling on validation).
``--init CHECKPOINT --epochs 0`` only recalibrates a trained model (after changing how it scores).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from deepfake.augment import degrade, frame_crop
from deepfake.data import CropCache, build_cache
from deepfake.engine import select_device
from deepfake.faces import limit_detail
from deepfake.loading import DEFAULT_THRESHOLD, load_model, save_checkpoint
from deepfake.metrics import expected_calibration_error, fit_temperature, roc_auc
from deepfake.model import ModelConfig, create_model, fake_logits
from deepfake.pseudofakes import make_pseudo_fake

log = logging.getLogger("deepfake.train")


@dataclass
class TrainConfig:
    data: str
    out: str
    cache: str = ".cache/faces"
    arch: str = "efficientnet_lite0"
    input_size: int = 224
    face_margin: float = 1.3
    detail_size: int | None = 128
    epochs: int = 4
    epoch_size: int = 8000  # samples per epoch (drawn afresh each epoch), so checkpoints come often
    batch_size: int = 32
    lr: float = 4e-4
    weight_decay: float = 1e-4
    seed: int = 0
    leave_out: list[str] = field(default_factory=list)  # fake sources never trained on (held out)
    no_fake_sources: bool = False  # real + pseudo-fakes only: the unseen-kind protocol
    init: str | None = None  # start from this checkpoint instead of ImageNet
    val_fraction: float = 0.1
    val_per_kind: int = 600  # validation samples per kind at each epoch's end
    workers: int = 1
    device: str | None = None
    max_steps: int | None = None  # stop early (tests)
    version: str = "1.0.0"
    flip_average: bool = True  # score = mean logit of the crop and its mirror (ModelConfig.flip_average)


class FaceTrainingSet(Dataset):
    """Items are (cache index, kind) with kind in real / pseudo / fake; labels follow the kind."""

    def __init__(self, cache: CropCache, items: list[tuple[int, str]], donors: np.ndarray, config: TrainConfig,
                 train: bool) -> None:  # fmt: skip
        self.cache, self.items, self.donors, self.config, self.train = cache, items, donors, config, train
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        index, kind = self.items[i]
        # Seeded per item and epoch: the same run gives the same samples with any worker count,
        # and validation pseudo-fakes are identical every epoch.
        rng = np.random.default_rng((self.config.seed, self.epoch if self.train else 10_000, index, kind == "pseudo"))
        crop = np.asarray(self.cache.crops[index])
        if kind == "pseudo":
            donor = int(rng.choice(self.donors))
            donor_face = (np.asarray(self.cache.crops[donor]), self.cache.landmarks[donor])
            crop = make_pseudo_fake(crop, self.cache.landmarks[index], rng, donor_face).image
        crop = frame_crop(crop, self.config.face_margin, self.config.input_size, rng if self.train else None)
        if self.train:
            crop = degrade(crop, rng)  # the photo's own history (JPEG, resizing) comes before our crop
        crop = limit_detail(crop, self.config.detail_size)
        label = 0.0 if kind == "real" else 1.0
        return torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1), torch.tensor(label)


def build_items(cache: CropCache, config: TrainConfig, validation: bool) -> dict[str, list[tuple[int, str]]]:
    """Indices per kind: real, pseudo (made from reals), and one list per fake source."""
    usable = cache.face_found & (cache.is_val == validation)
    kinds: dict[str, list[tuple[int, str]]] = {"real": [], "pseudo": []}
    for i, record in enumerate(cache.records):
        if not usable[i]:
            continue
        if record.label == 0:
            kinds["real"].append((i, "real"))
            kinds["pseudo"].append((i, "pseudo"))
        else:
            kinds.setdefault(f"fake:{record.source}", []).append((i, "fake"))
    return kinds


def trained_kinds(kinds: dict, config: TrainConfig) -> list[str]:
    fakes = [k for k in kinds if k.startswith("fake:") and k[5:] not in config.leave_out]
    return ["real", "pseudo"] + ([] if config.no_fake_sources else fakes)


def _normalise(batch: torch.Tensor, config: ModelConfig, device) -> torch.Tensor:
    mean = torch.tensor(config.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(config.std, device=device).view(1, 3, 1, 1)
    return ((batch.to(device).float() / 255 - mean) / std).contiguous(memory_format=torch.channels_last)


@torch.inference_mode()
def predict_logits(model: nn.Module, loader: DataLoader, config: ModelConfig, device) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    logits, labels = [], []
    for images, targets in loader:
        logits.append(fake_logits(model, _normalise(images, config, device), config).cpu().numpy())
        labels.append(targets.numpy())
    return np.concatenate(logits), np.concatenate(labels)


def validate(model, cache, val_kinds, config, model_config, device, rng) -> tuple[dict, np.ndarray, ...]:
    """AUC of real against each kind of fake (trained and held-out) on identity-disjoint faces."""
    chosen = {k: [v[i] for i in rng.permutation(len(v))[: config.val_per_kind]] for k, v in val_kinds.items() if v}
    items = [item for k in chosen for item in chosen[k]]
    kind_of = np.array([k for k in chosen for _ in chosen[k]])
    loader = DataLoader(FaceTrainingSet(cache, items, np.array([0]), config, train=False),
                        batch_size=64, num_workers=config.workers)  # fmt: skip
    logits, labels = predict_logits(model, loader, model_config, device)
    real = kind_of == "real"
    report = {}
    for kind in chosen:
        if kind != "real":
            mask = real | (kind_of == kind)
            report[f"auc_real_vs_{kind.replace('fake:', '')}"] = roc_auc(labels[mask], logits[mask])
    return report, logits, labels, kind_of


def train(config: TrainConfig) -> dict:
    torch.manual_seed(config.seed)
    device = select_device(config.device)
    if device.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    out = Path(config.out)
    state_path = out.with_name(out.stem + ".state.pt")
    cache = build_cache(config.data, config.cache, val_fraction=config.val_fraction, seed=config.seed,
                        device=str(device))  # fmt: skip
    train_kinds, val_kinds = build_items(cache, config, False), build_items(cache, config, True)
    used = trained_kinds(train_kinds, config)
    if not train_kinds["real"]:
        raise SystemExit("No real faces to train on.")
    items = list(train_kinds["real"])
    fakes = [item for k in used if k.startswith("fake:") for item in train_kinds[k]]
    # Half the samples are real; fakes from folders fill what they can and pseudo-fakes the rest.
    n_pseudo = max(len(items) - len(fakes), len(items) // 3)
    rng = np.random.default_rng(config.seed)
    pseudo = [train_kinds["pseudo"][i] for i in rng.permutation(len(train_kinds["pseudo"]))[:n_pseudo]]
    items += fakes + pseudo
    donors = np.array([i for i, _ in train_kinds["real"]])
    log.info("training on %s: %d real, %d pseudo-fake, %d fake; held out: %s", used, len(train_kinds["real"]),
             len(pseudo), len(fakes), [k for k in val_kinds if k not in used])  # fmt: skip

    model_config = ModelConfig(arch=config.arch, input_size=config.input_size, face_margin=config.face_margin,
                               detail_size=config.detail_size, flip_average=config.flip_average)  # fmt: skip
    start_epoch, history, lineage = 0, [], []
    if config.init:
        model = load_model(config.init).module
        for p in model.parameters():
            p.requires_grad_(True)
        # A continuation keeps its ancestry: earlier epochs and the configs they were trained with.
        init = torch.load(config.init, map_location="cpu", weights_only=True)
        if isinstance(init, dict):
            history = list(init.get("metrics", {}).get("history", []))
            lineage = [*init.get("lineage", []), init["train_config"]] if "train_config" in init else []
    else:
        model = create_model(config.arch, pretrained=True)
    model = model.to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(min(config.epoch_size, len(items)) / config.batch_size)
    total_steps = max(1, steps_per_epoch * config.epochs)  # 1 when only recalibrating (--epochs 0)
    warmup = min(200, total_steps // 10 + 1)

    def warmup_cosine(s: int) -> float:
        return min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine)
    if state_path.exists():
        state = torch.load(state_path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        start_epoch, history = state["epoch"], json.loads(state["history"])
        log.info("resumed from %s at epoch %d", state_path, start_epoch)

    dataset = FaceTrainingSet(cache, items, donors, config, train=True)
    loss_fn = nn.BCEWithLogitsLoss()
    step = start_epoch * steps_per_epoch
    for epoch in range(start_epoch, config.epochs):
        dataset.epoch = epoch
        order = np.random.default_rng((config.seed, epoch)).permutation(len(items))
        order = order[: steps_per_epoch * config.batch_size]
        loader = DataLoader(torch.utils.data.Subset(dataset, order.tolist()), batch_size=config.batch_size,
                            shuffle=False, num_workers=config.workers, drop_last=False)  # fmt: skip
        model.train()
        started, running = time.time(), []
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", file=sys.stderr)
        for images, targets in bar:
            logits = model(_normalise(images, model_config, device))[:, 0]
            loss = loss_fn(logits, targets.to(device).float())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            running.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(running[-50:]):.4f}", lr=f"{schedule.get_last_lr()[0]:.2e}")
            if config.max_steps and step >= config.max_steps:
                break
        val, *_ = validate(model, cache, val_kinds, config, model_config, device, np.random.default_rng(epoch))
        entry = {"epoch": epoch + 1, "loss": float(np.mean(running)), "seconds": round(time.time() - started, 1), **val}
        history.append(entry)
        log.info("epoch %d: %s", epoch + 1, json.dumps(entry))
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                    "epoch": epoch + 1, "history": json.dumps(history)}, state_path)  # fmt: skip
        if config.max_steps and step >= config.max_steps:
            break

    # Calibrate on the kinds the model was trained on; held-out kinds stay unseen.
    config_val = TrainConfig(**{**asdict(config), "val_per_kind": 10**9})
    val, logits, labels, kind_of = validate(model, cache, val_kinds, config_val, model_config, device,
                                            np.random.default_rng(0))  # fmt: skip
    fitted = np.isin(kind_of, used)
    temperature = fit_temperature(logits[fitted], labels[fitted])
    probs = 1 / (1 + np.exp(-logits / temperature))
    metrics = {
        **{k: round(float(v), 5) for k, v in val.items()},
        "ece_trained_kinds": round(expected_calibration_error(labels[fitted], probs[fitted]), 5),
        "validation_counts": {str(k): int((kind_of == k).sum()) for k in np.unique(kind_of)},
        "history": history,
        "protocol": "identity-disjoint validation split (LFW by person, near-duplicates grouped); "
                    "AUC of held-out real faces against each kind of fake",
    }  # fmt: skip
    trained_on = sorted({r.source for r in cache.records if r.label == 0}) + ["pseudo-fakes (self-blend, part swap, resynthesis)"]
    trained_on += [k[5:] for k in used if k.startswith("fake:")]
    save_checkpoint(out, model, model_config, threshold=DEFAULT_THRESHOLD, temperature=temperature, metrics=metrics,
                    trained_on=trained_on, version=config.version,
                    extra={"name": f"{config.arch}-deepfake", "train_config": asdict(config), "lineage": lineage})  # fmt: skip
    headline = {k: v for k, v in metrics.items() if k != "history"}
    log.info("wrote %s (temperature %.3f): %s", out, temperature, json.dumps(headline))
    return metrics


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    parser = argparse.ArgumentParser(prog="python -m deepfake.train", description=__doc__.split("\n")[0])
    defaults = TrainConfig(data="", out="")
    parser.add_argument("--data", required=True, help="folder with real/<source>/** and fake/<source>/**")
    parser.add_argument("--out", default="models/image_model.pth")
    parser.add_argument("--cache", default=defaults.cache, help="face-crop cache folder (a build artifact)")
    for name in ("epochs", "epoch_size", "batch_size", "seed", "input_size", "val_per_kind", "workers", "max_steps",
                 "detail_size"):  # fmt: skip
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(defaults, name))
    for name in ("lr", "weight_decay", "face_margin", "val_fraction"):
        parser.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(defaults, name))
    parser.add_argument("--arch", default=defaults.arch)
    parser.add_argument("--leave-out", nargs="*", default=[], help="fake sources to hold out of training")
    parser.add_argument("--no-fake-sources", action="store_true", help="train on real faces and pseudo-fakes only")
    parser.add_argument("--init", help="start from this checkpoint")
    parser.add_argument("--device")
    parser.add_argument("--version", default=defaults.version)
    parser.add_argument("--no-flip-average", dest="flip_average", action="store_false",
                        help="score crops as given, without averaging with their mirror image")  # fmt: skip
    return TrainConfig(**vars(parser.parse_args(argv)))


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
