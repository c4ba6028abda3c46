"""TAEF2: a tiny autoencoder that imitates the FLUX.2 VAE (Ollin Boer Bohan, MIT licence).

A face passed through a latent-diffusion VAE comes back with the decoder's traces (its
upsampling, its texture prior) but otherwise unchanged. Pasting such a reconstruction into the
real crop imitates what face-swap and inpainting tools paste, so the training lab caches one
reconstruction per crop (``pseudofakes.decoder_blend``). The full FLUX.2 VAE is far too slow for
that on a CPU; TAEF2 round-trips a 256x256 FFHQ face at 28-35 dB PSNR (31 mean) in about 0.6 s
on one core.

The modules are numbered ``nn.Sequential`` layers so that the published state_dicts (keys such
as ``1.conv.0.weight`` or ``3.pool.1.weight``) load strictly, without any key renaming.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deepfake.errors import CorruptModelError, ModelMismatchError, ModelNotFoundError

CHANNELS = 64
LATENT_CHANNELS = 32
SCALE = 8  # three stride-2 stages: the latent is 8x smaller than the image
ENCODER_FILE = "taef2_encoder.pth"
DECODER_FILE = "taef2_decoder.pth"


def _conv(n_in: int, n_out: int, bias: bool = True, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, stride=stride, padding=1, bias=bias)


class Block(nn.Module):
    """Three 3x3 convolutions plus the input, then ReLU.

    In TAEF2 every block maps 64 to 64 channels, so the residual is the input itself (the
    family's 1x1 projection for differing widths never occurs). Blocks at the latent end first add
    a context branch whose GroupNorm pools statistics over the whole feature map.
    """

    def __init__(self, channels: int = CHANNELS, context: bool = False) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            _conv(channels, channels), nn.ReLU(), _conv(channels, channels), nn.ReLU(), _conv(channels, channels)
        )
        self.pool = (
            nn.Sequential(
                nn.Conv2d(channels, channels * 4, 1, bias=False),
                nn.GroupNorm(4, channels * 4),
                nn.ReLU(),
                nn.Conv2d(channels * 4, channels, 1, bias=False),
            )
            if context
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return F.relu(self.conv(x) + x)


class SoftClamp(nn.Module):
    """``tanh(z / 3) * 3``: bounds the latent smoothly, as the decoder was trained to expect."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z / 3) * 3


def encoder() -> nn.Sequential:
    """RGB in [0, 1] to a 32-channel latent, 8x smaller (no bias on the stride-2 convolutions)."""
    layers: list[nn.Module] = [_conv(3, CHANNELS), Block()]
    for stage in range(3):
        context = stage == 2  # the stage nearest the latent
        layers += [_conv(CHANNELS, CHANNELS, bias=False, stride=2)] + [Block(context=context) for _ in range(3)]
    layers.append(_conv(CHANNELS, LATENT_CHANNELS))
    return nn.Sequential(*layers)


def decoder() -> nn.Sequential:
    """A latent back to RGB, nominally in [0, 1] (the caller clamps)."""
    layers: list[nn.Module] = [SoftClamp(), _conv(LATENT_CHANNELS, CHANNELS), nn.ReLU()]
    layers += [Block(context=True) for _ in range(3)]
    for blocks in (3, 3, 1):
        layers += [nn.Upsample(scale_factor=2), _conv(CHANNELS, CHANNELS, bias=False)]
        layers += [Block() for _ in range(blocks)]
    layers.append(_conv(CHANNELS, 3))
    return nn.Sequential(*layers)


class TAEF2(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = encoder()
        self.decoder = decoder()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images [N, 3, H, W] in [0, 1] with H and W multiples of 8, reconstructed in [0, 1]."""
        return self.decoder(self.encoder(images)).clamp(0, 1)

    @torch.inference_mode()
    def roundtrip(self, images: np.ndarray, batch_size: int = 16) -> np.ndarray:
        """uint8 RGB ``[H, W, 3]`` or ``[N, H, W, 3]`` as it comes back from TAEF2, same shape.

        Any size works: edges are replicated up to a multiple of 8 and cropped off again
        (replication, unlike reflection, works for images smaller than the padding).
        """
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or images.shape[-1] != 3:
            raise ValueError(f"expected uint8 RGB [H, W, 3] or [N, H, W, 3], got {images.dtype} {images.shape}")
        single = images.ndim == 3
        batch = images[None] if single else images
        h, w = batch.shape[1:3]
        pad_h, pad_w = -h % SCALE, -w % SCALE
        device = next(self.parameters()).device
        out = np.empty_like(batch)
        for start in range(0, len(batch), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(batch[start : start + batch_size])).to(device)
            x = x.permute(0, 3, 1, 2).float().div_(255)
            if pad_h or pad_w:
                x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
            y = self(x)[:, :, :h, :w]
            out[start : start + batch_size] = y.mul_(255).round_().byte().permute(0, 2, 3, 1).cpu().numpy()
        return out[0] if single else out


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ModelNotFoundError(f"TAEF2 weights not found: {path}.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the unpickler fails on garbage with any kind of error (KeyError, EOFError...)
        raise CorruptModelError(f"{path.name} is not a readable PyTorch weights file ({exc}).") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CorruptModelError(f"{path.name} is not a plain state_dict of tensors.")
    return state


def _fit(module: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    expected = module.state_dict()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        details = [f"{len(missing)} missing keys (e.g. {missing[:1]})"] if missing else []
        details += [f"{len(unexpected)} unexpected keys (e.g. {unexpected[:1]})"] if unexpected else []
        details += [f"shape of {k}: {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in wrong[:3]]
        raise ModelMismatchError(f"{path.name} does not fit the TAEF2 layout: " + "; ".join(details) + ".")
    module.load_state_dict(state)  # the fp16 weights are cast to the module's float32


def load_taef2(folder: str | Path, device: str | torch.device = "cpu") -> TAEF2:
    """TAEF2 from ``taef2_encoder.pth`` and ``taef2_decoder.pth`` in ``folder``, in eval mode.

    Raises ModelNotFoundError, CorruptModelError or ModelMismatchError (all ModelError).
    """
    folder = Path(folder)
    model = TAEF2()
    for part, name in ((model.encoder, ENCODER_FILE), (model.decoder, DECODER_FILE)):
        path = folder / name
        _fit(part, _load_state_dict(path), path)
    return model.to(device).eval()
