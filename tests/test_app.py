"""The dashboard driven by Streamlit's AppTest: uploads, verdicts, history, threshold, errors, the
missing-model message and the model performance view."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from provenance_samples import LEAKED_COORDINATES, camera_exif, reencode, signed_ai_photo_with_gps
from streamlit.testing.v1 import AppTest

from deepfake.evaluation.metrics import summarize, threshold_sweep
from deepfake.figures import encode_png
from deepfake.provenance import EVIDENCE_RULES

APP = str(Path(__file__).resolve().parent.parent / "app.py")
BADGE = re.compile(r"^### <span[^>]*>(?P<verdict>[A-Z ]+)</span> (?P<name>.+)$")
CORRUPT_JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4


@pytest.fixture
def empty_reports(tmp_path) -> Path:
    folder = tmp_path / "reports"
    folder.mkdir()
    return folder


@pytest.fixture
def app(monkeypatch, random_checkpoint, empty_reports) -> AppTest:
    monkeypatch.setenv("DEEPFAKE_MODEL", str(random_checkpoint))
    monkeypatch.setenv("DEEPFAKE_REPORTS", str(empty_reports))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at


def cards(at: AppTest) -> list[tuple[str, str]]:
    """(verdict, file name) of every result card, top to bottom: newest first, a batch in upload order."""
    found = [BADGE.match(m.value) for m in at.markdown]
    return [(m["verdict"], m["name"].replace("\\", "")) for m in found if m]


def history(at: AppTest):
    return next(df.value for df in at.dataframe if "file_name" in df.value.columns)


def upload(at: AppTest, *files: tuple[str, bytes, str]) -> AppTest:
    at.file_uploader(key="uploads").set_value(list(files))
    at.run()
    assert not at.exception, at.exception
    return at


def test_upload_shows_a_verdict_and_enters_the_history(app, hopper_jpeg_bytes):
    assert cards(app) == []
    assert any("Nothing analysed yet" in i.value for i in app.info)
    upload(app, ("hopper.jpg", hopper_jpeg_bytes, "image/jpeg"))
    [(verdict, name)] = cards(app)
    assert name == "hopper.jpg" and verdict in ("REAL", "FAKE")
    assert any(m.label == "Faces found" and m.value == "1" for m in app.metric)
    table = history(app)
    assert list(table["file_name"]) == ["hopper.jpg"] and list(table["verdict"]) == [verdict]
    assert table["sha256"][0] and table["model_version"][0] == "test" and table["faces"][0] == 1

    app.button(key="try-real").click().run()  # the same upload is not analysed twice on reruns
    assert [n for _, n in cards(app)] == ["sample_real_grace_hopper.jpg", "hopper.jpg"]
    assert len(history(app)) == 2


def test_threshold_change_relabels_without_detecting_again(app, hopper_jpeg_bytes):
    upload(app, ("hopper.jpg", hopper_jpeg_bytes, "image/jpeg"))
    analysis = app.session_state["analyses"][0]
    probability = analysis.result.fake_probability
    low, high = int(probability * 100) - 1, int(probability * 100) + 2  # either side of the score
    app.slider(key="threshold").set_value(low).run()
    assert cards(app) == [("FAKE", "hopper.jpg")]
    assert history(app)["verdict"][0] == "FAKE" and history(app)["threshold"][0] == pytest.approx(low / 100)
    app.slider(key="threshold").set_value(high).run()
    assert cards(app) == [("REAL", "hopper.jpg")]
    assert app.session_state["analyses"][0].result is analysis.result  # relabelled, not re-analysed


def test_heatmap_method_change_reexplains_that_result_only(app, hopper_jpeg_bytes):
    upload(app, ("a.jpg", hopper_jpeg_bytes, "image/jpeg"), ("b.jpg", hopper_jpeg_bytes, "image/jpeg"))
    app.slider(key="threshold").set_value(5).run()  # FAKE, so suspicious regions are described
    first, second = app.session_state["analyses"]
    assert not any("**In words:**" in m.value for m in app.markdown)  # heatmap views start closed and undrawn
    for analysis in (first, second):
        app.session_state[f"heatmap-{analysis.id}"] = True  # the user opens both views
    app.run()
    app.radio(key=f"method-{first.id}").set_value("gradcam++").run()
    assert not app.exception
    assert set(first.explained) == {("gradcam", "fake"), ("gradcam++", "fake")} and set(second.explained) == {("gradcam", "fake")}
    assert first.view[1].cam_method == "gradcam++" and second.view[1].cam_method == "gradcam"
    assert sum("**In words:**" in m.value for m in app.markdown) == 2


def test_a_corrupt_upload_gets_its_own_error_and_the_rest_goes_on(app, hopper_jpeg_bytes, synthetic_clip):
    upload(app, ("broken.jpg", CORRUPT_JPEG, "image/jpeg"), ("hopper.jpg", hopper_jpeg_bytes, "image/jpeg"),
           ("notes.mp4", b"just some text, not a video", "video/mp4"))  # fmt: skip
    assert [n for _, n in cards(app)] == ["broken.jpg", "hopper.jpg", "notes.mp4"]
    verdicts = dict((n, v) for v, n in cards(app))
    assert verdicts["broken.jpg"] == verdicts["notes.mp4"] == "ERROR" and verdicts["hopper.jpg"] in ("REAL", "FAKE")
    errors = [e.value for e in app.error]
    assert any("broken.jpg" in e and "damaged" in e for e in errors)
    assert any("notes.mp4" in e and "not an image or a video" in e for e in errors)

    app.file_uploader(key="uploads").upload("clip.mp4", synthetic_clip, "video/mp4").run()  # the next upload
    assert not app.exception
    assert cards(app)[0][1] == "clip.mp4" and cards(app)[0][0] in ("REAL", "FAKE")
    assert len(cards(app)) == 4
    assert any("over time" in m.value for m in app.markdown)  # the video's timeline
    table = history(app)
    assert list(table["verdict"]).count("ERROR") == 2 and table["frames"][0] > 1
    assert any(m.label == "Could not analyse" and m.value == "2" for m in app.metric)


def test_samples(app):
    app.button(key="try-real").click().run()
    app.button(key="try-fake").click().run()
    assert not app.exception
    assert [n for _, n in cards(app)] == ["sample_fake_grace_hopper.png", "sample_real_grace_hopper.jpg"]


def test_clear_history(app, hopper_jpeg_bytes):
    upload(app, ("hopper.jpg", hopper_jpeg_bytes, "image/jpeg"))
    app.button(key="clear-history").click().run()
    assert cards(app) == [] and app.session_state["analyses"] == []
    app.run()
    assert cards(app) == [], "uploads still in the uploader are not analysed again"


def test_missing_model_gives_instructions_not_a_crash(monkeypatch, tmp_path):
    monkeypatch.setenv("DEEPFAKE_MODEL", str(tmp_path / "no_model_here.pth"))
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception
    assert "no_model_here.pth" in at.error[0].value and "python -m deepfake.train" in at.error[0].value
    assert at.code[0].value == "python -m deepfake.train --data ../shared/data/faces --out models/image_model.pth"
    assert not at.file_uploader


def test_model_performance_view(monkeypatch, app, empty_reports):
    assert any("No evaluation report yet" in i.value for i in app.info)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = np.clip(labels * 0.4 + rng.random(200) * 0.6, 0, 1)
    metrics = {
        "model": {"name": "efficientnet_lite0-deepfake", "version": "test", "trained_on": [], "temperature": 1.0},
        "protocol": {"data": "faces", "split": "val", "threshold": 0.6},
        "image_level": summarize(labels, scores, 0.6), "face_level": summarize(labels, scores, 0.6),
        "threshold_sweep": threshold_sweep(labels, scores),
        "by_source": {"lfw": summarize(labels, scores, 0.6)}, "by_group": {}, "plots": ["roc.png"],
        "robustness": {"as given": summarize(labels, scores, 0.6), "JPEG quality 50": summarize(labels, scores * 0.9, 0.6)},
    }  # fmt: skip
    (empty_reports / "metrics.json").write_text(json.dumps(metrics, default=float))
    (empty_reports / "roc.png").write_bytes(encode_png(np.full((40, 40, 3), 200, np.uint8)))
    (empty_reports / "THRESHOLD_OPTIMIZATION_REPORT.md").write_text("# Threshold optimization report\n\nKeep 0.60.")
    app.run()
    assert not app.exception
    tables = [df.value for df in app.dataframe]
    levels = next(t for t in tables if "auc" in t.columns and "Per file" in t.index)
    assert levels.loc["Per file", "auc"] == pytest.approx(metrics["image_level"]["auc"])
    confusion = next(t for t in tables if "Called FAKE" in t.columns)
    assert confusion.to_numpy().sum() == 200
    assert any("Keep 0.60" in m.value for m in app.markdown)
    assert "lfw" in next(t for t in tables if "fnr" in t.columns and "lfw" in t.index).index
    assert "JPEG quality 50" in next(t for t in tables if "as given" in t.index).index
    # The sidebar's held-out figures say whose they are when the report is another model's.
    held_out = next(m.value for m in app.sidebar.markdown if m.value.startswith("Measured on held-out files"))
    assert "not the loaded one" not in held_out and not app.warning
    confusion = metrics["image_level"]["confusion"]
    assert f"False alarms: {confusion['fp']} of {confusion['fp'] + confusion['tn']} (" in held_out
    metrics["model"]["version"] = "0.9.9"
    (empty_reports / "metrics.json").write_text(json.dumps(metrics, default=float))
    app.run()
    held_out = next(m.value for m in app.sidebar.markdown if m.value.startswith("Measured on held-out files"))
    assert "for version `0.9.9`, not the loaded one" in held_out
    assert any("not the loaded test" in w.value for w in app.warning)

    (empty_reports / "metrics.json").write_text("{ not json")
    app.run()
    assert not app.exception and any("No evaluation report yet" in i.value for i in app.info)


def test_two_sessions_keep_separate_histories(monkeypatch, random_checkpoint, empty_reports, hopper_jpeg_bytes):
    monkeypatch.setenv("DEEPFAKE_MODEL", str(random_checkpoint))
    monkeypatch.setenv("DEEPFAKE_REPORTS", str(empty_reports))
    first, second = AppTest.from_file(APP, default_timeout=120), AppTest.from_file(APP, default_timeout=120)
    first.run()
    second.run()
    upload(first, ("first.jpg", hopper_jpeg_bytes, "image/jpeg"))
    second.button(key="try-real").click().run()
    assert [n for _, n in cards(first)] == ["first.jpg"]
    assert [n for _, n in cards(second)] == ["sample_real_grace_hopper.jpg"]
    assert list(history(first)["file_name"]) == ["first.jpg"]


def test_evidence_panel_for_a_signed_ai_photo_and_a_phone_photo(app, hopper_jpeg_bytes):
    heic = reencode(hopper_jpeg_bytes, "HEIF", quality=85, exif=camera_exif(gps=True).tobytes())
    upload(app, ("generated.jpg", signed_ai_photo_with_gps(hopper_jpeg_bytes), "image/jpeg"),
           ("IMG_0001.HEIC", heic, "image/heic"))  # fmt: skip
    assert cards(app)[0] == ("FAKE", "generated.jpg") and cards(app)[1][1] == "IMG_0001.HEIC"
    decided = [e.value for e in app.error]
    assert len(decided) == 1 and "decides the verdict" in decided[0] and "trainedAlgorithmicMedia" in decided[0]
    lines = " ".join(m.value for m in app.markdown)
    assert "not in your trust list" in lines and "Canon EOS R5" in lines and "taken \\(GPS\\)" in lines
    assert sum(EVIDENCE_RULES in c.value for c in app.caption) == 2  # one per card
    assert any("AI-made, by the file's own declaration" in m.value for m in app.markdown)
    raw = json.dumps([j.value for j in app.json])
    assert "c2pa.ai_generated" in raw and not any(c in raw + lines for c in LEAKED_COORDINATES)
    assert "trainedAlgorithmicMedia" in history(app)["decided_by"][0]

