from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from deepfake.media import decode_image, jpeg_quality, load_image, read_media, scale_factor, sniff_kind


def _encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def test_path_str_and_bytes_agree(hopper_path, hopper_jpeg_bytes):
    from_path = load_image(hopper_path)
    from_str = load_image(str(hopper_path))
    from_bytes = load_image(hopper_jpeg_bytes)
    assert from_path.dtype == np.uint8 and from_path.shape == (600, 512, 3)
    assert from_path.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(from_path, from_str)
    np.testing.assert_array_equal(from_path, from_bytes)
    np.testing.assert_array_equal(load_image(bytearray(hopper_jpeg_bytes)), from_path)
    np.testing.assert_array_equal(load_image(memoryview(hopper_jpeg_bytes)), from_path)


def test_pil_image_matches_file(hopper_path, hopper_rgb):
    with Image.open(hopper_path) as image:
        np.testing.assert_array_equal(load_image(image), hopper_rgb)


def test_pil_rgba_is_composited_onto_white():
    rgba = Image.new("RGBA", (4, 2), (255, 0, 0, 0))  # fully transparent red
    rgba.putpixel((0, 0), (255, 0, 0, 255))  # one opaque red pixel
    rgba.putpixel((1, 0), (0, 0, 0, 128))  # half-transparent black
    out = load_image(rgba)
    assert out.shape == (2, 4, 3)
    assert out[0, 0].tolist() == [255, 0, 0]
    assert out[1, 3].tolist() == [255, 255, 255]  # transparent -> white, not red or black
    assert all(abs(int(v) - 127) <= 1 for v in out[0, 1])


def test_pil_palette_and_gray():
    palette = Image.new("P", (3, 3))
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    palette.putpixel((1, 1), 1)
    out = load_image(palette)
    assert out.shape == (3, 3, 3)
    assert out[1, 1].tolist() == [10, 200, 30] and out[0, 0].tolist() == [0, 0, 0]

    transparent = palette.copy()
    transparent.info["transparency"] = 0
    out = load_image(transparent)
    assert out[0, 0].tolist() == [255, 255, 255] and out[1, 1].tolist() == [10, 200, 30]

    gray = Image.new("L", (5, 2), 77)
    out = load_image(gray)
    assert out.shape == (2, 5, 3) and (out == 77).all()


def test_numpy_gray_2d():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    out = load_image(gray)
    assert out.shape == (3, 4, 3)
    for channel in range(3):
        np.testing.assert_array_equal(out[..., channel], gray)


def test_numpy_single_channel_and_wide_ints():
    out = load_image(np.full((2, 2, 1), 9, np.uint8))
    assert out.shape == (2, 2, 3) and (out == 9).all()
    out = load_image(np.array([[-5, 300]], dtype=np.int32))
    assert out.dtype == np.uint8 and out[0, :, 0].tolist() == [0, 255]


def test_numpy_rgba_composited_like_pil():
    array = np.zeros((2, 2, 4), np.uint8)
    array[0, 0] = [0, 200, 0, 255]  # opaque green
    array[0, 1] = [0, 200, 0, 0]  # transparent green -> white
    out = load_image(array)
    assert out.shape == (2, 2, 3)
    assert out[0, 0].tolist() == [0, 200, 0]
    assert out[0, 1].tolist() == [255, 255, 255]
    np.testing.assert_array_equal(out, load_image(Image.fromarray(array)))


def test_numpy_float_unit_range_is_scaled():
    array = np.zeros((2, 3, 3), np.float32)
    array[0, 0] = 1.0
    array[1, 2] = 0.5
    out = load_image(array)
    assert out.dtype == np.uint8
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[0, 1].tolist() == [0, 0, 0]
    assert all(127 <= v <= 128 for v in out[1, 2])
    # Floats already on a 0..255 scale are kept as they are.
    assert load_image(np.full((2, 2, 3), 200.0))[0, 0].tolist() == [200, 200, 200]


def test_exif_orientation_is_applied():
    from PIL import ExifTags

    image = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # rotate 90 degrees clockwise to display
    data = _encode(image, "JPEG", exif=exif)
    with Image.open(io.BytesIO(data)) as check:
        assert check.size == (40, 20)  # stored landscape
    out = load_image(data)
    assert out.shape == (40, 20, 3)  # shown portrait
    with Image.open(io.BytesIO(data)) as pil:
        assert load_image(pil).shape == (40, 20, 3)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "GIF"])
def test_sniff_image_formats(fmt):
    data = _encode(Image.new("RGB", (8, 8), (1, 2, 3)), fmt)
    assert sniff_kind(data) == "image"
    assert load_image(data).shape == (8, 8, 3)


def test_sniff_videos_and_text(synthetic_clip):
    assert sniff_kind(synthetic_clip) == "video"
    assert sniff_kind(b"\x1a\x45\xdf\xa3" + b"\x00" * 28) == "video"  # Matroska / WebM
    assert sniff_kind(b"RIFF\x10\x00\x00\x00AVI LIST" + b"\x00" * 16) == "video"
    assert sniff_kind(b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\x00" * 16) == "image"
    assert sniff_kind(b"hello, this is plain text\n") is None
    assert sniff_kind(b"") is None


def test_read_media_classifies_by_content_not_name(synthetic_clip, hopper_jpeg_bytes):
    media = read_media(synthetic_clip, name="holiday.jpg")
    assert media.kind == "video" and media.name == "holiday.jpg" and len(media.sha256) == 64
    assert read_media(hopper_jpeg_bytes).kind == "image"


def test_scale_factor_is_the_coarsest_dct_scale_that_still_holds_enough_pixels():
    assert scale_factor(4000, 3000, min_pixels=1920 * 1080) == 2  # 3 MP holds a full-HD overlay, 0.75 MP does not
    assert scale_factor(924, 1083, min_pixels=1920 * 1080) == 1  # smaller than asked for: kept whole
    assert scale_factor(8000, 8000, min_pixels=100) == 8  # libjpeg decodes no coarser than 1/8
    assert scale_factor(4000, 3000) == 1 and scale_factor(4000, 3000, max_pixels=12_000_000) == 1
    assert scale_factor(6600, 6000, max_pixels=12_000_000) == 2  # halved, to 9.9 MP
    assert scale_factor(6600, 6000, min_pixels=10_000_000, max_pixels=12_000_000) == 2  # the cap wins


def _textured(width: int, height: int) -> Image.Image:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, (height // 8, width // 8, 3), dtype=np.uint8)
    return Image.fromarray(noise).resize((width, height), Image.BICUBIC)


def test_a_jpeg_is_decoded_at_the_coarsest_scale_that_is_large_enough():
    picture = _textured(1601, 1203)  # odd sizes: the decoder rounds a reduced size up
    data = _encode(picture, "JPEG", quality=83)
    decoded = decode_image(data, "big.jpg", min_pixels=400_000)
    assert (decoded.width, decoded.height, decoded.factor) == (1601, 1203, 2)
    assert decoded.pixels.shape == (602, 801, 3)  # libjpeg's 1/2 scale; 0.48 MP >= 0.4 MP, and 1/4 would be 0.12 MP
    full = load_image(data)
    halved = np.asarray(Image.fromarray(full).reduce(2), dtype=np.int16)
    assert np.abs(decoded.pixels[:601, :800].astype(np.int16) - halved[:601, :800]).mean() < 3  # the same picture
    assert decoded.jpeg_quality == jpeg_quality(data) == 83  # read from the header decode_image parsed anyway
    assert decode_image(data, "big.jpg").factor == 1  # nothing asked: full size


def test_a_reduced_decode_is_turned_upright_with_the_picture_size_swapped():
    from PIL import ExifTags

    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # stored on its side
    data = _encode(_textured(1600, 1200), "JPEG", exif=exif)
    decoded = decode_image(data, "turned.jpg", min_pixels=400_000)
    assert (decoded.width, decoded.height, decoded.factor) == (1200, 1600, 2)
    assert decoded.pixels.shape == (800, 600, 3)
    full = load_image(data)
    assert np.abs(decoded.pixels.astype(np.int16) - np.asarray(Image.fromarray(full).reduce(2), np.int16)).mean() < 3


def test_other_formats_are_decoded_whole_and_only_reduced_past_the_work_size():
    data = _encode(_textured(1601, 1203), "PNG")
    assert decode_image(data, "big.png", min_pixels=400_000).factor == 1  # no cheap reduced decode: kept whole
    capped = decode_image(data, "big.png", work_pixels=1_000_000)
    assert (capped.width, capped.height, capped.factor) == (1601, 1203, 2)
    assert capped.pixels.shape == (601, 800, 3) and capped.jpeg_quality is None
