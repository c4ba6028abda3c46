"""One degradation chain shared by a real crop and the pseudo-fake made from it.

Real media reaches the detector resized, blurred, noisy and compressed, by JPEG and by video
codecs. If the two classes were degraded independently, or the manipulation were applied after
the degradation, the model could tell them apart by a difference in degradation (a sharp pasted
face in a blurred frame) instead of by the manipulation. So the trainer draws one
:class:`Degradation` per pair (``sample_degradation``) and applies it, after the manipulation, to
both members with the same noise seed (``apply_degradation``): the two then differ only by what the
manipulation changed, carried through identical operators.

Order, as in a camera-to-platform pipeline: tone (camera/editing), backdrop (a defocused
background: portrait mode, a video call), optical blur, sensor noise, denoising (phone and
broadcast processing, beauty filters), downscale-upscale (a small face in the frame, blown up to
the crop size), H.264 (a video platform), JPEG (a photo or a screenshot re-saved). Each step is optional; a :class:`Degradation` with its defaults changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import av
import cv2
import numpy as np

from deepfake.training.augment import jpeg_roundtrip

INTERPOLATIONS = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC}


@dataclass(frozen=True)
class DegradationConfig:
    """How often each step is applied (probabilities) and over which ranges; for the trainer to tune."""

    tone: float = 0.3
    blur: float = 0.2
    blur_sigma: tuple[float, float] = (0.4, 1.5)
    noise: float = 0.2
    noise_sigma: tuple[float, float] = (2.0, 8.0)
    resize: float = 0.5
    resize_scale: tuple[float, float] = (0.3, 0.9)  # of the crop side
    h264: float = 0.3
    h264_crf: tuple[int, int] = (23, 40)  # inclusive: platform ladders' high to low renditions
    # Live and short-form encoders run fast presets, VOD ladders slower ones; both are drawn.
    h264_presets: tuple[str, ...] = ("veryfast", "medium")
    jpeg_heavy: float = 0.45
    jpeg_heavy_quality: tuple[int, int] = (20, 60)  # inclusive: messaging apps, re-shared screenshots
    jpeg_light: float = 0.35  # the remaining share (0.2 by default) is saved without JPEG
    jpeg_light_quality: tuple[int, int] = (61, 95)
    # Looks of authentic photos that v2.7.0 read as evidence (120 held-out real crops, median logits):
    # edge-preserving denoising (phones, broadcast, beauty filters) raised the generation head by
    # 0.6-1.7, and it read a held-out interview clip (smooth, made up, studio-lit) as generated
    # (+2.7; -2.0 once 8 grey levels of noise were added); a defocused background (portrait mode,
    # video calls) raised the blending head by 0.5-1.0, a sharp face on a soft ground reading as
    # pasted. Both are drawn for both members of a pair so that neither look can tell the classes
    # apart; after 30,000 samples (the v2.11 run) neither reading had moved yet (model card).
    backdrop: float = 0.15
    backdrop_sigma: tuple[float, float] = (3.0, 15.0)  # px at the crop size, log-uniform
    denoise: float = 0.15
    denoise_strength: tuple[float, float] = (30.0, 80.0)  # bilateral filter's colour sigma, grey levels
    # A plain studio ground (a flat tint with a soft gradient) in place of everything outside the
    # face: v2.7.0's generation head read a held-out interview clip's frames at +2.7 and the same
    # frames on a grey ground at +7.9, since generated portraits stand on plain grounds and most
    # authentic photos do not. Off by default: an experiment's option (model card, the v2.14 run).
    studio: float = 0.0

    def __post_init__(self) -> None:
        for name in ("tone", "blur", "noise", "resize", "h264", "jpeg_heavy", "jpeg_light", "backdrop", "denoise",
                     "studio"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} is a probability, got {getattr(self, name)}")
        if self.jpeg_heavy + self.jpeg_light > 1.0:
            raise ValueError("jpeg_heavy + jpeg_light must not exceed 1")
        if not 1 <= self.jpeg_heavy_quality[0] <= self.jpeg_heavy_quality[1] <= 100:
            raise ValueError(f"bad JPEG quality range {self.jpeg_heavy_quality}")
        if not 1 <= self.jpeg_light_quality[0] <= self.jpeg_light_quality[1] <= 100:
            raise ValueError(f"bad JPEG quality range {self.jpeg_light_quality}")
        if not 0 <= self.h264_crf[0] <= self.h264_crf[1] <= 51:
            raise ValueError(f"bad CRF range {self.h264_crf}")


@dataclass(frozen=True)
class Degradation:
    """The parameters of one draw of the chain; the defaults are the identity."""

    gamma: float = 1.0
    contrast: float = 1.0
    brightness: float = 0.0
    saturation: float = 1.0
    blur_sigma: float = 0.0
    noise_sigma: float = 0.0
    resize_scale: float = 1.0
    resize_down: str = "area"
    resize_up: str = "linear"
    h264_crf: int | None = None
    h264_preset: str = "medium"
    h264_motion: tuple[float, float] = (0.0, 0.0)  # px, the previous frame's offset
    jpeg_quality: int | None = None
    backdrop_sigma: float = 0.0  # defocus of everything outside the face's ellipse
    denoise_strength: float = 0.0
    studio_ground: tuple[float, ...] = ()  # R, G, B at the top and bottom of a plain ground, if any


# The face's ellipse in a framed crop (centre and half-axes as shares of the side): the framing puts
# the face box at 1 / margin of the crop, centred, so the head falls inside (hair at the sides may not).
FACE_ELLIPSE = ((0.5, 0.5), (0.4, 0.5))


def sample_degradation(rng: np.random.Generator, config: DegradationConfig | None = None) -> Degradation:
    """Draw once per (real, pseudo-fake) pair and apply the result to both."""
    config = config or DegradationConfig()
    params: dict = {}
    if rng.random() < config.tone:
        params |= {
            "gamma": float(rng.uniform(0.8, 1.25)),
            "contrast": float(rng.uniform(0.8, 1.2)),
            "brightness": float(rng.uniform(-15, 15)),
            "saturation": float(rng.uniform(0.7, 1.3)),
        }
    if rng.random() < config.blur:
        params["blur_sigma"] = float(rng.uniform(*config.blur_sigma))
    if rng.random() < config.noise:
        params["noise_sigma"] = float(rng.uniform(*config.noise_sigma))
    if rng.random() < config.resize:
        params["resize_scale"] = float(rng.uniform(*config.resize_scale))
        params["resize_down"] = str(rng.choice(["area", "linear"]))
        params["resize_up"] = str(rng.choice(["linear", "cubic"]))
    if rng.random() < config.h264:
        params["h264_crf"] = int(rng.integers(config.h264_crf[0], config.h264_crf[1] + 1))
        params["h264_preset"] = str(rng.choice(config.h264_presets))
        params["h264_motion"] = tuple(float(v) for v in rng.uniform(-1.5, 1.5, 2))
    jpeg = rng.random()
    if jpeg < config.jpeg_heavy:
        params["jpeg_quality"] = int(rng.integers(config.jpeg_heavy_quality[0], config.jpeg_heavy_quality[1] + 1))
    elif jpeg < config.jpeg_heavy + config.jpeg_light:
        params["jpeg_quality"] = int(rng.integers(config.jpeg_light_quality[0], config.jpeg_light_quality[1] + 1))
    # Drawn last, so that the draws above are those of configurations made before these steps.
    if rng.random() < config.backdrop:
        params["backdrop_sigma"] = float(np.exp(rng.uniform(*np.log(config.backdrop_sigma))))
    if rng.random() < config.denoise:
        params["denoise_strength"] = float(rng.uniform(*config.denoise_strength))
    if config.studio and rng.random() < config.studio:  # no draw when off: earlier runs' samples stay as they were
        top = rng.uniform(40, 220) + rng.uniform(-20, 20, 3)  # a grey, slightly tinted
        params["studio_ground"] = tuple(float(v) for v in np.clip([*top, *(top + rng.uniform(-40, 40))], 0, 255))
    return Degradation(**params)


def apply_degradation(image: np.ndarray, params: Degradation, noise_seed: int) -> np.ndarray:
    """uint8 RGB ``image`` through the chain; deterministic given ``params`` and ``noise_seed``.

    Give both members of a pair the same ``noise_seed`` as well: identical noise is the most
    conservative choice, since then not even the noise field differs between them.
    """
    out = _pixel_steps(image, params, noise_seed)
    out = np.clip(out + 0.5, 0, 255).astype(np.uint8)  # rounds, so the identity is exact
    if params.h264_crf is not None:
        out = h264_roundtrip(out, params.h264_crf, params.h264_preset, params.h264_motion)
    if params.jpeg_quality is not None:
        out = jpeg_roundtrip(out, params.jpeg_quality)
    return out


def _pixel_steps(image: np.ndarray, params: Degradation, noise_seed: int) -> np.ndarray:
    """Tone, backdrop, blur, noise, denoising and resampling, in float32 (rounded once, by the caller)."""
    if (params.gamma, params.contrast, params.brightness, params.saturation) == (1.0, 1.0, 0.0, 1.0):
        out = image.astype(np.float32)
    else:
        # Gamma, contrast and brightness act on each value alone: one 256-entry table, 10x
        # faster than the power function per pixel.
        levels = np.arange(256, dtype=np.float32) / 255
        out = ((255 * levels**params.gamma - 128) * params.contrast + 128 + params.brightness)[image]
        # Saturation: each channel pulled towards (or pushed from) the pixel's grey, as one 3x3 matrix.
        s = params.saturation
        out = cv2.transform(out, np.full((3, 3), (1 - s) / 3, np.float32) + np.eye(3, dtype=np.float32) * s)
    if params.studio_ground:
        out = _studio_ground(out, params.studio_ground)
    if params.backdrop_sigma > 0:
        out = _defocus_backdrop(out, params.backdrop_sigma)
    if params.blur_sigma > 0:
        out = cv2.GaussianBlur(out, (0, 0), params.blur_sigma)
    if params.noise_sigma > 0:
        noise = np.random.default_rng(noise_seed).standard_normal(out.shape, dtype=np.float32)
        out = out + noise * np.float32(params.noise_sigma)
    if params.denoise_strength > 0:
        # Edge-preserving: skin and backgrounds go smooth, edges stay (what a generated face looks like).
        out = cv2.bilateralFilter(out, 9, params.denoise_strength, 4)
    if params.resize_scale < 1.0:
        h, w = out.shape[:2]
        small = (max(2, round(w * params.resize_scale)), max(2, round(h * params.resize_scale)))
        out = cv2.resize(out, small, interpolation=INTERPOLATIONS[params.resize_down])
        out = cv2.resize(out, (w, h), interpolation=INTERPOLATIONS[params.resize_up])
    return out


def _face_weight(h: int, w: int) -> np.ndarray:
    """[h, w, 1]: 1 inside the face's ellipse (FACE_ELLIPSE), 0 outside, soft-edged."""
    (cx, cy), (ax, ay) = FACE_ELLIPSE
    face = np.zeros((h, w), np.float32)
    cv2.ellipse(face, (round(cx * w), round(cy * h)), (round(ax * w), round(ay * h)), 0, 0, 360, 1.0, -1)
    return cv2.GaussianBlur(face, (0, 0), 0.05 * w)[..., None]


def _defocus_backdrop(image: np.ndarray, sigma: float) -> np.ndarray:
    """Everything outside the face's ellipse blurred by ``sigma`` px."""
    face = _face_weight(*image.shape[:2])
    return image * face + cv2.GaussianBlur(image, (0, 0), sigma) * (1 - face)


def _studio_ground(image: np.ndarray, ground: tuple[float, ...]) -> np.ndarray:
    """Everything outside the face's ellipse replaced by a plain ground: ``ground``'s first three
    values at the top, its last three at the bottom, linear in between."""
    h, w = image.shape[:2]
    top, bottom = np.float32(ground[:3]), np.float32(ground[3:])
    share = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    plain = np.broadcast_to(top + (bottom - top) * share, (h, w, 3))
    face = _face_weight(h, w)
    return image * face + plain * (1 - face)


def h264_roundtrip(
    image: np.ndarray, crf: int, preset: str = "medium", motion: tuple[float, float] = (0.0, 0.0)
) -> np.ndarray:
    """The RGB image as a P-frame of an H.264 clip (libx264, yuv420p) encoded at ``crf``, decoded.

    Most frames a detector sees in a video are P-frames, predicted from the previous frame and
    coded as a residual, so they carry other traces than a still-image (I-frame) encoding. The
    clip is two frames: the image shifted by ``motion`` (sub-pixel, like a steady shot's drift),
    then the image itself, which is the one kept. B-frames and lookahead are off: for two
    frames they only add latency. CABAC and the deblocking filter stay on, as on every platform
    (which is why neither ``preset=ultrafast`` nor ``tune=fastdecode`` is used: both turn the
    deblocking filter off). One thread: small frames encode faster than threads start.
    """
    h, w = image.shape[:2]
    # yuv420p needs even sides: replicate an edge row/column, cropped off after decoding.
    padded = cv2.copyMakeBorder(image, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE) if h % 2 or w % 2 else image
    ph, pw = padded.shape[:2]
    shift = np.float32([[1, 0, motion[0]], [0, 1, motion[1]]])
    previous = cv2.warpAffine(padded, shift, (pw, ph), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)

    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = pw, ph, "yuv420p"
    encoder.time_base, encoder.framerate = Fraction(1, 25), Fraction(25)
    encoder.thread_count = 1
    encoder.options = {
        "crf": str(crf),
        "preset": preset,
        # scenecut=0 keeps the second frame a P-frame whatever the content.
        "x264-params": "keyint=250:scenecut=0:bframes=0:rc-lookahead=0:threads=1",
    }
    packets = []
    for pts, frame in enumerate((previous, padded)):
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24").reformat(format="yuv420p")
        video_frame.pts = pts
        packets += encoder.encode(video_frame)
    packets += encoder.encode(None)

    decoder = av.CodecContext.create("h264", "r")
    decoder.thread_count = 1
    frames = [frame for packet in packets for frame in decoder.decode(packet)] + list(decoder.decode(None))
    return np.ascontiguousarray(frames[-1].to_ndarray(format="rgb24")[:h, :w])


def jpeg_in_grid(image: np.ndarray, quality: int, source_pixels: float) -> np.ndarray:
    """``image`` as if its source, ``source_pixels`` across, had been saved at JPEG ``quality``:
    resampled to that size, round-tripped, and resampled back, so the blocks land where the
    source's own would have."""
    size = image.shape[0]
    side = max(8, round(source_pixels))
    if abs(side - size) <= 0.05 * size:
        return jpeg_roundtrip(image, quality)
    there = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA if side < size else cv2.INTER_LINEAR)
    back = jpeg_roundtrip(there, quality)
    return cv2.resize(back, (size, size), interpolation=cv2.INTER_AREA if side > size else cv2.INTER_LINEAR)


def half_size(image: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    return cv2.resize(image, (max(1, width // 2), max(1, height // 2)), interpolation=cv2.INTER_AREA)


# What messaging apps, social networks and video platforms do to media before a fact-checker sees
# it: the fixed steps that training validation and the evaluation measure robustness on.
LADDER: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "JPEG 75": lambda image: jpeg_roundtrip(image, 75),
    "JPEG 50": lambda image: jpeg_roundtrip(image, 50),
    "JPEG 30": lambda image: jpeg_roundtrip(image, 30),
    "half size": half_size,
    "H.264 CRF 28": lambda image: h264_roundtrip(image, 28),
    "H.264 CRF 35": lambda image: h264_roundtrip(image, 35),
    "H.264 CRF 40": lambda image: h264_roundtrip(image, 40),
    "half size + JPEG 50": lambda image: jpeg_roundtrip(half_size(image), 50),
}


def degrade_crop(crop: np.ndarray, degrade: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """A framed crop after a degradation (a LADDER step), back at its own size, as the engine would
    crop and resize the face of a file that went through it (a half-size picture's face is resized up)."""
    out = degrade(crop)
    if out.shape != crop.shape:
        out = cv2.resize(out, crop.shape[1::-1], interpolation=cv2.INTER_LINEAR)
    return out
