"""Universal, safe model loading.

Accepted: our checkpoint (a dict with ``state_dict``, ``arch``, ``config`` ...), a bare
``state_dict`` with an ``arch=`` name, and a TorchScript archive. Everything is read with
``torch.load(weights_only=True)``; a whole pickled module is loaded only with an explicit
``trust_pickle=True``, because unpickling runs arbitrary code.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from deepfake.errors import (
    CorruptModelError,
    ModelMismatchError,
    ModelNotFoundError,
    UntrustedPickleError,
)
from deepfake.model import ModelConfig, create_model, default_config

DEFAULT_THRESHOLD = 0.6
DEFAULT_MODEL_PATH = Path(__file__).resolve().parent.parent / "models" / "image_model.pth"
MODEL_ENV = "DEEPFAKE_MODEL"  # the dashboard's and the CLI's checkpoint when set
HOW_TO_TRAIN = (
    "Train one with `python -m deepfake.train --data ../shared/data/faces --out models/image_model.pth` "
    "(see README), or pass the path of an existing checkpoint."
)


@dataclass
class LoadedModel:
    """A model ready for inference, with everything its checkpoint said about itself."""

    module: nn.Module
    config: ModelConfig
    name: str
    version: str
    threshold: float = DEFAULT_THRESHOLD
    temperature: float = 1.0
    metrics: dict = field(default_factory=dict)
    trained_on: list = field(default_factory=list)
    source_format: str = "checkpoint"  # checkpoint | state_dict | torchscript | pickle


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    config: ModelConfig,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    temperature: float = 1.0,
    metrics: dict | None = None,
    trained_on: list | None = None,
    version: str = "0.0.0",
    extra: dict | None = None,
) -> None:
    """Write our checkpoint format: plain tensors and builtins only, so it loads with weights_only."""
    plain = json.loads(json.dumps({"metrics": metrics or {}, "trained_on": trained_on or [], "extra": extra or {}},
                                  default=lambda v: v.item() if hasattr(v, "item") else str(v)))  # fmt: skip
    payload = {
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "arch": config.arch,
        "config": config.to_dict(),
        "threshold": float(threshold),
        "temperature": float(temperature),
        "metrics": plain["metrics"],
        "trained_on": plain["trained_on"],
        "version": version,
        **plain["extra"],
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # an interrupted save never leaves a half-written checkpoint behind


def load_model(
    path: str | Path | None = None,
    *,
    arch: str | None = None,
    device: str | torch.device = "cpu",
    trust_pickle: bool = False,
) -> LoadedModel:
    path = Path(path) if path is not None else DEFAULT_MODEL_PATH
    if not path.is_file():
        raise ModelNotFoundError(f"Model file not found: {path}. {HOW_TO_TRAIN}")
    if path.stat().st_size == 0:
        raise CorruptModelError(f"Model file {path.name} is empty.")
    if _is_torchscript(path):
        loaded = _load_torchscript(path, arch, device)
    else:
        loaded = _load_pickled(path, arch, device, trust_pickle)
    loaded.module.to(device).eval()
    for param in loaded.module.parameters():
        param.requires_grad_(False)  # inference only; Grad-CAM differentiates w.r.t. activations
    return loaded


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())


def _load_torchscript(path: Path, arch: str | None, device) -> LoadedModel:
    try:
        module = torch.jit.load(str(path), map_location=device)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a damaged archive
        raise CorruptModelError(f"{path.name} is not a readable TorchScript file ({exc}).") from exc
    config = default_config(arch or "torchscript")
    return LoadedModel(module, config, name=path.stem, version="unknown", source_format="torchscript")


def _load_pickled(path: Path, arch: str | None, device, trust_pickle: bool) -> LoadedModel:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # The weights-only unpickler names a refused class "GLOBAL ..."; any other complaint
        # (an unknown opcode) means the bytes are not a pickle at all, trusted or not.
        if "global" not in str(exc).lower():
            raise CorruptModelError(f"{path.name} is not a readable PyTorch model file; it may be damaged.") from exc
        if not trust_pickle:
            raise UntrustedPickleError(
                f"{path.name} contains a pickled Python object, and loading it would run code from the file. "
                "Only if you trust its source, load it with trust_pickle=True (CLI: --trust-pickle)."
            ) from exc
        try:
            payload = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as inner:  # noqa: BLE001
            raise CorruptModelError(f"{path.name} could not be unpickled ({inner}).") from inner
    except Exception as exc:  # noqa: BLE001 - the unpickler fails on garbage with any kind of error
        # (KeyError, IndexError, struct.error ...); none of them should escape untyped.
        raise CorruptModelError(
            f"{path.name} is not a readable PyTorch model file; it may be truncated ({exc})."
        ) from exc

    if isinstance(payload, nn.Module):
        config = default_config(arch or type(payload).__name__)
        return LoadedModel(payload, config, name=path.stem, version="unknown", source_format="pickle")
    if isinstance(payload, dict) and "state_dict" in payload:
        return _from_checkpoint(path, payload, arch)
    if isinstance(payload, dict) and payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        if arch is None:
            raise ModelMismatchError(f"{path.name} holds bare weights; say which architecture they are for (arch=...).")
        config = default_config(arch)
        module = _build(arch, payload, path)
        return LoadedModel(module, config, name=f"{arch}:{path.stem}", version="unknown", source_format="state_dict")
    found = type(payload).__name__
    raise CorruptModelError(f"{path.name} is a PyTorch file but not a model checkpoint (found {found}).")


def _from_checkpoint(path: Path, payload: dict, arch_override: str | None) -> LoadedModel:
    config = ModelConfig.from_dict({"arch": payload.get("arch"), **payload.get("config", {})})
    arch = arch_override or payload.get("arch") or config.arch
    if not arch:
        raise CorruptModelError(f"{path.name} does not say which architecture it holds.")
    config.arch = arch
    module = _build(arch, payload["state_dict"], path, len(config.heads))
    return LoadedModel(
        module,
        config,
        name=str(payload.get("name", f"{arch}-deepfake")),
        version=str(payload.get("version", "unknown")),
        threshold=float(payload.get("threshold", DEFAULT_THRESHOLD)),
        temperature=float(payload.get("temperature", 1.0)),
        metrics=dict(payload.get("metrics", {})),
        trained_on=list(payload.get("trained_on", [])),
    )


def _build(arch: str, state_dict: dict, path: Path, heads: int = 1) -> nn.Module:
    module = create_model(arch, num_outputs=heads)
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [k for k in expected if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        details = []
        if wrong:
            details.append("shapes differ for " + ", ".join(
                f"{k} {tuple(state_dict[k].shape)} vs {tuple(expected[k].shape)}" for k in wrong[:3]))
        if missing:
            details.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        raise ModelMismatchError(f"{path.name} does not fit architecture '{arch}': " + "; ".join(details) + ".")
    module.load_state_dict(state_dict)
    return module
