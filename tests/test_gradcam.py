from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from explainability import (
    CAM_METHODS,
    GradCAM,
    GradCAMPlusPlus,
    create_cam,
    find_suspicious_regions,
)

SIZE = 64
# Off the diagonal, so a row/column mix-up fails.
PATCH_ROWS, PATCH_COLS = slice(40, 56), slice(8, 24)


class PatchModel(nn.Module):
    """The logit sees one image patch only: masked input, bias-free convolutions."""

    def __init__(self, rows: slice = PATCH_ROWS, cols: slice = PATCH_COLS) -> None:
        super().__init__()
        mask = torch.zeros(1, 1, SIZE, SIZE)
        mask[..., rows, cols] = 1.0
        self.register_buffer("mask", mask)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        # Stride 2: the 32x32 map must be upsampled to the input size.
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1, bias=False)
        self.relu = nn.ReLU()
        self.head = nn.Linear(8, 1)
        with torch.no_grad():
            self.head.weight.fill_(1.0)  # more activation anywhere -> more "fake"
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.relu(self.conv2(self.relu(self.conv1(x * self.mask))))
        return self.head(features.mean(dim=(2, 3)))


class GapLinearModel(nn.Module):
    """Conv -> global average pool -> linear: here Grad-CAM equals the original CAM."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.head = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


class FailingModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.features(x)
        raise RuntimeError("boom")


@pytest.fixture
def patch_model() -> PatchModel:
    torch.manual_seed(0)
    return PatchModel()


@pytest.fixture
def inputs() -> torch.Tensor:
    return torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("method", sorted(CAM_METHODS))
def test_cam_localises_the_only_patch_the_logit_sees(
    method: str, patch_model: PatchModel, inputs: torch.Tensor
) -> None:
    cams = create_cam(method, patch_model, patch_model.conv2)(inputs)
    patch = np.zeros((SIZE, SIZE), bool)
    patch[PATCH_ROWS, PATCH_COLS] = True
    near_patch = np.zeros((SIZE, SIZE), bool)
    near_patch[36:60, 4:28] = True  # receptive field + upsampling spread a few pixels
    for cam in cams:
        row, col = np.unravel_index(cam.argmax(), cam.shape)
        assert patch[row, col]
        assert cam[patch].sum() / cam.sum() > 0.6
        assert cam[~near_patch].sum() / cam.sum() < 0.01
        first = find_suspicious_regions(cam)[0]
        x1, y1, x2, y2 = (int(v) for v in first.box)
        box = np.zeros((SIZE, SIZE), bool)
        box[y1:y2, x1:x2] = True
        assert (box & patch).sum() >= 0.5 * box.sum()


def test_gradcam_matches_closed_form_for_gap_linear_head() -> None:
    torch.manual_seed(0)
    model = GapLinearModel()
    with torch.no_grad():
        # Mixed signs: the channel weighting and the ReLU matter.
        model.head.weight.copy_(torch.tensor([[1.0, -2.0, 0.5, 3.0]]))
    x = torch.rand(2, 3, 16, 16)
    cams = GradCAM(model, model.features)(x)
    with torch.no_grad():
        expected = torch.relu(
            torch.einsum("c,bchw->bhw", model.head.weight[0], model.features(x))
        )
        expected = nn.functional.interpolate(
            expected[:, None], size=(16, 16), mode="bilinear"
        )[:, 0]
        low = expected.amin(dim=(1, 2), keepdim=True)
        expected = (expected - low) / (expected.amax(dim=(1, 2), keepdim=True) - low)
    np.testing.assert_allclose(cams, expected.numpy(), atol=1e-5)


def test_gradcam_plus_plus_weights_by_hand() -> None:
    activations = torch.ones(1, 2, 2, 2)
    gradients = torch.zeros(1, 2, 2, 2)
    gradients[0, 0] = 0.5
    # channel 0: S = 4, alpha = g^2 / (2 g^2 + S g^3) = 0.25, weight = 4 * 0.25 * 0.5
    # channel 1: zero gradients must give weight 0, not 0/0
    weights = GradCAMPlusPlus(nn.Identity(), nn.Identity()).channel_weights(
        activations, gradients
    )
    torch.testing.assert_close(weights, torch.tensor([[0.5, 0.0]]))


@pytest.mark.parametrize("cam_class", [GradCAM, GradCAMPlusPlus])
def test_batch_output_is_normalised_and_per_sample(
    cam_class: type, patch_model: PatchModel, inputs: torch.Tensor
) -> None:
    cam = cam_class(patch_model, patch_model.conv2)
    cams = cam(inputs)
    assert cams.shape == (3, SIZE, SIZE) and cams.dtype == np.float32
    assert not np.isnan(cams).any() and cams.min() >= 0.0 and cams.max() <= 1.0
    np.testing.assert_allclose(cams.max(axis=(1, 2)), 1.0)
    np.testing.assert_allclose(cams[1], cam(inputs[1:2])[0], atol=1e-5)


@pytest.mark.parametrize("cam_class", [GradCAM, GradCAMPlusPlus])
def test_compute_returns_the_same_maps_and_the_models_logits(
    cam_class: type, patch_model: PatchModel, inputs: torch.Tensor
) -> None:
    maps, logits = cam_class(patch_model, patch_model.conv2).compute(inputs)
    np.testing.assert_allclose(maps, cam_class(patch_model, patch_model.conv2)(inputs))
    with torch.no_grad():
        torch.testing.assert_close(logits, patch_model(inputs))
    assert not logits.requires_grad


def test_all_zero_map_stays_zero(patch_model: PatchModel) -> None:
    cams = GradCAM(patch_model, patch_model.conv2)(torch.zeros(2, 3, SIZE, SIZE))
    assert not np.isnan(cams).any() and (cams == 0).all()


def test_hooks_removed_after_success_and_failure(
    patch_model: PatchModel, inputs: torch.Tensor
) -> None:
    GradCAM(patch_model, patch_model.conv2)(inputs)
    assert not patch_model.conv2._forward_hooks
    failing = FailingModel()
    with pytest.raises(RuntimeError, match="boom"):
        GradCAM(failing, failing.features)(inputs)
    assert not failing.features._forward_hooks


def test_target_layer_not_run_is_an_error(
    patch_model: PatchModel, inputs: torch.Tensor
) -> None:
    with pytest.raises(RuntimeError, match="did not run"):
        GradCAM(patch_model, nn.Conv2d(3, 3, 1))(inputs)
    assert not patch_model.conv2._forward_hooks


def test_frozen_model_no_grad_and_no_parameter_gradients(
    patch_model: PatchModel, inputs: torch.Tensor
) -> None:
    reference = GradCAM(patch_model, patch_model.conv2)(inputs)
    for parameter in patch_model.parameters():
        parameter.requires_grad_(False)
    patch_model.train()
    with torch.no_grad():
        frozen = GradCAMPlusPlus(patch_model, patch_model.conv2)(inputs)
    with torch.inference_mode():
        inference = GradCAM(patch_model, patch_model.conv2)(inputs.clone())
    np.testing.assert_allclose(inference, reference, atol=1e-6)
    assert frozen.shape == (3, SIZE, SIZE) and frozen.max() == pytest.approx(1.0)
    assert patch_model.training  # the caller's mode is left alone
    assert all(p.grad is None for p in patch_model.parameters())
    assert inputs.grad is None and not inputs.requires_grad


def test_trainable_parameters_get_no_grad(
    patch_model: PatchModel, inputs: torch.Tensor
) -> None:
    patch_model.eval()
    GradCAMPlusPlus(patch_model, patch_model.conv2)(inputs)
    assert not patch_model.training
    assert all(p.grad is None for p in patch_model.parameters())


def test_create_cam_rejects_unknown_method(patch_model: PatchModel) -> None:
    assert isinstance(
        create_cam("gradcam++", patch_model, patch_model.conv2), GradCAMPlusPlus
    )
    with pytest.raises(ValueError, match="gradcam"):
        create_cam("scorecam", patch_model, patch_model.conv2)


def test_several_layers_average_their_own_scaled_maps(inputs: torch.Tensor) -> None:
    """An ensemble's map (one layer per member) is the mean of each member's own scaled map,
    scaled again, as pytorch-grad-cam aggregates layers: both members' patches light up."""
    from deepfake.model import Ensemble

    torch.manual_seed(0)
    first, second = PatchModel(), PatchModel(rows=slice(8, 24), cols=slice(40, 56))
    ensemble = Ensemble([first, second])
    maps = GradCAM(ensemble, [first.conv2, second.conv2])(inputs)
    own = (GradCAM(first, first.conv2)(inputs) + GradCAM(second, second.conv2)(inputs)) / 2
    low, high = own.min(axis=(1, 2), keepdims=True), own.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(maps, (own - low) / (high - low), atol=1e-5)
    assert (maps[:, 40:56, 8:24].max(axis=(1, 2)) > 0.5).all()
    assert (maps[:, 8:24, 40:56].max(axis=(1, 2)) > 0.5).all()
    assert not first.conv2._forward_hooks and not second.conv2._forward_hooks
    with pytest.raises(ValueError, match="at least one target layer"):
        GradCAM(ensemble, [])
