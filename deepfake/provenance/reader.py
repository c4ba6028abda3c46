"""One call for everything a file says about itself: its content credentials and its metadata.

Never raises for what is in the file: a part that cannot be read becomes a finding that says so.
Reading the credentials runs in a worker thread with a deadline, so a pathological manifest
cannot hold up the analysis; the pure-Python metadata readers are bounded by size caps instead.
"""

from __future__ import annotations

import logging
import threading

from deepfake.media import AVIF_BRANDS, HEIF_BRANDS
from deepfake.provenance.credentials import credential_findings
from deepfake.provenance.findings import C2PA, CONTEXT, METADATA, Finding, unreadable
from deepfake.provenance.metadata import metadata_findings
from deepfake.provenance.settings import ProvenanceSettings

log = logging.getLogger(__name__)

C2PA_TIMEOUT_S = 10.0  # hashing a 200 MB video for its manifest takes about a second
MIME_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp", "heif": "image/heic",
              "avif": "image/avif", "tiff": "image/tiff", "gif": "image/gif", "mp4": "video/mp4",
              "mov": "video/quicktime", "avi": "video/avi"}  # fmt: skip
# Containers whose embedded metadata is read: the pictures, and MP4/MOV ("mp4" covers M4V and 3GP too).
METADATA_FORMATS = ("jpeg", "png", "webp", "heif", "avif", "tiff", "gif", "bmp", "mp4", "mov")


def container_format(data: bytes) -> str | None:
    """The container, from magic numbers: jpeg, png, webp, heif, avif, tiff, gif, bmp, mp4, mov,
    avi, matroska, or None."""
    head = data[:16]
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] == b"RIFF":
        return {b"WEBP": "webp", b"AVI ": "avi"}.get(head[8:12])
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        return "heif" if brand in HEIF_BRANDS else "avif" if brand in AVIF_BRANDS else "mov" if brand == b"qt  " else "mp4"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(b"BM"):
        return "bmp"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "matroska"
    return None


def read_provenance(data: bytes, settings: ProvenanceSettings | None = None, *,
                    jpeg_quality: int | None = None) -> list[Finding]:  # fmt: skip
    """Findings from the file's content credentials (C2PA) and, for pictures and MP4/MOV videos, its metadata.
    ``jpeg_quality`` is the quality already estimated from the file's tables, if it is a JPEG."""
    settings = settings or ProvenanceSettings()
    fmt = container_format(data)
    findings: list[Finding] = []
    if fmt in MIME_TYPES:
        findings += _bounded_credentials(data, MIME_TYPES[fmt], settings)
    found_metadata = False
    with_metadata = fmt in METADATA_FORMATS
    if with_metadata:
        try:
            metadata, found_metadata = metadata_findings(data, fmt, jpeg_quality, settings.include_location)
            findings += metadata
        except Exception as exc:  # noqa: BLE001 - a reader bug on odd bytes must not cost the verdict
            log.warning("metadata reading failed", exc_info=True)
            findings.append(unreadable(METADATA, "metadata", f"{type(exc).__name__}: {exc}"))
    if not any(f.source == C2PA for f in findings) and not found_metadata:
        what = "content credentials or camera metadata" if with_metadata else "content credentials"
        findings.append(Finding(METADATA, "metadata.none", "No provenance data", f"No {what} were found. Most "
                                "platforms and messaging apps strip them on upload, so their absence is not evidence "
                                "either way.", CONTEXT))  # fmt: skip
    return findings


def _bounded_credentials(data: bytes, mime: str, settings: ProvenanceSettings) -> list[Finding]:
    """The credentials' findings, or an "unreadable" finding if reading fails or passes the deadline
    (the reading thread is then left to finish on its own: native code cannot be interrupted)."""
    outcome: list[list[Finding]] = []

    def work() -> None:
        try:
            outcome.append(credential_findings(data, mime, settings))
        except Exception as exc:  # noqa: BLE001 - a library failure on odd bytes must not cost the verdict
            log.warning("reading content credentials failed", exc_info=True)
            outcome.append([unreadable(C2PA, "content credentials (C2PA)", f"{type(exc).__name__}: {exc}")])

    worker = threading.Thread(target=work, name="c2pa-read", daemon=True)
    worker.start()
    worker.join(C2PA_TIMEOUT_S)
    if not outcome:
        return [unreadable(C2PA, "content credentials (C2PA)", f"reading them took over {C2PA_TIMEOUT_S:g} s")]
    return outcome[0]
