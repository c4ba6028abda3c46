"""Evidence beyond the pixels: content credentials (C2PA), metadata, phone photos, bad input.

Every file is made here, offline: a test CA signs C2PA manifests, Pillow writes EXIF, XMP and
PNG text chunks, pillow-heif writes HEIC, PyAV (FFmpeg) writes MP4 and MOV with container metadata,
and MP4 boxes are built by hand where a file must lie.
"""

from __future__ import annotations

import io
import json
import struct
import time
import zlib
from datetime import UTC, datetime

import numpy as np
import pytest
from PIL import Image
from provenance_samples import (
    A1111_PARAMETERS,
    APPLE_METADATA,
    COMFYUI_PROMPT,
    ISO6709,
    SIGNER_NAME,
    VIDEO_COORDINATES,
    box,
    camera_exif,
    manifest,
    movie_file,
    movie_header,
    noise_jpeg,
    png_with_texts,
    pyav_video,
    reencode,
    sign,
    signer_keys,
    tamper,
    text_atom,
    xmp_packet,
)

from deepfake import ImageDeepfakeDetector, VideoDeepfakeDetector
from deepfake.errors import TrustAnchorsError
from deepfake.interfaces.dashboard import evidence_markdown
from deepfake.media import decode_image_bytes, jpeg_quality, sniff_kind
from deepfake.provenance import ProvenanceSettings, container_format, read_provenance
from deepfake.provenance.findings import CONTEXT, LEANS_FAKE, LEANS_REAL, NEUTRAL, STRONG, SUPPORTING, model_finding
from deepfake.provenance.metadata import MAX_BOX_DEPTH, MAX_BOXES, QUICKTIME_EPOCH, XMP_UUID, walk
from deepfake.results import FAKE, REAL
from deepfake.wording import verdict_sentence

EDIT = {"action": "c2pa.color_adjustments", "softwareAgent": {"name": "Photo Editor"}}


def codes(findings) -> list[str]:
    return [f.code for f in findings]


def by_code(findings, code: str):
    matches = [f for f in findings if f.code == code]
    assert matches, f"no {code} in {codes(findings)}"
    return matches[0]


@pytest.fixture(scope="module")
def anchors(tmp_path_factory) -> ProvenanceSettings:
    path = tmp_path_factory.mktemp("trust") / "anchors.pem"
    path.write_bytes(signer_keys().ca_pem)
    return ProvenanceSettings.load(path)


@pytest.fixture(scope="module")
def ai_signed() -> bytes:
    return sign(noise_jpeg(), manifest("trainedAlgorithmicMedia"))


# --- content credentials ------------------------------------------------------------------------


def test_a_signed_ai_declaration_decides_and_says_the_signer_is_not_trusted(ai_signed):
    findings = read_provenance(ai_signed)
    check = by_code(findings, "c2pa.valid_untrusted")
    assert "signature is valid" in check.summary and "not in your trust list" in check.summary
    assert SIGNER_NAME in check.summary and "TestGen 1.0" in check.summary
    assert check.details["validation_state"] == "Valid"
    assert check.details["signer"]["common_name"] == SIGNER_NAME
    assert [s["code"] for s in check.details["status"]] == ["signingCredential.untrusted"]
    declared = by_code(findings, "c2pa.ai_generated")
    assert declared.decides and declared.weight == STRONG and declared.leans == LEANS_FAKE
    assert "trainedAlgorithmicMedia" in declared.assertion and "c2pa.created" in declared.assertion
    assert "not in your trust list" in declared.summary
    assert not any(f.code == "c2pa.trusted" for f in findings)


def test_the_same_file_with_the_ca_as_trust_anchor_is_trusted(ai_signed, anchors):
    findings = read_provenance(ai_signed, anchors)
    check = by_code(findings, "c2pa.trusted")
    assert check.details["validation_state"] == "Trusted" and "is in your trust list" in check.summary
    assert check.details["trust_list"] == list(anchors.trust_anchor_names)
    assert by_code(findings, "c2pa.ai_generated").decides


def test_a_file_altered_after_signing_is_tampered_and_decides_nothing(ai_signed):
    findings = read_provenance(tamper(ai_signed))
    check = by_code(findings, "c2pa.tampered")
    assert check.weight == STRONG and check.leans == LEANS_FAKE and not check.decides
    assert "changed after signing" in check.summary
    assert "assertion.dataHash.mismatch" in [s["code"] for s in check.details["status"]]
    declared = by_code(findings, "c2pa.ai_generated")
    assert not declared.decides and "does not decide" in declared.summary


def test_an_ai_edit_decides_too():
    edited = sign(noise_jpeg(), manifest("digitalCapture", actions=(
        {"action": "c2pa.edited", "digitalSourceType": "http://cv.iptc.org/newscodes/digitalsourcetype/"
         "compositeWithTrainedAlgorithmicMedia"},)))  # fmt: skip
    declared = by_code(read_provenance(edited), "c2pa.ai_edited")
    assert declared.decides and "compositeWithTrainedAlgorithmicMedia" in declared.assertion


def test_a_camera_capture_supports_authenticity_only_from_a_trusted_signer(anchors):
    captured = sign(noise_jpeg(), manifest("digitalCapture", generator="Test Camera"))
    untrusted = by_code(read_provenance(captured), "c2pa.capture")
    assert untrusted.leans == LEANS_REAL and untrusted.weight == CONTEXT and not untrusted.decides
    assert "anyone could have made this claim" in untrusted.summary
    trusted = by_code(read_provenance(captured, anchors), "c2pa.capture")
    assert trusted.weight == SUPPORTING and trusted.leans == LEANS_REAL


def test_edits_recorded_in_a_manifest_are_listed_and_are_not_a_capture():
    edited = sign(noise_jpeg(), manifest("digitalCapture", actions=(EDIT,)))
    findings = read_provenance(edited)
    assert "c2pa.capture" not in codes(findings)
    assert "colour-adjusted" in by_code(findings, "c2pa.edits").summary
    assert "Photo Editor" in by_code(findings, "c2pa.edits").summary


def test_credentials_in_a_png_are_read_too():
    png = sign(reencode(noise_jpeg(), "PNG"), manifest("trainedAlgorithmicMedia"), "image/png")
    assert by_code(read_provenance(png), "c2pa.ai_generated").decides


def test_a_malformed_manifest_is_unreadable_and_the_rest_is_still_read(ai_signed):
    start = ai_signed.find(b"jumb")
    broken = bytearray(ai_signed)
    broken[start + 100 : start + 400] = bytes(300)
    findings = read_provenance(bytes(broken), jpeg_quality=jpeg_quality(bytes(broken)))
    unreadable = by_code(findings, "c2pa.unreadable")
    assert "could not be read" in unreadable.summary and not unreadable.decides
    assert "metadata.jpeg_tables" in codes(findings)  # the rest of the file was still read


def test_trust_anchors_come_from_a_file_or_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "anchors.pem"
    path.write_bytes(signer_keys().ca_pem)
    monkeypatch.setenv("DEEPFAKE_TRUST_ANCHORS", str(path))
    settings = ProvenanceSettings.load()
    assert settings.trust_anchors and settings.trust_anchor_names[0].startswith("O=Workbench Test CA")
    monkeypatch.delenv("DEEPFAKE_TRUST_ANCHORS")
    assert ProvenanceSettings.load().trust_anchors is None
    (tmp_path / "junk.pem").write_text("not a certificate")
    for bad in (tmp_path / "junk.pem", tmp_path / "missing.pem"):
        with pytest.raises(TrustAnchorsError):
            ProvenanceSettings.load(bad)


# --- metadata -----------------------------------------------------------------------------------


def test_stable_diffusion_parameters_in_a_png_decide():
    findings = read_provenance(png_with_texts({"parameters": A1111_PARAMETERS}))
    declared = by_code(findings, "metadata.generator_parameters")
    assert declared.decides and declared.leans == LEANS_FAKE
    assert declared.details["settings"]["Seed"] == "1234567" and declared.details["settings"]["Steps"] == "28"
    assert "sdxl_base_1.0" in declared.summary and "'parameters'" in declared.assertion


def test_a_parameters_text_without_generation_settings_is_only_a_note():
    findings = read_provenance(png_with_texts({"parameters": "exposure +1"}))
    assert not any(f.decides for f in findings)


def test_a_comfyui_graph_decides_even_when_compressed():
    findings = read_provenance(png_with_texts({"prompt": COMFYUI_PROMPT, "workflow": '{"nodes": []}'},
                                              compressed=("prompt",)))  # fmt: skip
    declared = by_code(findings, "metadata.comfyui")
    assert declared.decides and declared.details["models"] == ["sd_xl_base_1.0.safetensors"]
    assert "KSampler" in declared.details["node_types"]


@pytest.mark.parametrize(("source_type", "code", "decides"), [
    ("trainedAlgorithmicMedia", "metadata.ai_source_type", True),
    ("compositeWithTrainedAlgorithmicMedia", "metadata.ai_source_type", True),
    ("digitalCapture", "metadata.source_type", False),
])  # fmt: skip
def test_xmp_digital_source_type(source_type, code, decides):
    data = reencode(noise_jpeg(), "JPEG", xmp=xmp_packet(source_type))
    finding = by_code(read_provenance(data), code)
    assert finding.decides is decides and finding.details["digital_source_type"] == source_type


def test_a_generator_named_as_creator_tool_decides():
    data = reencode(noise_jpeg(), "JPEG", xmp=xmp_packet(creator_tool="Midjourney v6"))
    assert "Midjourney" in by_code(read_provenance(data), "metadata.generator_software").assertion


def jpeg_with_segments(*segments: tuple[int, bytes]) -> bytes:
    data = noise_jpeg()
    return data[:2] + b"".join(bytes([0xFF, m]) + struct.pack(">H", len(b) + 2) + b for m, b in segments) + data[2:]


def test_extended_xmp_and_the_iptc_program_are_read():
    extension = xmp_packet("trainedAlgorithmicMedia")
    head = b"http://ns.adobe.com/xmp/extension/\x00" + b"0" * 32 + struct.pack(">I", len(extension))
    half = len(extension) // 2
    iim = b"\x1c\x02\x41" + struct.pack(">H", 15) + b"Adobe Photoshop"
    photoshop = b"Photoshop 3.0\x00" + b"8BIM\x04\x04\x00\x00" + struct.pack(">I", len(iim)) + iim + b"\x00"
    data = jpeg_with_segments(
        (0xE1, b"http://ns.adobe.com/xap/1.0/\x00" + xmp_packet(creator_tool="Some Tool")),
        (0xE1, head + struct.pack(">I", half) + extension[half:]),  # the second half first: order is by offset
        (0xE1, head + struct.pack(">I", 0) + extension[:half]),
        (0xED, photoshop),
    )
    findings = read_provenance(data)
    assert by_code(findings, "metadata.ai_source_type").decides
    assert "Adobe Photoshop" in by_code(findings, "metadata.edit_traces").summary


def test_camera_exif_edit_traces_and_table_family():
    data = reencode(noise_jpeg(), "JPEG", quality=85, exif=camera_exif(gps=False, software="Adobe Photoshop 25.0"),
                    xmp=xmp_packet(history=True))  # fmt: skip
    findings = read_provenance(data, jpeg_quality=jpeg_quality(data))
    camera = by_code(findings, "metadata.camera")
    assert "Canon EOS R5" in camera.summary and "Canon Canon" not in camera.summary and camera.leans == ""
    traces = by_code(findings, "metadata.edit_traces").summary
    assert "Adobe Photoshop 25.0" in traces and "modified (2024:05:01 10:20:00)" in traces and "edit history" in traces
    assert "re-saved" in traces  # a camera named, but libjpeg's standard tables
    tables = by_code(findings, "metadata.jpeg_tables")
    assert tables.details == {"family": "standard", "estimated_quality": 85}
    assert "metadata.location" not in codes(findings)


def test_gps_is_reported_present_but_its_coordinates_only_on_request():
    data = reencode(noise_jpeg(), "JPEG", exif=camera_exif(gps=True))
    hidden = read_provenance(data)
    location = by_code(hidden, "metadata.location")
    assert "left out" in location.summary and location.details == {"location_present": True}
    dumped = json.dumps([f.to_dict() for f in hidden])
    assert "52.37" not in dumped and "4.89" not in dumped
    shown = by_code(read_provenance(data, ProvenanceSettings(include_location=True)), "metadata.location")
    assert shown.details["latitude"] == pytest.approx(52.370139) and shown.details["longitude"] == pytest.approx(4.89)


def test_no_metadata_is_not_evidence():
    findings = read_provenance(reencode(noise_jpeg(), "PNG"))
    assert codes(findings) == ["metadata.none"]
    assert "strip" in findings[0].summary and "not evidence" in findings[0].summary
    assert findings[0].weight == CONTEXT and findings[0].leans == "" and not findings[0].decides


def test_heic_and_avif_metadata_are_read():
    for fmt in ("HEIF", "AVIF"):
        data = reencode(noise_jpeg(), fmt, exif=camera_exif(gps=True).tobytes(), quality=80)
        assert container_format(data) == fmt.lower()
        findings = read_provenance(data)
        assert "Canon EOS R5" in by_code(findings, "metadata.camera").summary
        assert by_code(findings, "metadata.location").details == {"location_present": True}


# --- bad input ----------------------------------------------------------------------------------


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_with_chunks(*chunks: bytes) -> bytes:
    """A valid 64x64 PNG with ``chunks`` inserted before its pixel data."""
    data = reencode(noise_jpeg(), "PNG")
    at = data.index(b"IDAT") - 4
    return data[:at] + b"".join(chunks) + data[at:]


def unreadable_part(data: bytes, source: str = "metadata") -> str:
    started = time.process_time()  # CPU time: a busy machine must not fail the test, a runaway loop must
    findings = read_provenance(data)
    assert time.process_time() - started < 2.0, "reading bad input must not hang"
    problem = by_code(findings, f"{source}.unreadable")
    assert "could not be read" in problem.summary and problem.weight == CONTEXT
    return problem.summary


def test_a_huge_xmp_packet_is_refused():
    huge = xmp_packet("trainedAlgorithmicMedia").replace(b"</x:xmpmeta>", b" " * (3 * 2**20) + b"</x:xmpmeta>")
    body = b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + huge
    assert "over the 2 MB limit" in unreadable_part(png_with_chunks(png_chunk(b"iTXt", body)))


def test_thousands_of_text_chunks_are_capped():
    chunks = [png_chunk(b"tEXt", f"note{i}".encode() + b"\x00" + b"x" * 20) for i in range(5000)]
    summary = unreadable_part(png_with_chunks(*chunks))
    assert "5000" in summary and "first 256" in summary


def test_a_compressed_text_bomb_is_refused():
    bomb = b"parameters\x00\x00" + zlib.compress(b"a" * (64 * 2**20), 9)
    assert "expands to over" in unreadable_part(png_with_chunks(png_chunk(b"zTXt", bomb)))


def test_a_corrupt_exif_block_is_unreadable_and_the_xmp_still_read():
    corrupt = b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x30\x00" + b"\x01" * 40  # 48 entries promised, 40 bytes given
    data = reencode(noise_jpeg(), "JPEG", exif=corrupt, xmp=xmp_packet("trainedAlgorithmicMedia"))
    assert "EXIF block" in unreadable_part(data)
    assert by_code(read_provenance(data), "metadata.ai_source_type").decides


def test_xml_entities_in_xmp_are_refused():
    laughs = b'<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">' + b"".join(
        f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">'.encode() for i in range(9)) + b"]>"
    packet = laughs + xmp_packet(creator_tool="&j;")  # a billion laughs, if it were expanded
    assert "entities" in unreadable_part(reencode(noise_jpeg(), "JPEG", xmp=packet))


def test_a_jpeg_segment_past_the_end_is_unreadable():
    data = noise_jpeg()
    assert "past the end" in unreadable_part(data[:2] + b"\xff\xe1\xff\xf0Exif\x00\x00II")


def test_truncated_and_bit_flipped_signed_files_never_raise(ai_signed):
    rng = np.random.default_rng(0)
    for cut in rng.integers(4, len(ai_signed), 12):
        read_provenance(ai_signed[:cut])
    for _ in range(12):
        flipped = bytearray(ai_signed)
        for at in rng.integers(2, len(ai_signed), 8):
            flipped[at] ^= 0xFF
        read_provenance(bytes(flipped))


def test_a_damaged_heic_is_unreadable():
    data = reencode(noise_jpeg(), "HEIF", quality=80)
    assert "HEIF metadata" in unreadable_part(data[:64])


def test_pillow_still_opens_what_we_wrote():
    """Guards the helpers: the samples are real files, not just bytes our reader accepts."""
    for data in (png_with_texts({"parameters": A1111_PARAMETERS}), reencode(noise_jpeg(), "HEIF", quality=80)):
        with Image.open(io.BytesIO(data)) as image:
            image.load()


# --- videos: MP4/MOV metadata -------------------------------------------------------------------

SHOW_LOCATION = ProvenanceSettings(include_location=True)


def since_1904(moment: datetime) -> int:
    return int((moment - QUICKTIME_EPOCH).total_seconds())


def camera_udta() -> bytes:
    return box(b"udta", text_atom(b"\xa9mak", "Canon"), text_atom(b"\xa9mod", "Canon XA60"))


@pytest.mark.parametrize("fmt", ["mov", "mp4"])
def test_a_phone_video_s_camera_time_and_location_are_read(fmt):
    data = pyav_video(fmt, {**APPLE_METADATA, "com.apple.quicktime.software": "17.4.1"}, metadata_tags=True)
    assert container_format(data) == fmt
    findings = read_provenance(data)
    camera = by_code(findings, "metadata.camera")
    assert "Apple iPhone 15 Pro, taken 2024:05:01 17:00:00 UTC" in camera.summary  # -07:00 on the phone
    assert camera.label == "Metadata: camera" and camera.leans == NEUTRAL and not camera.decides
    assert by_code(findings, "metadata.location").details == {"location_present": True}
    assert not any(c in json.dumps([f.to_dict() for f in findings]) for c in VIDEO_COORDINATES)
    traces = by_code(findings, "metadata.edit_traces")
    assert "17.4.1" in traces.summary and "FFmpeg (Lavf" in traces.summary and traces.leans == NEUTRAL
    assert not any(f.decides for f in findings) and "metadata.none" not in codes(findings)
    shown = by_code(read_provenance(data, SHOW_LOCATION), "metadata.location")
    assert shown.details == {"latitude": 37.7749, "longitude": -122.4194, "altitude_m": 10.0}
    assert "latitude 37.7749, longitude -122.4194" in shown.summary


def test_the_atoms_ffmpeg_itself_writes_are_read():
    """FFmpeg's MOV muxer writes make, model and location as QuickTime atoms (\xa9mak, \xa9mod,
    \xa9xyz) and the creation time in the movie header; its MP4 muxer writes the location as a 3GPP
    'loci' box and no make or model."""
    metadata = {"make": "Sony", "model": "ILCE-7M4", "location": ISO6709, "creation_time": "2024-05-01T10:00:00Z"}
    mov = pyav_video("mov", metadata)
    assert {"©mak", "©mod", "©xyz", "mvhd"} <= set(walk(mov, "mov").movie)
    assert "Sony ILCE-7M4, taken 2024:05:01 10:00:00 UTC" in by_code(read_provenance(mov), "metadata.camera").summary
    assert by_code(read_provenance(mov, SHOW_LOCATION), "metadata.location").details["latitude"] == 37.7749
    mp4 = pyav_video("mp4", metadata)
    assert {"loci", "mvhd"} <= set(walk(mp4, "mp4").movie)
    hidden = read_provenance(mp4)
    assert "metadata.camera" not in codes(hidden) and by_code(hidden, "metadata.location").details == {
        "location_present": True}  # fmt: skip
    shown = by_code(read_provenance(mp4, SHOW_LOCATION), "metadata.location").details  # 16.16 fixed point
    assert shown["latitude"] == pytest.approx(37.7749, abs=1e-4) and shown["longitude"] == pytest.approx(-122.4194, abs=1e-4)


@pytest.mark.parametrize("software", ["Sora", "Runway Gen-3 Alpha"])
def test_a_generator_named_as_a_video_s_software_decides(software):
    data = pyav_video("mp4", {"com.apple.quicktime.software": software}, metadata_tags=True)
    declared = by_code(read_provenance(data), "metadata.generator_software")
    assert declared.decides and declared.leans == LEANS_FAKE and software in declared.assertion
    assert "an AI generator" in declared.summary


@pytest.mark.parametrize("fmt", ["mp4", "mov"])
def test_an_ordinary_pyav_video_makes_no_claims(fmt):
    """FFmpeg stamps what it writes ("Lavf…"): a re-encode trace, context, never a lean either way."""
    findings = read_provenance(pyav_video(fmt))
    assert codes(findings) == ["metadata.edit_traces", "metadata.none"]
    assert "written or re-encoded by FFmpeg (Lavf" in findings[0].summary
    assert all(f.weight == CONTEXT and f.leans == NEUTRAL and not f.decides for f in findings)


def test_xmp_in_a_video_is_read():
    packet = xmp_packet("trainedAlgorithmicMedia", creator_tool="Adobe Premiere Pro 2024")
    appended = pyav_video("mp4") + box(b"uuid", XMP_UUID, packet)  # a top-level box after 'moov', as Adobe writes
    in_user_data = movie_file(box(b"moov", box(b"udta", box(b"XMP_", packet))), brand=b"qt  ")  # MOV's place
    for data in (appended, in_user_data):
        findings = read_provenance(data)
        assert by_code(findings, "metadata.ai_source_type").decides
        assert "Adobe Premiere Pro 2024" in by_code(findings, "metadata.edit_traces").summary


def test_the_movie_header_s_times():
    created = since_1904(datetime(2024, 5, 1, 10, 0, tzinfo=UTC))
    edited = movie_file(box(b"moov", movie_header(created, created + 86_400, version=1), camera_udta()))
    findings = read_provenance(edited)
    assert "Canon XA60, taken 2024:05:01 10:00:00 UTC" in by_code(findings, "metadata.camera").summary
    assert "modified (2024:05:02 10:00:00 UTC) after it was taken" in by_code(findings, "metadata.edit_traces").summary
    # Stamped at the end of the recording (10 s): not an edit. Unset (0): no time at all.
    for header, taken in ((movie_header(created, created + 10), "taken 2024"), (movie_header(0, 0), None)):
        findings = read_provenance(movie_file(box(b"moov", header, camera_udta())))
        assert "metadata.edit_traces" not in codes(findings)
        assert ("taken" in by_code(findings, "metadata.camera").summary) is bool(taken)


def test_unusual_but_valid_boxes_are_read():
    """A 64-bit size, a size of 0 ("to the end of the file"), a zero terminator after the user data,
    an M4V brand, and a fragmented file whose fragments are not walked."""
    moov = box(b"moov", box(b"udta", text_atom(b"\xa9mak", "Canon"), text_atom(b"\xa9mod", "Canon XA60"), bytes(4)))
    to_the_end = struct.pack(">I4s", 0, b"mdat") + bytes(1000)
    fragments = b"".join(box(b"moof", bytes(16)) + box(b"mdat", bytes(32)) for _ in range(MAX_BOXES))
    for data in (movie_file(box(b"mdat", bytes(5000), large=True), moov, brand=b"M4V "),
                 movie_file(moov, to_the_end), movie_file(moov, fragments)):  # fmt: skip
        findings = read_provenance(data)
        assert "Canon XA60" in by_code(findings, "metadata.camera").summary
        assert "metadata.unreadable" not in codes(findings)


class Watched(bytes):
    """Bytes that remember the longest slice taken of them."""

    longest = 0

    def __getitem__(self, key):
        part = super().__getitem__(key)
        if isinstance(key, slice):
            self.longest = max(self.longest, len(part))
        return part


def test_the_media_data_is_stepped_over_never_read():
    data = Watched(movie_file(box(b"mdat", bytes(16 * 2**20), large=True), box(b"moov", camera_udta())))
    assert walk(data, "mp4").movie == {"©mak": "Canon", "©mod": "Canon XA60"}
    assert data.longest < 64  # box headers and the two names: not a byte of the 16 MB


def nested(depth: int) -> bytes:
    inner = text_atom(b"\xa9mak", "Canon")
    for _ in range(depth):
        inner = box(b"udta", inner)
    return box(b"moov", inner)


def keys_table(count: int, *entries: bytes) -> bytes:
    return box(b"meta", bytes(4), box(b"keys", bytes(4), struct.pack(">I", count), *entries))


@pytest.mark.parametrize(("data", "problem"), [
    pytest.param(movie_file(box(b"moov", camera_udta())[:-6]), "box 'moov' at byte 20 claims 55 bytes, but only 49 "
                 "are left", id="cut-short"),
    pytest.param(movie_file(struct.pack(">I4s", 2**31, b"mdat"), bytes(64)), "claims 2147483648 bytes",
                 id="larger-than-the-file"),
    pytest.param(movie_file(struct.pack(">I4sQ", 1, b"mdat", 2**62), bytes(64)), "claims 4611686018427387904 bytes",
                 id="64-bit-larger-than-the-file"),
    pytest.param(movie_file(struct.pack(">I4sQ", 1, b"mdat", 8), bytes(64)), "less than its header", id="64-bit-tiny"),
    pytest.param(movie_file(struct.pack(">I4s", 1, b"mdat")), "cut off in its header", id="64-bit-cut-off"),
    pytest.param(movie_file(struct.pack(">I4s", 4, b"free"), bytes(64)), "less than its header", id="tiny"),
    pytest.param(movie_file(nested(MAX_BOX_DEPTH + 5)), f"nested over {MAX_BOX_DEPTH} deep", id="deep"),
    pytest.param(movie_file(box(b"free") * (MAX_BOXES + 1)), f"over {MAX_BOXES} boxes", id="many"),
    pytest.param(movie_file(box(b"moov", box(b"udta", box(b"\xa9mak", struct.pack(">HH", 500, 0x55C4), b"Canon")))),
                 "claims 500 bytes of text", id="text-atom-too-long"),
    pytest.param(movie_file(box(b"moov", box(b"udta", box(b"\xa9mak", b"\x00")))), "'©mak' is cut off",
                 id="text-atom-cut-off"),
    pytest.param(movie_file(box(b"moov", keys_table(2, struct.pack(">I4s", 200, b"mdta")))), "runs past its end",
                 id="key-too-long"),
    pytest.param(movie_file(box(b"moov", keys_table(1))), "runs past its end", id="key-missing"),
    pytest.param(movie_file(box(b"moov", box(b"mvhd", bytes(4), b"\x01" * 8))), "the movie header is cut off", id="mvhd-cut-off"),
    pytest.param(movie_file(box(b"moov", box(b"mvhd", b"\x01\x00\x00\x00", b"\xff" * 28))), "times are out of range",
                 id="mvhd-times"),
    pytest.param(movie_file(box(b"moov", box(b"udta", box(b"loci", bytes(8))))), "the 3GPP location is cut off",
                 id="loci-cut-off"),
    pytest.param(movie_file(box(b"uuid", XMP_UUID, b" " * (3 * 2**20))), "over the 2 MB limit", id="huge-xmp"),
    pytest.param(movie_file(box(b"free"), b"\x01\x02\x03"), "3 stray bytes", id="stray-bytes"),
])  # fmt: skip
def test_boxes_that_lie_are_unreadable(data, problem):
    assert problem in unreadable_part(data)


def test_what_comes_before_a_bad_box_is_still_read():
    data = movie_file(box(b"moov", camera_udta()), struct.pack(">I4s", 2**20, b"mdat"), bytes(64))
    findings = read_provenance(data, SHOW_LOCATION)
    assert "Canon XA60" in by_code(findings, "metadata.camera").summary
    assert "cut short" in by_code(findings, "metadata.unreadable").summary


def test_cut_and_bit_flipped_videos_never_raise():
    data = pyav_video("mov", {**APPLE_METADATA, "make": "Sony"}, metadata_tags=True)
    rng = np.random.default_rng(1)
    for cut in rng.integers(1, len(data), 24):
        read_provenance(data[:cut], SHOW_LOCATION)
    moov = data.index(b"moov") - 4
    for _ in range(48):
        flipped = bytearray(data)
        for at in rng.integers(moov, len(data), 4):  # in the movie box, where the metadata is
            flipped[at] ^= 0xFF
        read_provenance(bytes(flipped), SHOW_LOCATION)


# --- phone photos -------------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "brand"), [("HEIF", b"heic"), ("AVIF", b"avif")])
def test_heic_and_avif_are_pictures_not_videos(fmt, brand):
    data = reencode(noise_jpeg(), fmt, quality=80)
    assert data[8:12] == brand and sniff_kind(data) == "image"
    assert decode_image_bytes(data, f"photo.{fmt.lower()}").shape == (80, 96, 3)
    assert sniff_kind(b"\x00\x00\x00\x18ftypmp42" + bytes(16)) == "video"  # MP4 stays a video


def test_a_heic_photo_with_a_face_is_analysed_end_to_end(engine, hopper_jpeg_bytes):
    heic = reencode(hopper_jpeg_bytes, "HEIF", quality=85, exif=camera_exif(gps=True).tobytes())
    result = ImageDeepfakeDetector(engine=engine).detect(heic, name="IMG_0001.HEIC", explain=False)
    assert result.face_count == 1 and result.verdict in (REAL, FAKE) and result.decided_by is None
    assert (result.width, result.height) == Image.open(io.BytesIO(hopper_jpeg_bytes)).size
    assert [f.code for f in result.evidence][:1] == ["model.score"]
    assert "Canon EOS R5" in by_code(result.evidence, "metadata.camera").summary
    assert "52.37" not in json.dumps(result.to_dict())


# --- the verdict --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signed_ai_face(hopper_jpeg_bytes) -> bytes:
    return sign(hopper_jpeg_bytes, manifest("trainedAlgorithmicMedia"))


def test_a_declaration_makes_the_verdict_fake_whatever_the_model_says(engine, signed_ai_face):
    detector = ImageDeepfakeDetector(engine=engine)
    result = detector.detect(signed_ai_face, name="generated.jpg", explain=False, threshold=0.99)
    assert result.model_classification == REAL and result.classification == FAKE and result.verdict == FAKE
    assert "trainedAlgorithmicMedia" in result.decided_by.assertion
    body = result.to_dict()
    assert body["verdict"] == FAKE and body["model_classification"] == REAL
    assert body["decided_by"] == result.decided_by.assertion
    assert body["evidence"][0]["source"] == "model" and body["evidence"][1]["decides"]
    assert any("not in your trust list" in f["summary"] for f in body["evidence"])
    assert result.confidence == pytest.approx(1 - result.fake_probability)  # the model's confidence in its call
    assert verdict_sentence(result).startswith("AI-made, by the file's own declaration")
    row = result.history_row()
    assert row["decided_by"] == result.decided_by.assertion and "generated by AI" in row["evidence"]
    rejudged = detector.rejudge(result, 0.05)
    assert rejudged.verdict == FAKE and rejudged.evidence == result.evidence


def test_a_declaration_decides_even_without_a_face(engine):
    data = png_with_texts({"parameters": A1111_PARAMETERS})
    result = ImageDeepfakeDetector(engine=engine).detect(data, name="sd.png", explain=False)
    assert not result.face_found and result.verdict == FAKE and by_code(result.evidence, "model.no_face")


def test_a_camera_capture_does_not_overrule_the_model(engine, hopper_jpeg_bytes, anchors):
    captured = sign(hopper_jpeg_bytes, manifest("digitalCapture", generator="Test Camera"))
    detector = ImageDeepfakeDetector(engine=engine, provenance=anchors)
    result = detector.detect(captured, name="camera.jpg", explain=False, threshold=0.01)
    assert result.decided_by is None and result.verdict == FAKE == result.model_classification
    assert by_code(result.evidence, "c2pa.capture").leans == LEANS_REAL
    assert by_code(result.evidence, "c2pa.trusted")


def test_a_signed_ai_video_is_fake_too(engine, synthetic_clip):
    signed = sign(synthetic_clip, manifest("trainedAlgorithmicMedia"), "video/mp4")
    result = VideoDeepfakeDetector(engine=engine).detect(signed, name="clip.mp4", num_frames=3, explain=False,
                                                         threshold=0.99)  # fmt: skip
    assert result.verdict == FAKE and "trainedAlgorithmicMedia" in result.decided_by.assertion
    assert result.to_dict()["evidence"][0]["code"] == "model.score"


def test_an_unsigned_video_says_absence_is_not_evidence(engine, synthetic_clip):
    result = VideoDeepfakeDetector(engine=engine).detect(synthetic_clip, num_frames=3, explain=False)
    assert [f.code for f in result.evidence][1:] == ["metadata.edit_traces", "metadata.none"]  # FFmpeg wrote it
    assert result.decided_by is None


def test_the_model_finding_and_the_words_around_findings():
    assert model_finding(0.9, 1, "image").weight == STRONG and "the face a 90%" in model_finding(0.9, 1, "image").summary
    assert model_finding(0.5, 2, "image").weight == SUPPORTING
    assert model_finding(0.5, 0, "image").code == "model.no_face" and model_finding(0.5, 0, "video").weight == CONTEXT
    note = by_code(read_provenance(png_with_texts({"Comment": "**bold** <img src=x> [link](http://x)"})), "metadata.text")
    line = evidence_markdown(note)
    assert line.startswith(":material/info: **File metadata, context:**")
    assert "\\*\\*bold\\*\\*" in line and "\\<img" in line and "\\[link\\]" in line  # shown as written, not as markup
