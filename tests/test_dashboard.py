"""The dashboard's library side, without Streamlit: analyses, re-judging and re-explaining,
history tables and statistics, chart data, the evaluation reader and the plain-language texts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deepfake.figures import encode_png, gauge_png, timeline_png
from deepfake.interfaces.dashboard import (
    Workbench,
    demote_headings,
    held_out_summary,
    history_chart,
    history_table,
    load_evaluation,
    model_file_stamp,
    summary_stats,
    timeline_chart,
    timeline_table,
)
from deepfake.results import HISTORY_COLUMNS
from deepfake.wording import markdown_literal, verdict_sentence


@pytest.fixture(scope="module")
def bench(engine) -> Workbench:
    return Workbench(engine)


@pytest.fixture(scope="module")
def photo(bench, hopper_jpeg_bytes):
    return bench.analyze(hopper_jpeg_bytes, "hopper.jpg", threshold=0.6)


@pytest.fixture(scope="module")
def clip(bench, synthetic_clip):
    progress: list[float] = []
    analysis = bench.analyze(synthetic_clip, "clip.mp4", threshold=0.6, num_frames=6,
                             progress=lambda fraction, message: progress.append(fraction))  # fmt: skip
    return analysis, progress


def test_a_photo(photo):
    assert photo.ok and photo.media_type == "image" and photo.error == ""
    assert photo.result.face_count == 1 and photo.result.cam_method == "gradcam"
    assert photo.result.heatmap_overlay_path is None, "no path into a folder that no longer exists"
    assert photo.annotated_video is None and photo.explained == {("gradcam", "fake"): photo.result}


def test_a_video_keeps_what_is_shown(clip):
    analysis, progress = clip
    result = analysis.result
    assert analysis.ok and analysis.media_type == "video" and analysis.annotated_video[4:8] == b"ftyp"
    assert progress[0] == 0.0 and progress[-1] == 1.0 and progress == sorted(progress)
    shown = set(result.suspicious_frames)
    assert shown and all((frame.image is not None) == (i in shown) for i, frame in enumerate(result.timeline))
    assert result.annotated_video_path is None and all(f.heatmap_overlay_path is None for f in result.timeline)


@pytest.mark.parametrize(("data", "name", "words"), [
    (b"", "empty.jpg", "empty"),
    (b"\xff\xd8\xff\xe0" + bytes(300), "broken.jpg", "damaged"),
    (b"hello, this is text", "notes.png", "not an image or a video"),
    (b"\x00\x00\x00\x18ftypmp42" + bytes(200), "broken.mp4", "video"),
])  # fmt: skip
def test_bad_files_become_failed_analyses(bench, data, name, words):
    analysis = bench.analyze(data, name, threshold=0.6)
    assert not analysis.ok and words in analysis.error and name in analysis.error
    row = analysis.history_row(0.6)
    assert list(row) == list(HISTORY_COLUMNS) and row["verdict"] == "ERROR" and row["file_name"] == name
    assert row["sha256"] == analysis.sha256 and len(row["sha256"]) == 64


def test_view_relabels_and_reexplains_without_detecting(bench, photo):
    probability = photo.result.fake_probability
    low = bench.view(photo, probability - 0.01)
    assert low.verdict == "FAKE" and low.faces[0].fake_probability == probability
    assert bench.view(photo, probability - 0.01) is low, "the same view is not computed twice"
    high = bench.view(photo, probability + 0.01)
    assert high.verdict == "REAL" and not high.faces[0].suspicious_regions
    assert photo.result.threshold == 0.6, "the analysis itself is never changed"

    plus = bench.view(photo, probability - 0.01, "gradcam++")
    assert plus.cam_method == "gradcam++" and set(photo.explained) == {("gradcam", "fake"), ("gradcam++", "fake")}
    assert not np.allclose(plus.faces[0].cam, photo.result.faces[0].cam)
    assert plus.fake_probability == probability and plus.verdict == "FAKE"
    assert photo.result.faces[0].cam is photo.explained[("gradcam", "fake")].faces[0].cam


def test_video_view(bench, clip):
    analysis, _ = clip
    probability = analysis.result.fake_probability
    low = bench.view(analysis, probability - 0.01, "gradcam++")
    assert low.verdict == "FAKE" and low.cam_method == "gradcam++"
    assert low.explanation.startswith("Most suspicious frame at")
    top = low.timeline[low.suspicious_frames[0]]
    assert f"({top.fake_probability:.0%} fake on its own)" in low.explanation
    assert top.faces[0].cam is not None and top.faces[0].explanation
    assert bench.view(analysis, 0.99).verdict == "REAL"
    assert analysis.result.threshold == 0.6


def test_no_face_photo_is_flagged(bench):
    ramp = np.tile(np.linspace(0, 255, 200, dtype=np.uint8)[None, :, None], (150, 1, 3))
    analysis = bench.analyze(encode_png(ramp), "ramp.png", threshold=0.6)
    assert analysis.result.verdict == "NO FACE" and analysis.result.face_count == 0
    assert "No face found" in verdict_sentence(analysis.result) and "caution" in verdict_sentence(analysis.result)


def test_history_table_and_statistics(bench, photo, clip):
    failed = bench.analyze(b"nothing", "x.jpg", threshold=0.6)
    rows = [photo.history_row(0.05), clip[0].history_row(0.05), failed.history_row(0.05)]
    assert [r["verdict"] for r in rows] == ["FAKE", "FAKE", "ERROR"] and rows[0]["threshold"] == 0.05
    table = history_table(rows)
    assert list(table.columns) == list(HISTORY_COLUMNS) and str(table["analyzed_at"].dt.tz) == "UTC"
    assert table["fake_probability"].isna().tolist() == [False, False, True]
    assert table["frames"].isna().tolist() == [True, False, True] and table["frames"][1] == 6
    stats = summary_stats(rows)
    assert stats["files"] == 3 and stats["verdicts"] == {"FAKE": 2, "REAL": 0, "NO FACE": 0, "ERROR": 1}
    assert stats["mean_fake_probability"] == pytest.approx(
        (photo.result.fake_probability + clip[0].result.fake_probability) / 2, abs=1e-5)
    assert summary_stats([])["mean_fake_probability"] is None
    assert history_chart(table, 0.05).to_dict()["layer"]


def test_timeline_data(clip):
    result = clip[0].result
    table = timeline_table(result)
    assert len(table) == 6 and table["time_s"].is_monotonic_increasing
    assert table["most_suspicious"].sum() == len(result.suspicious_frames)
    assert set(table["label"]) <= {"REAL", "FAKE", "NO FACE"}
    assert timeline_chart(table, 0.6).to_dict()["layer"]


def test_pictures_are_pngs():
    assert gauge_png(0.7, 0.6).startswith(b"\x89PNG") and gauge_png(0.0, 0.05).startswith(b"\x89PNG")
    assert timeline_png([0, 1, 2], [0.2, 0.9, 0.5], 0.6, [1]).startswith(b"\x89PNG")


def test_evaluation_reader(tmp_path):
    assert load_evaluation(tmp_path) is None
    (tmp_path / "metrics.json").write_text("[1, 2]")
    assert load_evaluation(tmp_path) is None
    (tmp_path / "metrics.json").write_text(json.dumps({"image_level": {"auc": 0.9}}))
    (tmp_path / "roc.png").write_bytes(gauge_png(0.5, 0.5))
    evaluation = load_evaluation(tmp_path)
    assert evaluation.metrics["image_level"]["auc"] == 0.9
    assert list(evaluation.plots) == ["roc"] and evaluation.threshold_report is None


def test_held_out_summary_gives_counts_so_a_small_rate_does_not_read_as_zero():
    level = {"auc": 0.9774, "fpr": 2 / 421, "fnr": 68 / 302, "confusion": {"tn": 419, "fp": 2, "fn": 68, "tp": 234}}
    assert held_out_summary(level) == ["AUC 0.98 (1 is perfect, 0.5 a coin toss)",
                                       "False alarms: 2 of 421 (0.5%) of real files called FAKE",
                                       "Missed fakes: 68 of 302 (22.5%) of fakes called REAL"]  # fmt: skip
    # An older report without counts still says its rates, to a tenth of a percent.
    assert held_out_summary({"fpr": 0.0048})[:2] == ["AUC – (1 is perfect, 0.5 a coin toss)",
                                                     "False alarms: 0.5% of real files called FAKE"]  # fmt: skip


def test_texts():
    assert markdown_literal("a_b*[c]$x<y>&.jpg") == r"a\_b\*\[c\]\$x\<y\>\&\.jpg"
    assert demote_headings("# Title\n\n## Part\ntext # not a heading", 2) == "### Title\n\n#### Part\ntext # not a heading"


def test_model_file_stamp_changes_with_the_file(random_checkpoint, tmp_path):
    assert model_file_stamp(str(tmp_path / "missing.pth")) == 0.0
    assert model_file_stamp(str(random_checkpoint)) == random_checkpoint.stat().st_mtime > 0
