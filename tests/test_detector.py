"""The image detector's API contract."""

from __future__ import annotations

import gc
import io
import json
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import ExifTags, Image

from deepfake import DetectionEngine, DetectionResult, ImageDeepfakeDetector
from deepfake.errors import ModelNotFoundError
from deepfake.media import decode_image, load_image
from deepfake.results import HISTORY_COLUMNS, FaceResult, deciding_face
from explainability.faces import MAX_OVERLAY_PIXELS, render_overlay

TIMING_KEYS = {"decode_ms", "faces_ms", "model_ms", "explanation_ms", "total_ms"}


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("overlays")


@pytest.fixture(scope="module")
def detector(engine, out_dir):
    return ImageDeepfakeDetector(engine=engine, output_dir=out_dir)


@pytest.fixture(scope="module")
def hopper_result(detector, hopper_path) -> DetectionResult:
    return detector.detect(hopper_path)


@pytest.fixture(scope="module")
def gradient_image() -> np.ndarray:
    ramp = np.linspace(0, 255, 160, dtype=np.float32)
    image = np.zeros((120, 160, 3), np.uint8)
    image[..., 0] = ramp[None, :]
    image[..., 1] = ramp[:120, None]
    image[..., 2] = 90
    return image


def test_contract(detector, hopper_result, hopper_rgb, out_dir):
    result = hopper_result
    assert detector.threshold == pytest.approx(0.6)  # the model's threshold by default
    assert result["threshold"] == pytest.approx(0.6)
    probability = result["fake_probability"]
    assert 0.0 <= probability <= 1.0
    assert result["classification"] in ("REAL", "FAKE")
    assert (result["classification"] == "FAKE") == (probability >= result["threshold"])
    expected_confidence = probability if result["classification"] == "FAKE" else 1 - probability
    assert result["confidence"] == pytest.approx(expected_confidence, abs=1e-6)
    assert result["source"] == "grace_hopper.jpg" and result["width"] == 512 and result["height"] == 600
    assert result["face_found"] and result["verdict"] == result["classification"] and result["face_count"] == 1
    assert result["model_name"] == "efficientnet_lite0-deepfake" and result["model_version"] == "test"
    assert result["cam_method"] == "gradcam" and result["explanation"]

    overlay = Path(result["heatmap_overlay_path"])
    assert overlay.parent == out_dir and overlay.suffix == ".png" and overlay.is_file()
    with Image.open(overlay) as png:
        assert png.format == "PNG" and png.size == (512, 600) and png.mode == "RGB"
        heat = np.asarray(png)
    assert not np.array_equal(heat, hopper_rgb)  # the heatmap is painted over the face

    face = result.faces[0]
    assert len(face.box) == 4 and face.landmarks.shape == (5, 2)
    assert face.detector_score > 0.9 and not face.whole_image
    assert result["fake_probability"] == pytest.approx(max(f.fake_probability for f in result.faces), abs=1e-6)
    assert face.cam is not None and face.cam.shape == (224, 224) and 0 <= face.cam.min() <= face.cam.max() <= 1
    face_dict = result["faces"][0]
    assert {"box", "landmarks", "detector_score", "fake_probability", "suspicious_regions", "explanation"} <= set(
        face_dict
    )
    assert len(face_dict["landmarks"]) == 5


def test_to_dict_is_json(hopper_result):
    data = hopper_result.to_dict()
    text = json.dumps(data)
    assert json.loads(text) == data
    assert set(data["timings"]) == TIMING_KEYS
    assert all(v >= 0 for v in data["timings"].values())
    assert data["timings"]["total_ms"] >= data["timings"]["faces_ms"]
    assert "image" not in data and "crop" not in data["faces"][0]
    assert "classification" in hopper_result and hopper_result.get("nope", 7) == 7
    assert set(hopper_result.history_row()) == set(HISTORY_COLUMNS)


def test_explain_false(detector, hopper_rgb):
    result = detector.detect(hopper_rgb, explain=False)
    assert result["heatmap_overlay_path"] is None and result["cam_method"] is None
    assert result.warnings == [] and result.faces[0].cam is None
    assert result.faces[0].explanation  # the sentence is still there
    explained = detector.detect(hopper_rgb)  # scored by the Grad-CAM pass itself
    assert explained.fake_probability == pytest.approx(result.fake_probability, abs=1e-5)


def test_every_source_type_gives_the_same_score(detector, hopper_path, hopper_jpeg_bytes, hopper_rgb, hopper_result):
    from_bytes = detector.detect(hopper_jpeg_bytes, explain=False)
    with Image.open(hopper_path) as pil:
        from_pil = detector.detect(pil, explain=False)
    from_array = detector.detect(hopper_rgb.copy(), explain=False)
    for result in (from_bytes, from_pil, from_array):
        assert result["fake_probability"] == pytest.approx(hopper_result["fake_probability"], abs=1e-4)
        assert len(result.faces) == 1
        np.testing.assert_allclose(result.faces[0].box, hopper_result.faces[0].box, atol=1e-3)
    assert from_bytes["sha256"] == hopper_result["sha256"]  # the file's bytes either way
    assert from_pil["sha256"] == from_array["sha256"]  # the same pixels
    assert from_bytes["source"] == "upload" and from_array["source"] == "image"
    assert detector.detect(hopper_jpeg_bytes, explain=False, name="mine.jpg")["source"] == "mine.jpg"


def test_no_face_scores_the_whole_image(detector, gradient_image, tmp_path):
    result = detector.detect(gradient_image, output_dir=tmp_path)
    assert result["face_found"] is False and result["verdict"] == "NO FACE" and result["face_count"] == 0
    assert len(result.faces) == 1 and result.faces[0].whole_image and result["faces"][0]["whole_image"] is True
    assert result.faces[0].box == (0.0, 0.0, 160.0, 120.0) and result.faces[0].landmarks is None
    assert any("no face" in w.lower() for w in result.warnings)
    assert result["classification"] in ("REAL", "FAKE")
    assert Path(result["heatmap_overlay_path"]).parent == tmp_path  # a per-call output_dir wins
    with Image.open(result["heatmap_overlay_path"]) as png:
        assert png.size == (160, 120)


def _face(probability: float, cut_off: bool = False) -> FaceResult:
    return FaceResult(box=(0, 0, 10, 10), landmarks=None, detector_score=1.0, fake_probability=probability,
                      cut_off=cut_off)  # fmt: skip


def test_a_face_cut_off_by_the_edge_decides_only_when_no_whole_face_does():
    whole, cut = _face(0.3), _face(0.9, cut_off=True)
    assert deciding_face([cut, whole]) is whole
    assert deciding_face([cut, _face(0.95, cut_off=True)]).fake_probability == 0.95  # all cut off: the worst


def test_cut_off_face_is_flagged_and_set_aside(detector, hopper_rgb, tmp_path):
    whole = detector.detect(hopper_rgb, explain=False).faces[0]
    x1, _, x2, _ = whole.box
    # The photo, then a copy whose face the right edge cuts through.
    picture = np.ascontiguousarray(np.hstack([hopper_rgb, hopper_rgb[:, : int(x1 + 0.75 * (x2 - x1))]]))
    result = detector.detect(picture, threshold=0.0, output_dir=tmp_path)
    assert len(result.faces) == 2
    [inside] = [f for f in result.faces if not f.cut_off]
    [cut] = [f for f in result.faces if f.cut_off]
    assert inside.box[2] <= hopper_rgb.shape[1] < cut.box[0]
    assert sorted(f["cut_off"] for f in result["faces"]) == [False, True]  # in the JSON too
    assert result.fake_probability == inside.fake_probability  # the whole face decides, whatever the cut one scores
    assert any("cut off" in w for w in result.warnings) and "cut off by the picture's edge" in result.explanation


def test_threshold_zero_means_fake_with_regions(detector, hopper_rgb, astronaut_rgb):
    for image in (hopper_rgb, astronaut_rgb):
        result = detector.detect(image, threshold=0.0)
        assert result["classification"] == "FAKE" and result["threshold"] == 0.0
        assert result["confidence"] == pytest.approx(result["fake_probability"], abs=1e-6)
        for face in result.faces:
            assert face.suspicious_regions, "a FAKE face must show where the model looked"
            x1, y1, x2, y2 = face.suspicious_regions[0].box
            assert 0 <= x1 < x2 <= image.shape[1] and 0 <= y1 < y2 <= image.shape[0]
            assert face.suspicious_regions[0].parts  # named after face parts
        assert "Manipulation traces" in result["explanation"]


def test_threshold_one_means_real_without_regions(detector, hopper_rgb):
    result = detector.detect(hopper_rgb, threshold=1.0)
    assert result["fake_probability"] < 1.0
    assert result["classification"] == "REAL"
    assert result["confidence"] == pytest.approx(1 - result["fake_probability"], abs=1e-6)
    assert all(face.suspicious_regions == [] for face in result.faces)
    assert result["heatmap_overlay_path"] is not None  # the heatmap is still drawn, without boxes


def test_detector_threshold_is_the_default_for_detect(engine, hopper_rgb):
    strict = ImageDeepfakeDetector(engine=engine, threshold=0.0)
    assert strict.detect(hopper_rgb, explain=False)["classification"] == "FAKE"
    assert strict.detect(hopper_rgb, explain=False, threshold=1.0)["classification"] == "REAL"


def test_rejudge(detector, hopper_result):
    before = hopper_result.to_dict()
    fake = detector.rejudge(hopper_result, 0.0)
    assert fake["classification"] == "FAKE" and fake["threshold"] == 0.0
    assert fake.faces[0].suspicious_regions and fake["explanation"] != ""
    assert fake["fake_probability"] == hopper_result["fake_probability"]
    real = detector.rejudge(fake, 1.0)
    assert real["classification"] == "REAL" and real.faces[0].suspicious_regions == []
    assert hopper_result.to_dict() == before  # the original result is left as it was


def test_gradcam_plus_plus(engine, hopper_rgb, tmp_path):
    detector = ImageDeepfakeDetector(engine=engine, cam_method="gradcam++", output_dir=tmp_path)
    result = detector.detect(hopper_rgb, threshold=0.0)
    assert result["cam_method"] == "gradcam++"
    assert Path(result["heatmap_overlay_path"]).is_file()
    assert result.faces[0].cam is not None and result.faces[0].cam.max() > result.faces[0].cam.min()
    assert detector.detect(hopper_rgb, cam_method="gradcam", explain=False)["cam_method"] is None


def test_unknown_cam_method(engine, detector, hopper_rgb):
    with pytest.raises(ValueError, match="scorecam"):
        ImageDeepfakeDetector(engine=engine, cam_method="scorecam")
    with pytest.raises(ValueError, match="gradcam"):
        detector.detect(hopper_rgb, cam_method="scorecam")


def test_default_model_missing(monkeypatch, tmp_path):
    import deepfake.loading

    monkeypatch.setattr(deepfake.loading, "DEFAULT_MODEL_PATH", tmp_path / "models" / "image_model.pth")
    with pytest.raises(ModelNotFoundError) as excinfo:
        ImageDeepfakeDetector()
    message = str(excinfo.value)
    assert "train" in message.lower() and "image_model.pth" in message


def test_temporary_output_folder_goes_with_the_detector(engine, hopper_rgb, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    detector = ImageDeepfakeDetector(engine=engine)
    overlay = Path(detector.detect(hopper_rgb)["heatmap_overlay_path"])
    assert overlay.is_file() and overlay.parent.parent == tmp_path and overlay.parent.name.startswith("deepfake-")
    del detector
    gc.collect()
    assert not overlay.parent.exists()


def test_concurrent_calls_match_sequential(detector, hopper_rgb, astronaut_rgb, tmp_path):
    images = [hopper_rgb, astronaut_rgb, hopper_rgb, astronaut_rgb]
    sequential = [detector.detect(image, output_dir=tmp_path) for image in images[:2]] * 2
    barrier = threading.Barrier(len(images))

    def run(image):
        barrier.wait()
        return detector.detect(image, output_dir=tmp_path)

    with ThreadPoolExecutor(len(images)) as pool:
        concurrent = list(pool.map(run, images))
    for alone, together in zip(sequential, concurrent):
        assert together["fake_probability"] == pytest.approx(alone["fake_probability"], abs=1e-5)
        assert [f.fake_probability for f in together.faces] == pytest.approx(
            [f.fake_probability for f in alone.faces], abs=1e-5
        )
        for a, b in zip(alone.faces, together.faces):
            np.testing.assert_allclose(a.cam, b.cam, atol=1e-4)  # no hook saw another request
    assert concurrent[0]["sha256"] != concurrent[1]["sha256"]
    # The random model is not constant, so a mix-up between requests would show.
    assert abs(concurrent[0]["fake_probability"] - concurrent[1]["fake_probability"]) > 1e-3


def test_flip_average_scores_a_face_and_its_mirror_alike(random_checkpoint, hopper_rgb, tmp_path):
    checkpoint = torch.load(random_checkpoint, weights_only=True)
    checkpoint["config"]["flip_average"] = True
    torch.save(checkpoint, tmp_path / "flip.pth")
    flip, plain = DetectionEngine.load(tmp_path / "flip.pth", device="cpu"), DetectionEngine.load(random_checkpoint)
    crop = flip.crop(hopper_rgb, (174, 120, 356, 340)).pixels
    mirror = np.ascontiguousarray(crop[:, ::-1])
    assert abs(plain.score([crop])[0] - plain.score([mirror])[0]) > 1e-4  # the network itself is not symmetric
    assert flip.score([crop])[0] == pytest.approx(flip.score([mirror])[0], abs=1e-5)
    scores, cams = flip.score_and_cams([crop])  # the explaining path scores the same way
    assert scores.fake[0] == pytest.approx(flip.score([crop])[0], abs=1e-5) and cams.shape == (1, 224, 224)
    calls = []
    handle = flip.model.module.register_forward_hook(lambda *_: calls.append(1))
    try:
        flip.cams([crop])
    finally:
        handle.remove()
    assert len(calls) == 1  # maps alone need no mirror-image pass


def test_a_strongly_compressed_jpeg_is_flagged(detector, hopper_rgb):
    def jpeg(quality: int) -> bytes:
        data = io.BytesIO()
        Image.fromarray(hopper_rgb).save(data, "JPEG", quality=quality)
        return data.getvalue()

    low, high = detector.detect(jpeg(35), explain=False), detector.detect(jpeg(90), explain=False)
    assert low.jpeg_quality == 35 and high.jpeg_quality == 90 and low.to_dict()["jpeg_quality"] == 35
    assert any("compressed JPEG (quality about 35)" in w for w in low.warnings)
    assert not any("compressed" in w for w in high.warnings)
    assert detector.detect(hopper_rgb, explain=False).jpeg_quality is None  # pixels have no file history


def _phone_jpeg(face: np.ndarray, face_height: int, left: int, top: int, turned: bool = False) -> bytes:
    """A 12 MP phone-like JPEG (4000x3000 as shown): ``face`` scaled to ``face_height`` over a soft
    texture; ``turned``, it is stored on its side with an EXIF orientation, as phones do."""
    rng = np.random.default_rng(0)
    noise = cv2.GaussianBlur(rng.integers(0, 255, (188, 250, 3), dtype=np.uint8), (0, 0), 1.5)
    canvas = cv2.resize(noise, (4000, 3000), interpolation=cv2.INTER_CUBIC)
    width = round(face.shape[1] * face_height / face.shape[0])
    canvas[top : top + face_height, left : left + width] = cv2.resize(face, (width, face_height), cv2.INTER_CUBIC)
    exif = Image.Exif()
    if turned:
        canvas = np.ascontiguousarray(np.rot90(canvas))  # shown after turning 90 degrees clockwise
        exif[ExifTags.Base.Orientation] = 6
    data = io.BytesIO()
    Image.fromarray(canvas).save(data, "JPEG", quality=92, exif=exif.tobytes())
    return data.getvalue()


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return ix * iy / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy)


@pytest.mark.parametrize("turned", [False, True])
def test_a_big_jpeg_is_analysed_from_a_reduced_decode_in_its_own_coordinates(detector, engine, hopper_rgb, turned):
    data = _phone_jpeg(hopper_rgb, 2400, 1000, 300, turned)  # a face about 840 px high
    result = detector.detect(data, name="phone.jpg")
    full = detector.detect(load_image(data), name="phone")  # the same picture decoded whole, as before
    assert (result.width, result.height) == (4000, 3000)
    half = decode_image(data, "phone.jpg", min_pixels=MAX_OVERLAY_PIXELS).pixels
    assert half.shape == (1500, 2000, 3) and np.array_equal(result.image, half)  # kept at the size decoded
    (face,), (reference,) = result.faces, full.faces
    np.testing.assert_array_equal(face.crop, engine.crop(half, tuple(v / 2 for v in face.box)).pixels)  # cropped there
    assert _iou(face.box, reference.box) > 0.98
    np.testing.assert_allclose(face.landmarks, reference.landmarks, atol=3)
    np.testing.assert_allclose(face.crop_to_image, reference.crop_to_image, rtol=0.01, atol=3)
    assert result.classification == full.classification
    # Measured 0.006 and 0.002: the crop spans over twice the model's input at half size, so it is
    # resampled much as from the whole picture (the shipped model moves up to 0.05 on a 1 px shift of the box).
    assert result.fake_probability == pytest.approx(full.fake_probability, abs=0.02)
    overlay, expected = (np.asarray(Image.open(r.heatmap_overlay_path), np.int16) for r in (result, full))
    assert overlay.shape == expected.shape and overlay.shape[0] * overlay.shape[1] <= MAX_OVERLAY_PIXELS
    assert np.abs(overlay - expected).mean() < 2  # the heatmap lies where it does on the whole picture


def test_a_small_face_in_a_big_jpeg_is_cropped_at_full_resolution(detector, engine, hopper_rgb):
    data = _phone_jpeg(hopper_rgb, 600, 2600, 1900)  # a face about 210 px high: its crop spans 137 px at half size
    result = detector.detect(data, name="phone.jpg")
    (face,) = result.faces
    assert (result.width, result.height) == (4000, 3000)
    assert 2600 < face.box[0] < face.box[2] < 3112 and 1900 < face.box[1] < face.box[3] < 2500  # where it was put
    whole = load_image(data)
    np.testing.assert_array_equal(face.crop, engine.crop(whole, face.box).pixels)  # from the full-size decode
    assert face.crop_to_image[0, 0] < 2  # 273 picture px for the model's 224
    assert result.image.shape == (1500, 2000, 3)  # kept and drawn at display size all the same
    full = detector.detect(whole, name="phone", explain=False)
    # Measured 0.016, all from the box: found on the half-size decode, it sits a fraction of a pixel off.
    assert result.fake_probability == pytest.approx(full.fake_probability, abs=0.03)


def test_a_face_cut_by_the_right_edge_of_a_big_picture_keeps_its_heatmap_unsquashed():
    picture = np.full((2400, 3000, 3), 128, np.uint8)  # 7.2 MP: drawn at about half size
    crop_to_image = np.array([[5.0, 0.0, 2700.0], [0.0, 5.0, 800.0]], np.float32)  # its square ends at x = 3200
    face = FaceResult(box=(2760.0, 860.0, 3000.0, 1240.0), landmarks=None, detector_score=0.9, fake_probability=0.9,
                      crop=np.zeros((100, 100, 3), np.uint8), crop_to_image=crop_to_image,
                      cam=np.ones((100, 100), np.float32))  # fmt: skip
    drawn = render_overlay(picture, [face])
    row = drawn[round(1000 * drawn.shape[0] / 2400)]
    assert (row[-1] != 128).any()  # the face goes on past the edge, and so does its heat (it fades out at x = 3200)
    reduced = render_overlay(picture[::4, ::4], [face], shape=(2400, 3000))  # a quarter-size decode, same coordinates
    assert reduced.shape == drawn.shape and np.abs(reduced.astype(int) - drawn).max() <= 1
