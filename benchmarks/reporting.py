"""What the benchmarks share: the test photo, where their results go and how a section there is replaced."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import cv2
import matplotlib.cbook as cbook

from deepfake.media import load_image

REPORT = Path(__file__).resolve().parent.parent / "reports" / "BENCHMARKS.md"


def cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages: on a shared machine, how much the timings can be trusted."""
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def write_section(text: str) -> None:
    """Put ``text`` (starting with its ``## `` heading) into the report, replacing the section of
    the same heading up to its first parenthesis, so a re-run updates its own section only."""
    heading = text.split("(", 1)[0]
    REPORT.parent.mkdir(exist_ok=True)
    existing = REPORT.read_text() if REPORT.exists() else "# Benchmarks\n\n"
    start = existing.find(heading)
    if start >= 0:
        end = existing.find("\n## ", start + 1)
        existing = existing[:start] + existing[end + 1 :] if end >= 0 else existing[:start]
    REPORT.write_text(existing.rstrip() + "\n\n" + text.rstrip() + "\n")


def publish(lines: list[str], write: bool) -> None:
    """Print a benchmark's section and, unless told not to, put it into the report."""
    text = "\n".join(lines)
    print(text)
    if write:
        write_section(text)


def photo_1mp() -> bytes:
    """The bundled Grace Hopper portrait scaled to 1 megapixel, as a JPEG of quality 92."""
    face = load_image(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    scale = (1_000_000 / (face.shape[0] * face.shape[1])) ** 0.5
    image = cv2.resize(face, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    return data.tobytes()
