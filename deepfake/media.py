"""One way to read what users give us: paths, bytes, PIL images and arrays.

Images are decoded with Pillow after a header-only check of their pixel count, so a
decompression bomb is refused before it is expanded in memory.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pillow_heif
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from deepfake.errors import (
    CorruptFileError,
    EmptyFileError,
    ImageTooLargeError,
    ImageTooSmallError,
    InputError,
    MediaNotFoundError,
    NotMediaError,
    UnsupportedFormatError,
)

MAX_IMAGE_PIXELS = 40_000_000
# Pictures are analysed at most this large: the model sees faces at 224 px and the face finder
# works at 640 px, so a 12 MP phone photo can be used whole and a bigger one is halved (or more).
# Most photos are decoded smaller still (deepfake.detector decodes at the size it needs).
WORK_PIXELS = 12_000_000
MIN_IMAGE_SIDE = 32  # below this a face, if found at all, is too small to judge
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".heic", ".heif", ".avif")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".m4v", ".avi", ".webm", ".mkv")

# ISO-BMFF files (MP4, MOV, and phones' HEIC and AVIF photos) all start with an 'ftyp' box; its
# major brand tells a still picture from a video.
HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"mif2", b"msf1"})
AVIF_BRANDS = frozenset({b"avif", b"avis"})
DECODED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "MPO", "HEIF", "AVIF")

# Pillow's own bomb guard warns at ~89 MP and raises at twice that; we enforce our own limit.
Image.MAX_IMAGE_PIXELS = None
pillow_heif.register_heif_opener()  # HEIC/HEIF through libheif; AVIF is Pillow's own


@dataclass(frozen=True)
class MediaBytes:
    """Raw bytes of an uploaded or on-disk file, with what we could tell about them."""

    data: bytes
    name: str
    kind: str  # "image" | "video"
    sha256: str


Source = str | os.PathLike | bytes | bytearray | memoryview | Image.Image | np.ndarray | MediaBytes


def sniff_kind(data: bytes) -> str | None:
    """Tell an image from a video by magic numbers, never by the file name."""
    head = data[:16]
    if head.startswith(b"\xff\xd8\xff") or head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image"
    if head.startswith(b"BM") or head.startswith((b"GIF87a", b"GIF89a")):
        return "image"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "image"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video"
    if head[4:8] == b"ftyp":
        return "image" if head[8:12] in HEIF_BRANDS | AVIF_BRANDS else "video"  # else MP4, MOV, M4V
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video"  # Matroska / WebM
    return None


def read_media(
    source: str | os.PathLike | bytes | bytearray | memoryview | MediaBytes, name: str | None = None
) -> MediaBytes:
    """Read a path or bytes and classify it as image or video (already read media: as is, not hashed again)."""
    if isinstance(source, MediaBytes):
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = name or "upload"
    else:
        path = Path(source)
        if not path.is_file():
            raise MediaNotFoundError(f"File not found: {path.name}")
        data = path.read_bytes()
        name = name or path.name
    if not data:
        raise EmptyFileError(f"'{name}' is empty (0 bytes).")
    kind = sniff_kind(data)
    if kind is None:
        if _looks_like_text(data):
            raise NotMediaError(f"'{name}' is not an image or a video (it looks like text).")
        raise NotMediaError(f"'{name}' is not an image or a video we recognise.")
    return MediaBytes(data=data, name=name, kind=kind, sha256=hashlib.sha256(data).hexdigest())


def _looks_like_text(data: bytes) -> bool:
    sample = data[:512]
    return bool(sample) and all(b in b"\t\n\r" or 32 <= b < 127 or b >= 128 for b in sample)


def load_image(source: Source, name: str | None = None, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Return an RGB ``uint8`` array (H, W, 3) from any supported source.

    EXIF orientation is applied and transparency is composited onto white, so what the model
    sees is what a person sees.
    """
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source, max_pixels)
    if isinstance(source, Image.Image):
        _check_pixels(source.width, source.height, max_pixels, name or "image")
        return _pil_to_rgb(source)
    media = read_media(source, name)
    if media.kind != "image":
        raise UnsupportedFormatError(f"'{media.name}' is a video; use the video detector for it.")
    return decode_image_bytes(media.data, media.name, max_pixels)


@dataclass(frozen=True)
class DecodedImage:
    """An image file's first frame, decoded at 1/``factor`` of the picture's size, with what was
    left out of it."""

    pixels: np.ndarray  # RGB uint8 (H, W, 3), upright
    width: int  # the picture's own size (upright): the coordinates results are given in
    height: int
    frames: int  # frames in the file (animated GIF/WebP, multi-page TIFF); only the first is decoded
    factor: int = 1  # picture pixels per decoded pixel along each side, a power of two
    jpeg_quality: int | None = None  # estimated from a JPEG's quantisation tables (see jpeg_quality)


def scale_factor(width: int, height: int, min_pixels: int | None = None, max_pixels: int | None = None) -> int:
    """The coarsest of libjpeg's DCT scales (1/1, 1/2, 1/4, 1/8), as a divisor, that leaves a
    ``width`` x ``height`` picture at least ``min_pixels`` large (None: full size), unless a coarser
    power of two is needed to bring it to at most ``max_pixels``."""
    factor = 1
    while min_pixels is not None and factor < 8 and (width // (2 * factor)) * (height // (2 * factor)) >= min_pixels:
        factor *= 2
    limit = 1
    while max_pixels is not None and (width // limit) * (height // limit) > max_pixels:
        limit *= 2
    return max(factor, limit)


def decode_image(data: bytes, name: str, max_pixels: int = MAX_IMAGE_PIXELS, work_pixels: int | None = None,
                 min_pixels: int | None = None) -> DecodedImage:  # fmt: skip
    """Decode the first frame at most ``work_pixels`` large if given and, for a JPEG, at the
    coarsest DCT scale that keeps at least ``min_pixels`` (see scale_factor). A JPEG is decoded
    straight at the reduced scale (libjpeg's DCT scaling), so a small file whose header claims
    40 MP never costs 40 MP of memory or time; other formats are decoded whole and scaled down
    right after."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            _check_pixels(image.width, image.height, max_pixels, name)
            if image.format not in DECODED_FORMATS:
                raise UnsupportedFormatError(f"'{name}' is a {image.format} image, which is not supported.")
            width, height, frames = image.width, image.height, getattr(image, "n_frames", 1)
            jpeg = image.format in ("JPEG", "MPO")
            factor = scale_factor(width, height, min_pixels if jpeg else None, work_pixels)
            if factor > 1 and jpeg:  # the decoder picks the scale: the largest divisor up to 8 that fits
                image.draft(image.mode, (max(1, width // factor), max(1, height // factor)))
            image.load()
            quality = _quality(image) if jpeg else None
    except InputError:
        raise
    except UnidentifiedImageError as exc:
        raise CorruptFileError(f"'{name}' looks like an image but cannot be decoded; it may be damaged.") from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise CorruptFileError(f"'{name}' is truncated or corrupt and cannot be decoded ({exc}).") from exc
    if image.getexif().get(ExifTags.Base.Orientation, 1) in (5, 6, 7, 8):  # shown turned a quarter
        width, height = height, width
    pixels = _pil_to_rgb(image)
    if pixels.shape[1] > -(-width // factor):  # not decoded at the scale (not a JPEG, or past 1/8)
        # Whole-pixel blocks for cv2's fast path: a 40 MP to 12 MP resize at a fractional ratio
        # took longer than decoding the picture.
        size = (max(1, width // factor), max(1, height // factor))
        pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
    return DecodedImage(pixels, width, height, frames, factor, quality)


def decode_image_bytes(data: bytes, name: str, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """The first frame at full resolution."""
    return decode_image(data, name, max_pixels).pixels


def require_face_sized(image: np.ndarray, name: str) -> np.ndarray:
    """The image, if it is big enough to hold a face that can be found and judged."""
    height, width = image.shape[:2]
    if min(width, height) < MIN_IMAGE_SIDE:
        raise ImageTooSmallError(
            f"'{name}' is {width}x{height} pixels, too small to hold a face that can be judged "
            f"(at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} is needed)."
        )
    return image


# The JPEG standard's (IJG) luminance table at quality 50; encoders scale it for other qualities.
_IJG_LUMINANCE = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
], dtype=np.float64)  # fmt: skip


def jpeg_quality(data: bytes) -> int | None:
    """The IJG quality (1-100) a JPEG file was saved at, estimated from its luminance quantisation
    table; None for other formats. Heavy compression hides manipulation traces."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return _quality(image) if image.format in ("JPEG", "MPO") else None
    except (OSError, SyntaxError, ValueError):
        return None


def _quality(image: Image.Image) -> int | None:
    """jpeg_quality of an opened JPEG: decode_image reads it from the image it decodes, so the
    file's header is parsed once."""
    tables = getattr(image, "quantization", None)
    if not tables:
        return None
    table = np.asarray(tables[min(tables)], dtype=np.float64)
    scale = 100 * table.mean() / _IJG_LUMINANCE.mean()  # the IJG scaling: 200 - 2q above q50, 5000 / q below
    quality = (200 - scale) / 2 if scale <= 100 else 5000 / scale
    return int(np.clip(round(quality), 1, 100))


def _check_pixels(width: int, height: int, max_pixels: int, name: str) -> None:
    if width <= 0 or height <= 0:
        raise CorruptFileError(f"'{name}' has no pixels ({width}x{height}).")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"'{name}' is {width}x{height} ({width * height / 1e6:.0f} MP), over the "
            f"{max_pixels / 1e6:.0f} MP limit. Resize it and try again."
        )


def _pil_to_rgb(image: Image.Image) -> np.ndarray:
    # exif_transpose and convert copy even an upright RGB picture: skipping both took turning a
    # decoded 1 MP JPEG into an array from 6.4 to 1.4 ms (CPU time, median of 200).
    if image.getexif().get(ExifTags.Base.Orientation, 1) != 1:
        image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # High-bit-depth grey (16-bit PNG or TIFF): PIL's own conversion clips at 255, which
        # turns most of the picture white. Scale the 16-bit range down instead.
        grey = np.asarray(image, dtype=np.float64)
        if grey.max() > 255:
            grey = grey * 255 / 65535
        image = Image.fromarray(np.clip(grey, 0, 255).round().astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.ascontiguousarray(np.asarray(image if image.mode == "RGB" else image.convert("RGB"), dtype=np.uint8))


def _array_to_rgb(array: np.ndarray, max_pixels: int) -> np.ndarray:
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise UnsupportedFormatError(f"Expected an HxW, HxWx3 or HxWx4 array, got shape {array.shape}.")
    _check_pixels(array.shape[1], array.shape[0], max_pixels, "array")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise CorruptFileError("The image array contains NaN or infinite values.")
        scale = 255.0 if array.max() <= 1.0 else 1.0
        array = np.clip(array * scale, 0, 255).round()
    elif array.dtype == np.uint16:
        array = array / 257  # 16-bit samples: 65535 is white
    elif array.dtype != np.uint8:
        array = np.clip(array, 0, 255)
    array = array.astype(np.uint8)
    if array.shape[2] == 4:  # transparency onto white, as for PIL images and files
        return _pil_to_rgb(Image.fromarray(np.ascontiguousarray(array)))  # (H, W, 4) uint8 is RGBA
    return np.ascontiguousarray(array)
