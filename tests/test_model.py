from __future__ import annotations

import numpy as np
import pytest
import torch

from deepfake.errors import UnknownArchitectureError
from deepfake.model import (
    Ensemble,
    ModelConfig,
    SamePadConv2d,
    cam_layers,
    create_model,
    default_config,
    ensemble_arch,
    fold_batchnorm,
)
from explainability.gradcam import create_cam


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("efficientnet_lite0").eval()


def test_output_shape(model):
    with torch.no_grad():
        assert model(torch.randn(2, 3, 224, 224)).shape == (2, 1)
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1)
        assert model(torch.randn(1, 3, 97, 131)).shape == (1, 1)  # odd sizes: SAME padding copes


def test_num_outputs():
    assert create_model("efficientnet_lite0", num_outputs=3).classifier.out_features == 3


def test_cam_layer_is_inside_the_model(model):
    (layer,) = cam_layers(model)
    assert any(layer is m for m in model.modules())
    seen = []
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
    try:
        with torch.no_grad():
            model(torch.randn(1, 3, 224, 224))
    finally:
        handle.remove()
    assert seen == [torch.Size([1, 192, 7, 7])]  # the last residual stage, 7x7 at 224 px
    assert cam_layers(torch.nn.Linear(2, 1)) == []


def test_unknown_architecture():
    with pytest.raises(UnknownArchitectureError) as excinfo:
        create_model("resnet9000")
    assert "resnet9000" in str(excinfo.value) and "efficientnet_lite0" in str(excinfo.value)


def test_an_ensemble_averages_its_members_head_logits():
    torch.manual_seed(2)
    ensemble = create_model("2xefficientnet_lite0", num_outputs=2).eval()
    assert isinstance(ensemble, Ensemble) and len(ensemble.members) == 2
    first, second = ensemble.members
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(ensemble(x), (first(x) + second(x)) / 2, atol=1e-6)
        assert not torch.allclose(first(x), second(x), atol=1e-3)  # two members, not one twice
    assert cam_layers(ensemble) == [*cam_layers(first), *cam_layers(second)]
    assert set(fold_batchnorm(ensemble).state_dict()) >= {"members.0.head.conv.bias", "members.1.head.conv.bias"}
    for arch in ("1xefficientnet_lite0", "2xresnet9000", "2x", "efficientnet_lite0+", "efficientnet_lite0+resnet9000",
                 "100000000xefficientnet_lite0", "8xefficientnet_lite0+efficientnet_lite1"):  # fmt: skip
        with pytest.raises(UnknownArchitectureError, match="ensemble"):
            create_model(arch)


def test_an_ensemble_may_join_architectures():
    def size(module):
        return sum(p.numel() for p in module.parameters())

    mixed = create_model("efficientnet_lite0+efficientnet_lite1", num_outputs=2)
    assert [size(m) for m in mixed.members] == [size(create_model(a, num_outputs=2)) for a in
                                                ("efficientnet_lite0", "efficientnet_lite1")]  # fmt: skip
    assert len(create_model("2xefficientnet_lite0+efficientnet_lite1").members) == 3
    assert ensemble_arch(["efficientnet_lite0", "efficientnet_lite0"]) == "2xefficientnet_lite0"
    assert ensemble_arch(["efficientnet_lite0", "efficientnet_lite1"]) == "efficientnet_lite0+efficientnet_lite1"


def test_config_round_trip():
    config = ModelConfig(
        "efficientnet_lite0",
        input_size=192,
        mean=(0.5, 0.4, 0.3),
        std=(0.2, 0.2, 0.25),
        face_margin=1.5,
        extra={"epochs": 3},
    )
    data = config.to_dict()
    assert data["mean"] == (0.5, 0.4, 0.3) and data["face_margin"] == 1.5
    assert ModelConfig.from_dict(data) == config
    # JSON turns tuples into lists; unknown keys from newer versions are ignored.
    as_json = {**data, "mean": list(data["mean"]), "std": list(data["std"]), "future_key": 1}
    assert ModelConfig.from_dict(as_json) == config
    assert default_config("efficientnet_lite0") == ModelConfig("efficientnet_lite0")
    assert default_config("efficientnet_lite0").input_size == 224


def test_eval_is_deterministic(model):
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_folded_batchnorm_scores_and_explains_as_the_model_does():
    torch.manual_seed(1)
    model = create_model("efficientnet_lite0", num_outputs=2)
    for m in model.modules():  # statistics away from the identity, as a trained model's are
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5), m.bias.data.uniform_(-0.2, 0.2)
    model.eval()
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 49  # the original keeps its own
    x = torch.randn(3, 3, 96, 96)
    with torch.no_grad():
        expected = model(x)
        assert torch.allclose(folded(x), expected, atol=1e-4, rtol=1e-4)
        assert not torch.allclose(create_model("efficientnet_lite0", num_outputs=2).eval()(x), expected, atol=1e-2)
    maps, _ = create_cam("gradcam", model, cam_layers(model)).compute(x, output_index=1)
    folded_maps, _ = create_cam("gradcam", folded, cam_layers(folded)).compute(x, output_index=1)
    assert np.allclose(folded_maps, maps, atol=1e-4) and maps.std() > 0
    linear = torch.nn.Linear(2, 1)
    assert fold_batchnorm(linear) is linear  # nothing to fold (a TorchScript module likewise)


@pytest.mark.parametrize("kernel, stride, size", [(3, 1, 12), (5, 1, 9), (3, 2, 12), (5, 2, 13), (3, 2, 13)])
def test_same_padding_matches_tensorflow(kernel, stride, size):
    conv = SamePadConv2d(4, 6, kernel, stride, bias=False)
    x = torch.randn(2, 4, size, size)
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)  # TensorFlow: the extra pixel goes last
    padded = torch.nn.functional.pad(x, (total // 2, total - total // 2) * 2)
    expected = torch.nn.functional.conv2d(padded, conv.weight, None, stride)
    with torch.no_grad():
        assert torch.allclose(conv(x), expected, atol=1e-6) and conv(x).shape[-1] == -(-size // stride)
