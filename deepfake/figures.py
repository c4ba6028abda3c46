"""Static pictures shared by the dashboard and the HTML report: encoded images, the probability
gauge and the video timeline.

Charts use matplotlib's object API (``Figure``), never ``pyplot``: pyplot keeps global state,
and the dashboard draws from several sessions' threads at once.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import cv2
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Wedge
from matplotlib.ticker import PercentFormatter

from deepfake.wording import VERDICT_COLOURS

REAL_COLOUR, FAKE_COLOUR = VERDICT_COLOURS["REAL"], VERDICT_COLOURS["FAKE"]


def fit(image: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink an RGB image so its longer side is at most ``max_side`` (never enlarges)."""
    height, width = image.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1.0:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def encode_png(image_rgb: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".png", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise ValueError("image could not be encoded as PNG")
    return buffer.tobytes()


def encode_jpeg(image_rgb: np.ndarray, quality: int = 85) -> bytes:
    ok, buffer = cv2.imencode(".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("image could not be encoded as JPEG")
    return buffer.tobytes()


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, transparent=False)
    return buffer.getvalue()


def gauge_png(probability: float, threshold: float) -> bytes:
    """A half-dial from 0% (left) to 100% fake (right): a green zone below the threshold, a red one
    from it on, the threshold marked and labelled, and the needle at ``probability``."""
    figure = Figure(figsize=(3.2, 2.0))
    ax = figure.add_axes((0, 0, 1, 1))
    ax.set_xlim(-1.25, 1.25)
    ax.set_ylim(-0.42, 1.2)
    ax.set_aspect("equal")
    ax.axis("off")

    def angle(value: float) -> float:  # 0 -> 180 degrees (left), 1 -> 0 degrees (right)
        return 180.0 * (1.0 - min(max(value, 0.0), 1.0))

    ax.add_patch(Wedge((0, 0), 1.0, angle(threshold), 180, width=0.28, color="#a5d6a7"))
    ax.add_patch(Wedge((0, 0), 1.0, 0, angle(threshold), width=0.28, color="#ef9a9a"))
    verdict_colour = FAKE_COLOUR if probability >= threshold else REAL_COLOUR

    t = np.radians(angle(threshold))
    ax.plot([0.66 * np.cos(t), 1.06 * np.cos(t)], [0.66 * np.sin(t), 1.06 * np.sin(t)], color="black", lw=2.2)
    ax.text(1.16 * np.cos(t), 1.12 * np.sin(t), f"threshold {threshold:.0%}", ha="center", va="center", fontsize=8)

    p = np.radians(angle(probability))
    ax.annotate("", xy=(0.9 * np.cos(p), 0.9 * np.sin(p)), xytext=(0, 0),
                arrowprops={"arrowstyle": "-|>", "color": "#212121", "lw": 2})  # fmt: skip
    ax.add_patch(Wedge((0, 0), 0.07, 0, 360, color="#212121"))
    ax.text(-1.0 + 0.14, -0.1, "0%", ha="center", va="top", fontsize=8, color="#555555")
    ax.text(1.0 - 0.14, -0.1, "100%", ha="center", va="top", fontsize=8, color="#555555")
    ax.text(0, -0.2, f"{probability:.0%} fake", ha="center", va="center", fontsize=13, fontweight="bold", color=verdict_colour)
    return _png(figure)


def timeline_png(times: Sequence[float], probabilities: Sequence[float], threshold: float,
                 marked: Sequence[float] = ()) -> bytes:  # fmt: skip
    """Fake probability per sampled frame over time, the threshold as a dashed line and the
    ``marked`` (most suspicious) frames circled."""
    figure = Figure(figsize=(7.0, 2.4))
    ax = figure.add_subplot()
    times, probabilities = np.asarray(times, float), np.asarray(probabilities, float)
    ax.plot(times, probabilities, color="#455a64", lw=1.5, zorder=2)
    above = probabilities >= threshold
    ax.scatter(times[~above], probabilities[~above], color=REAL_COLOUR, s=18, zorder=3, label="below threshold")
    ax.scatter(times[above], probabilities[above], color=FAKE_COLOUR, s=18, zorder=3, label="at or above threshold")
    marked_mask = np.isin(times, np.asarray(marked, float))
    ax.scatter(times[marked_mask], probabilities[marked_mask], s=110, facecolors="none", edgecolors="black",
               zorder=4, label="most suspicious")  # fmt: skip
    ax.axhline(threshold, color="black", ls="--", lw=1, label=f"threshold {threshold:.0%}")
    ax.set(ylim=(0, 1), xlabel="Seconds into the video", ylabel="Fake probability")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    figure.tight_layout()
    return _png(figure)
