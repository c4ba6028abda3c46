"""Pseudo-fakes made from real faces: self-blending and face-part swaps.

Real-world fakes are mostly blends: a generated or borrowed face region pasted into a real
frame. Making such blends from real photos teaches the model the traces blending leaves
(boundaries, colour and sharpness mismatches) rather than one generator's fingerprint
(after Shiohara & Yamasaki, "Self-Blended Images", CVPR 2022).

A third kind, *resynthesis*, imitates what a generator leaves on a whole face: skin texture
smoothed away while edges stay sharp, and the periodic traces of learned upsampling
(after Zhang et al., "Detecting and Simulating Artifacts in GAN Fake Images", 2019). A fourth,
*decoder blend*, pastes the face as a real latent-diffusion decoder renders it (the crop's TAEF2
reconstruction, see ``taef2.py``), as face-swap and inpainting tools paste a generated face.

Every generator returns ``(image, mask)``: pixels change only where ``mask > 0``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

PARTS = ("face", "face", "face", "eyes", "nose", "mouth", "lower")  # whole-face blends most often


@dataclass
class PseudoFake:
    image: np.ndarray  # uint8 RGB, same shape as the input
    mask: np.ndarray  # float32 blend weight in [0, 1]
    kind: str  # "self_blend" | "part_swap" | "resynthesis" | "decoder_blend"
    part: str


def _geometry(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    eyes = landmarks[:2].mean(axis=0)
    mouth = landmarks[3:5].mean(axis=0)
    ocular = float(np.linalg.norm(landmarks[1] - landmarks[0])) or 1.0
    return eyes, mouth, landmarks[2], ocular


def _hull_points(landmarks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A face outline from 5 landmarks: forehead above the eyes, cheeks, chin below the mouth."""
    eyes, mouth, _nose, ocular = _geometry(landmarks)
    down = mouth - eyes
    down /= np.linalg.norm(down) or 1.0
    right = np.array([down[1], -down[0]]) * -1  # perpendicular, pointing from left to right eye
    if np.dot(right, landmarks[1] - landmarks[0]) < 0:
        right = -right
    spread = ocular * rng.uniform(0.75, 1.05)
    points = [
        eyes - down * ocular * rng.uniform(0.55, 0.9) - right * spread * 0.8,
        eyes - down * ocular * rng.uniform(0.7, 1.0),
        eyes - down * ocular * rng.uniform(0.55, 0.9) + right * spread * 0.8,
        landmarks[0] - right * spread * 0.55,
        landmarks[1] + right * spread * 0.55,
        landmarks[3] - right * spread * 0.45 + down * ocular * 0.1,
        landmarks[4] + right * spread * 0.45 + down * ocular * 0.1,
        mouth + down * ocular * rng.uniform(0.45, 0.75),
    ]
    points = np.array(points, dtype=np.float32)
    return points + rng.normal(0, ocular * 0.05, points.shape).astype(np.float32)  # deform the outline


def region_mask(shape: tuple[int, int], landmarks: np.ndarray, part: str, rng: np.random.Generator) -> np.ndarray:
    """Hard (0/1) mask of a face part, randomly deformed."""
    mask = np.zeros(shape, np.uint8)
    eyes, mouth, nose, ocular = _geometry(landmarks)
    angle = float(np.degrees(np.arctan2(*(landmarks[1] - landmarks[0])[::-1])))

    def ellipse(center: np.ndarray, axes: tuple[float, float]) -> None:
        jitter = rng.uniform(0.85, 1.2, 2)
        size = (max(2, int(axes[0] * ocular * jitter[0])), max(2, int(axes[1] * ocular * jitter[1])))
        cv2.ellipse(mask, (int(center[0]), int(center[1])), size, angle, 0, 360, 1, -1)

    if part == "face":
        cv2.fillConvexPoly(mask, cv2.convexHull(_hull_points(landmarks, rng)).astype(np.int32), 1)
    elif part == "eyes":
        ellipse(eyes, (1.0, 0.35))
    elif part == "nose":
        ellipse(nose * 0.8 + eyes * 0.2, (0.35, 0.55))
    elif part == "mouth":
        ellipse(mouth, (0.65, 0.32))
    elif part == "lower":
        ellipse((nose + mouth) / 2 + (mouth - eyes) * 0.15, (0.95, 0.75))
    else:
        raise ValueError(f"unknown part {part}")
    if rng.random() < 0.5:
        kernel = np.ones((3, 3), np.uint8)
        op = cv2.erode if rng.random() < 0.5 else cv2.dilate
        mask = op(mask, kernel, iterations=int(rng.integers(1, max(2, int(ocular * 0.15)))))
    return mask


def soften(mask: np.ndarray, rng: np.random.Generator, ocular: float) -> np.ndarray:
    """Blurred edges and a random blend strength (a crisp paste is too easy to learn)."""
    k = int(rng.uniform(0.1, 0.6) * ocular) * 2 + 1
    soft = cv2.GaussianBlur(mask.astype(np.float32), (k, k), 0) if k > 1 else mask.astype(np.float32)
    soft[mask == 0] *= rng.uniform(0.0, 1.0) < 0.5  # sometimes only blend inward, keeping outside crisp
    strength = rng.choice([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])
    return np.clip(soft * strength, 0.0, 1.0).astype(np.float32)


def _alter(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A slightly different copy of the face: colour, sharpness/resampling, position and scale."""
    out = image.astype(np.float32)
    if rng.random() < 0.8:
        hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV).astype(np.float32)
        hsv[..., 0] = (hsv[..., 0] + rng.uniform(-6, 6)) % 180
        hsv[..., 1] *= rng.uniform(0.85, 1.15)
        out = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    if rng.random() < 0.8:
        out = out * rng.uniform(0.85, 1.15) + rng.uniform(-18, 18) + rng.uniform(-8, 8, 3)
    choice = rng.random()
    h, w = image.shape[:2]
    if choice < 0.4:
        scale = rng.uniform(0.35, 0.85)
        small = cv2.resize(out, (max(4, int(w * scale)), max(4, int(h * scale))), interpolation=cv2.INTER_AREA)
        up = int(rng.choice([cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_NEAREST]))
        out = cv2.resize(small, (w, h), interpolation=up)
    elif choice < 0.7:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.6, 1.8))
    else:
        blurred = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.8, 2.0))
        out = out + (out - blurred) * rng.uniform(0.4, 1.5)
    shift = rng.uniform(-0.03, 0.03, 2) * (w, h)
    scale = rng.uniform(0.95, 1.05)
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), 0, scale)
    matrix[:, 2] += shift
    out = cv2.warpAffine(out, matrix, (w, h), borderMode=cv2.BORDER_REFLECT)
    return np.clip(out, 0, 255)


def _blend(target: np.ndarray, source: np.ndarray, mask: np.ndarray) -> np.ndarray:
    weight = mask[..., None]
    blended = np.clip(source * weight + target.astype(np.float32) * (1 - weight) + 0.5, 0, 255).astype(np.uint8)
    return np.where(weight > 0, blended, target)


def self_blend(
    image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator, part: str | None = None
) -> PseudoFake:
    part = part or str(rng.choice(PARTS))
    ocular = _geometry(landmarks)[3]
    mask = soften(region_mask(image.shape[:2], landmarks, part, rng), rng, ocular)
    return PseudoFake(_blend(image, _alter(image, rng), mask), mask, "self_blend", part)


def _match_colour(source: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Reinhard colour transfer in Lab inside the mask, as face-swap pipelines do."""
    inside = mask > 0.5
    if inside.sum() < 16:
        return source.astype(np.float32)
    src = cv2.cvtColor(source, cv2.COLOR_RGB2LAB).astype(np.float32)
    tgt = cv2.cvtColor(target, cv2.COLOR_RGB2LAB).astype(np.float32)
    mean_s, std_s = src[inside].mean(0), src[inside].std(0) + 1e-3
    mean_t, std_t = tgt[inside].mean(0), tgt[inside].std(0) + 1e-3
    matched = np.clip((src - mean_s) / std_s * std_t + mean_t, 0, 255).astype(np.uint8)
    return cv2.cvtColor(matched, cv2.COLOR_LAB2RGB).astype(np.float32)


def part_swap(
    image: np.ndarray,
    landmarks: np.ndarray,
    donor: np.ndarray,
    donor_landmarks: np.ndarray,
    rng: np.random.Generator,
    part: str | None = None,
) -> PseudoFake:
    """Paste a region of another real face, aligned on the landmarks and colour-matched."""
    part = part or str(rng.choice(PARTS))
    matrix, _ = cv2.estimateAffinePartial2D(donor_landmarks.astype(np.float32), landmarks.astype(np.float32))
    if matrix is None:
        return self_blend(image, landmarks, rng, part)
    h, w = image.shape[:2]
    warped = cv2.warpAffine(donor, matrix, (w, h), borderMode=cv2.BORDER_REFLECT)
    ocular = _geometry(landmarks)[3]
    hard = region_mask((h, w), landmarks, part, rng)
    mask = soften(hard, rng, ocular)
    source = _match_colour(warped, image, hard.astype(np.float32))
    return PseudoFake(_blend(image, source, mask), mask, "part_swap", part)


def _upsample_like_a_decoder(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Down by 2, then up by zero insertion and a random 3x3 kernel: a transposed convolution's
    checkerboard, which bilinear or bicubic resampling (used on both classes) never makes."""
    h, w = image.shape[:2]
    small = cv2.resize(image, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    up = np.zeros((h // 2 * 2, w // 2 * 2, 3), np.float32)
    up[::2, ::2] = small
    # A bilinear kernel (each of the 4 phases sums to 1) perturbed so the phases' gains differ a
    # little, as a learned kernel's do: a faint periodic pattern, not a visible grid.
    kernel = np.outer([0.5, 1.0, 0.5], [0.5, 1.0, 0.5]).astype(np.float32)
    kernel *= rng.uniform(1 - 0.25, 1 + 0.25, (3, 3)).astype(np.float32)
    up = cv2.filter2D(up, -1, kernel, borderType=cv2.BORDER_REFLECT)
    return cv2.resize(up, (w, h), interpolation=cv2.INTER_NEAREST) if up.shape[:2] != (h, w) else up


def resynthesize(image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator) -> PseudoFake:
    """The face re-rendered: edge-preserving smoothing and decoder upsampling, inside a face mask.

    Only the face: a whole crop smoothed evenly has no boundary and no inside/outside contrast,
    so its only trace is global smoothing, which the shared degradation (blur, downscaling,
    compression) gives real crops too: such fakes would teach the model "smooth means fake".
    """
    out = image.astype(np.float32)
    smooth = rng.random() < 0.8
    if smooth:
        d = int(rng.choice([5, 7, 9]))
        out = cv2.bilateralFilter(out, d, float(rng.uniform(15, 50)), float(rng.uniform(3, 8)))
    if rng.random() < 0.6 or not smooth:
        out = _upsample_like_a_decoder(out, rng)
    out = np.clip(out, 0, 255)
    hard = region_mask(image.shape[:2], landmarks, "face", rng)
    mask = soften(hard, rng, _geometry(landmarks)[3])
    mask = np.maximum(mask, hard * np.float32(0.9))  # mostly full strength: the whole face is rendered
    return PseudoFake(_blend(image, out, mask), mask, "resynthesis", "face")


def decoder_blend(
    image: np.ndarray,
    reconstruction: np.ndarray,
    landmarks: np.ndarray,
    rng: np.random.Generator,
    part: str | None = None,
) -> PseudoFake:
    """Paste a face region of the crop's decoder reconstruction (same size) with a soft, deformed mask.

    The reconstruction is used as it is: it is aligned and colour-true already, so the pasted
    region differs from its surroundings only by the decoder's rendering (texture, upsampling,
    latent quantisation) and the blend boundary. Misalignment and colour mismatch are
    ``self_blend``'s and ``part_swap``'s lessons.
    """
    if reconstruction.shape != image.shape or reconstruction.dtype != np.uint8:
        raise ValueError(f"reconstruction {reconstruction.dtype} {reconstruction.shape} does not match {image.shape}")
    part = part or str(rng.choice(PARTS))
    mask = soften(region_mask(image.shape[:2], landmarks, part, rng), rng, _geometry(landmarks)[3])
    return PseudoFake(_blend(image, reconstruction.astype(np.float32), mask), mask, "decoder_blend", part)


def make_pseudo_fake(image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator,
                     donor: tuple[np.ndarray, np.ndarray] | None = None,
                     reconstruction: np.ndarray | None = None) -> PseudoFake:  # fmt: skip
    """One pseudo-fake of a random kind: decoder blend (needs the crop's reconstruction, 30%),
    else self-blend, part swap (needs a donor face) or resynthesis."""
    if reconstruction is not None and rng.random() < 0.3:
        return decoder_blend(image, reconstruction, landmarks, rng)
    choice = rng.random()
    if choice < 0.3:
        return resynthesize(image, landmarks, rng)
    if choice < 0.6 and donor is not None:
        return part_swap(image, landmarks, donor[0], donor[1], rng)
    return self_blend(image, landmarks, rng)
