"""Grad-CAM family of class-activation maps, shaped like pytorch-grad-cam.

:class:`BaseCAM` owns the hook, the gradient and the scaling; a variant only says how
to weight the target layer's channels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class BaseCAM:
    """Class-activation maps of ``target_layers`` (each output [B, C, h, w]) for one logit.

    With several layers (an ensemble's trunks), each layer's map is scaled on its own and
    the maps are averaged, as pytorch-grad-cam aggregates layers. If a layer module runs
    several times in one forward pass (a shared ReLU), its last output is used.
    """

    def __init__(self, model: nn.Module, target_layers: nn.Module | Sequence[nn.Module]) -> None:
        self.model = model
        self.target_layers = [target_layers] if isinstance(target_layers, nn.Module) else list(target_layers)
        if not self.target_layers:
            raise ValueError("a class-activation map needs at least one target layer")

    @contextmanager
    def _captured_activations(self) -> Iterator[dict[int, torch.Tensor]]:
        captured: dict[int, torch.Tensor] = {}

        def hook(index: int) -> Callable[[nn.Module, object, torch.Tensor], None]:
            return lambda _module, _args, output: captured.__setitem__(index, output)

        handles = [layer.register_forward_hook(hook(i)) for i, layer in enumerate(self.target_layers)]
        try:
            yield captured
        finally:
            for handle in handles:
                handle.remove()

    def __call__(self, inputs: torch.Tensor, output_index: int = 0) -> np.ndarray:
        """Maps for ``logits[:, output_index]``: float32 [B, H, W] in [0, 1].

        ``inputs`` is the normalised float batch [B, 3, H, W]; each map is upsampled to
        H x W and min-max scaled on its own. The model's train/eval mode is left as is.
        """
        return self.compute(inputs, output_index)[0]

    def compute(
        self,
        inputs: torch.Tensor,
        output_index: int = 0,
        target: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> tuple[np.ndarray, torch.Tensor]:
        """The maps and the model's logits from the same forward pass (a caller that needs
        both scores and maps saves a second pass). ``target`` maps the logits [B, K] to the
        score [B] to explain (e.g. a weighted sum of heads); by default ``logits[:, output_index]``."""
        if inputs.ndim != 4 or not inputs.is_floating_point():
            shape = tuple(inputs.shape)
            raise ValueError(f"expected a float tensor [B, 3, H, W], got {shape}")
        height, width = inputs.shape[-2:]
        # Callers run the detector under no_grad / inference_mode; a CAM needs a graph.
        with torch.inference_mode(False), torch.enable_grad():
            x = inputs.detach()
            if x.is_inference():
                x = x.clone()  # inference tensors cannot join an autograd graph
            # Rooting the graph at the input reaches the layer in a fully frozen model.
            x.requires_grad_(True)
            with self._captured_activations() as captured:
                logits = self.model(x)
            if len(captured) < len(self.target_layers):
                raise RuntimeError(
                    "the target layer did not run during the model's forward pass"
                )
            activations = [captured[i] for i in range(len(self.target_layers))]
            if any(not isinstance(a, torch.Tensor) or a.ndim != 4 for a in activations):
                raise ValueError(
                    "the target layer must output a tensor of shape [B, C, h, w]"
                )
            if not all(a.requires_grad for a in activations):
                raise RuntimeError(
                    "the target layer's output is not linked to the input"
                )
            flat = logits.reshape(logits.shape[0], -1)
            score = flat[:, output_index] if target is None else target(flat)
            gradients = torch.autograd.grad(score.sum(), activations)
        maps = []
        for layer_activations, layer_gradients in zip(activations, gradients):
            layer_activations = layer_activations.detach().float()
            weights = self.channel_weights(layer_activations, layer_gradients.float())
            cam = torch.relu(torch.einsum("bc,bchw->bhw", weights, layer_activations))
            cam = F.interpolate(
                cam[:, None], size=(height, width), mode="bilinear", align_corners=False
            )[:, 0]
            maps.append(_minmax_per_sample(cam))
        # One layer: the mean is its map, and scaling an already scaled map changes nothing.
        cams = _minmax_per_sample(torch.stack(maps).mean(0))
        return cams.cpu().numpy().astype(np.float32), logits.detach()

    def channel_weights(
        self, activations: torch.Tensor, gradients: torch.Tensor
    ) -> torch.Tensor:
        """Channel weights [B, C] from activations and gradients, both [B, C, h, w]."""
        raise NotImplementedError


class GradCAM(BaseCAM):
    """Selvaraju et al. 2017: channel weight = spatial mean of the gradient."""

    def channel_weights(
        self, activations: torch.Tensor, gradients: torch.Tensor
    ) -> torch.Tensor:
        return gradients.mean(dim=(2, 3))


class GradCAMPlusPlus(BaseCAM):
    """Chattopadhay et al. 2018: pixel-wise alpha-weighted positive gradients.

    With the score taken as exp(logit), the second and third derivatives reduce to
    grads**2 and grads**3; the exp factor cancels in alpha and in the min-max scaling.
    """

    def channel_weights(
        self, activations: torch.Tensor, gradients: torch.Tensor
    ) -> torch.Tensor:
        grads2 = gradients.pow(2)
        denominator = (
            2 * grads2 + activations.sum(dim=(2, 3), keepdim=True) * grads2 * gradients
        )
        nonzero = denominator != 0
        alpha = torch.where(
            nonzero, grads2 / torch.where(nonzero, denominator, 1.0), 0.0
        )
        return (alpha * torch.relu(gradients)).sum(dim=(2, 3))


CAM_METHODS: dict[str, type[BaseCAM]] = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
}


def create_cam(
    method: str, model: nn.Module, target_layers: nn.Module | Sequence[nn.Module]
) -> BaseCAM:
    try:
        cam_class = CAM_METHODS[method.lower()]
    except KeyError:
        raise ValueError(
            f"unknown CAM method {method!r}; choose one of {sorted(CAM_METHODS)}"
        ) from None
    return cam_class(model, target_layers)


def _minmax_per_sample(cam: torch.Tensor) -> torch.Tensor:
    flat = cam.flatten(1)
    low = flat.min(dim=1).values[:, None, None]
    span = flat.max(dim=1).values[:, None, None] - low
    has_range = span > 0
    # A flat map (all zero: nothing drove the logit up) stays zero instead of 0/0.
    scaled = torch.where(
        has_range, (cam - low) / torch.where(has_range, span, 1.0), 0.0
    )
    return scaled.clamp_(0.0, 1.0)
