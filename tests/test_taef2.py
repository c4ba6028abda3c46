"""TAEF2 loads its published layout strictly and round-trips images of any size (random weights, offline)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from deepfake.errors import CorruptModelError, ModelMismatchError, ModelNotFoundError
from deepfake.training.taef2 import DECODER_FILE, ENCODER_FILE, LATENT_CHANNELS, TAEF2, load_taef2


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> tuple[Path, TAEF2]:
    """Random weights saved as the published files are: plain fp16 state_dicts of the two Sequentials."""
    torch.manual_seed(0)
    model = TAEF2()
    folder = tmp_path_factory.mktemp("taef2")
    torch.save({k: v.half() for k, v in model.encoder.state_dict().items()}, folder / ENCODER_FILE)
    torch.save({k: v.half() for k, v in model.decoder.state_dict().items()}, folder / DECODER_FILE)
    return folder, model


def test_published_key_layout():
    model = TAEF2()
    encoder, decoder = model.encoder.state_dict(), model.decoder.state_dict()
    assert len(encoder) == len(decoder) == 79
    assert encoder["2.weight"].shape == (64, 64, 3, 3) and "2.bias" not in encoder  # stride-2, no bias
    assert encoder["11.pool.1.weight"].shape == (256,) and "10.pool.0.weight" not in encoder
    assert encoder["14.weight"].shape == (LATENT_CHANNELS, 64, 3, 3)
    assert decoder["1.weight"].shape == (64, LATENT_CHANNELS, 3, 3) and "3.pool.3.weight" in decoder
    assert "7.bias" not in decoder and decoder["19.weight"].shape == (3, 64, 3, 3)


def test_latent_is_eight_times_smaller():
    model = TAEF2().eval()
    with torch.inference_mode():
        latent = model.encoder(torch.rand(2, 3, 64, 48))
        assert latent.shape == (2, LATENT_CHANNELS, 8, 6)
        assert model.decoder(latent).shape == (2, 3, 64, 48)


def test_load_is_strict_and_casts_to_float32(weights):
    folder, original = weights
    model = load_taef2(folder)
    assert not model.training
    for name, tensor in model.state_dict().items():
        assert tensor.dtype == torch.float32
        assert torch.equal(tensor, original.state_dict()[name].half().float())


@pytest.mark.parametrize("shape", [(37, 53, 3), (64, 64, 3), (3, 29, 41, 3), (1, 5, 7, 3)])
def test_roundtrip_keeps_shape_for_any_size(weights, shape):
    model = load_taef2(weights[0])
    images = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    out = model.roundtrip(images)
    assert out.shape == images.shape and out.dtype == np.uint8


def test_roundtrip_batches_like_single_images(weights):
    model = load_taef2(weights[0])
    images = np.random.default_rng(1).integers(0, 256, (3, 24, 40, 3), dtype=np.uint8)
    batched = model.roundtrip(images, batch_size=2)
    singles = np.stack([model.roundtrip(image) for image in images])
    assert np.abs(batched.astype(int) - singles.astype(int)).max() <= 1  # float summation order only


def test_roundtrip_refuses_non_rgb_uint8(weights):
    model = load_taef2(weights[0])
    with pytest.raises(ValueError):
        model.roundtrip(np.zeros((16, 16, 3), np.float32))
    with pytest.raises(ValueError):
        model.roundtrip(np.zeros((16, 16), np.uint8))


def test_missing_file_is_a_typed_error(weights, tmp_path):
    (tmp_path / ENCODER_FILE).write_bytes((weights[0] / ENCODER_FILE).read_bytes())
    with pytest.raises(ModelNotFoundError, match=DECODER_FILE):
        load_taef2(tmp_path)
    with pytest.raises(ModelNotFoundError):
        load_taef2(tmp_path / "nowhere")


def test_mismatched_weights_are_a_typed_error(weights, tmp_path):
    folder = weights[0]
    # The decoder's weights where the encoder's belong.
    (tmp_path / ENCODER_FILE).write_bytes((folder / DECODER_FILE).read_bytes())
    (tmp_path / DECODER_FILE).write_bytes((folder / DECODER_FILE).read_bytes())
    with pytest.raises(ModelMismatchError):
        load_taef2(tmp_path)
    # One key missing.
    state = torch.load(folder / ENCODER_FILE, weights_only=True)
    del state["14.bias"]
    torch.save(state, tmp_path / ENCODER_FILE)
    with pytest.raises(ModelMismatchError, match="missing"):
        load_taef2(tmp_path)


def test_garbage_file_is_a_typed_error(weights, tmp_path):
    (tmp_path / ENCODER_FILE).write_bytes(b"not a pickle at all")
    (tmp_path / DECODER_FILE).write_bytes((weights[0] / DECODER_FILE).read_bytes())
    with pytest.raises(CorruptModelError):
        load_taef2(tmp_path)
    torch.save([1, 2, 3], tmp_path / ENCODER_FILE)
    with pytest.raises(CorruptModelError):
        load_taef2(tmp_path)
