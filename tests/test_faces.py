from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

from deepfake.engine import DetectionEngine
from deepfake.errors import CorruptModelError, ModelNotFoundError
from deepfake.faces import (
    LANDMARK_NAMES,
    YUNET_PATH,
    FaceDetector,
    crop_face,
    face_detector,
    outside_fraction,
    whole_image_box,
)


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def detector(engine):
    return engine.face_detector


@pytest.fixture(scope="module")
def hopper_faces(detector, hopper_rgb):
    return detector.detect(hopper_rgb)


def test_one_face_in_grace_hopper(hopper_faces, hopper_rgb):
    assert len(hopper_faces) == 1
    face = hopper_faces[0]
    x1, y1, x2, y2 = face.box
    height, width = hopper_rgb.shape[:2]
    assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
    assert 100 < x2 - x1 < 400 and 100 < y2 - y1 < 400
    assert face.score > 0.9
    assert face.landmarks.shape == (5, 2) == (len(LANDMARK_NAMES), 2)
    assert ((face.landmarks[:, 0] > x1) & (face.landmarks[:, 0] < x2)).all()
    assert ((face.landmarks[:, 1] > y1) & (face.landmarks[:, 1] < y2)).all()
    as_dict = face.to_dict()
    assert len(as_dict["box"]) == 4 and len(as_dict["landmarks"]) == 5 and 0.9 < as_dict["detector_score"] <= 1


def test_landmark_order(hopper_faces):
    left_eye, right_eye, nose, mouth_left, mouth_right = hopper_faces[0].landmarks
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])  # eyes above the mouth
    assert left_eye[0] < right_eye[0] and mouth_left[0] < mouth_right[0]


def test_astronaut_face(detector, astronaut_rgb):
    faces = detector.detect(astronaut_rgb)
    assert len(faces) >= 1
    face = faces[0]  # largest first
    assert face.score > 0.9
    # Eileen Collins' face is in the upper middle of the picture.
    cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
    assert 100 < cx < 300 and 30 < cy < 200


def test_blank_image_has_no_face(detector):
    assert detector.detect(np.full((120, 160, 3), 128, np.uint8)) == []


def test_detect_batch_of_identical_frames(detector, hopper_rgb):
    batch = detector.detect_batch([hopper_rgb] * 3)
    assert len(batch) == 3
    single = detector.detect(hopper_rgb)
    for faces in batch:
        assert len(faces) == len(single) == 1
        np.testing.assert_allclose(faces[0].box, single[0].box, atol=1e-3)
        np.testing.assert_allclose(faces[0].landmarks, single[0].landmarks, atol=1e-3)
        assert faces[0].score == pytest.approx(single[0].score, abs=1e-5)
    assert detector.detect_batch([]) == []


def test_detect_batch_of_mixed_sizes(detector, hopper_rgb):
    batch = detector.detect_batch([hopper_rgb, np.full((50, 70, 3), 128, np.uint8)])
    assert [len(faces) for faces in batch] == [1, 0]


def test_large_image_is_searched_downscaled_and_mapped_back(detector, hopper_rgb, hopper_faces):
    import cv2

    big = cv2.resize(hopper_rgb, (1024, 1200), interpolation=cv2.INTER_LINEAR)  # over max_side
    faces = detector.detect(big)
    assert len(faces) == 1
    scaled = np.array(hopper_faces[0].box) * 2
    assert _iou(faces[0].box, scaled) > 0.8  # YuNet sees 546x640 pixels here, not 512x600: close, not equal
    np.testing.assert_allclose(faces[0].landmarks, hopper_faces[0].landmarks * 2, atol=20)


def test_face_in_a_large_canvas_maps_back_to_where_it_was_pasted(detector, hopper_rgb, hopper_faces):
    canvas = np.full((1800, 2400, 3), 90, np.uint8)  # searched at 640x480, a quarter of its width
    left, top = 1700, 1100
    canvas[top : top + hopper_rgb.shape[0], left : left + hopper_rgb.shape[1]] = hopper_rgb
    faces = detector.detect(canvas)
    assert len(faces) == 1
    offset = np.array([left, top], dtype=np.float32)
    expected = np.array(hopper_faces[0].box) + np.tile(offset, 2)
    assert _iou(faces[0].box, expected) > 0.8
    # One pixel at 640 px is about 4 here: the landmarks land within a few of them of the full-size ones.
    np.testing.assert_allclose(faces[0].landmarks, hopper_faces[0].landmarks + offset, atol=16)


def test_yunet_landmarks_fall_on_grace_hoppers_features(hopper_faces):
    # Where MTCNN, the detector before, put them (eyes 88 px apart). YuNet's mouth corners sit about
    # 12 px higher, on the upper lip's ends rather than where the lips meet (looked at by eye).
    by_mtcnn = [[222, 192], [310, 186], [269, 239], [233, 280], [307, 276]]
    np.testing.assert_allclose(hopper_faces[0].landmarks, by_mtcnn, atol=15)
    eyes, nose, mouth = hopper_faces[0].landmarks[:2], hopper_faces[0].landmarks[2], hopper_faces[0].landmarks[3:]
    assert eyes[0, 0] < nose[0] < eyes[1, 0] and mouth[0, 0] < nose[0] < mouth[1, 0]


def test_detection_from_several_threads_matches_one_at_a_time(detector, hopper_rgb, astronaut_rgb):
    images = [hopper_rgb, astronaut_rgb] * 4
    serial = [detector.detect(image) for image in images]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(detector.detect, images))
    for one, other in zip(serial, parallel):
        assert [f.box for f in one] == [f.box for f in other]


def test_missing_model_file_is_a_typed_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="missing"):
        FaceDetector(tmp_path / "face_detection_yunet_2023mar.onnx")


@pytest.mark.parametrize("damage", ["truncated", "zeroed"])
def test_corrupt_model_file_is_a_typed_error(tmp_path, damage):
    data = bytearray(YUNET_PATH.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:  # OpenCV loads this one and then draws wrong boxes: only the checksum catches it
        data[100_000:101_000] = bytes(1000)
    path = tmp_path / "yunet.onnx"
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptModelError, match="damaged"):
        FaceDetector(path)


def test_one_face_detector_for_images_videos_and_the_training_cache(engine, random_checkpoint, hopper_path,
                                                                     tmp_path, monkeypatch):  # fmt: skip
    from deepfake import ImageDeepfakeDetector, VideoDeepfakeDetector
    from deepfake.training.data import build_cache

    assert engine.face_detector is face_detector()
    assert DetectionEngine.load(random_checkpoint, device="cpu").face_detector is engine.face_detector
    images, videos = ImageDeepfakeDetector(engine=engine), VideoDeepfakeDetector(engine=engine)
    assert images.engine.face_detector is videos.engine.face_detector is face_detector()

    searched = []
    shared = face_detector()

    def spy(batch: list[np.ndarray]) -> list:
        searched.extend(batch)
        return FaceDetector.detect_batch(shared, batch)

    monkeypatch.setattr(shared, "detect_batch", spy)
    (tmp_path / "data" / "real" / "portraits").mkdir(parents=True)
    (tmp_path / "data" / "real" / "portraits" / "hopper.jpg").write_bytes(hopper_path.read_bytes())
    cache = build_cache(tmp_path / "data", tmp_path / "cache")
    assert len(searched) == 1 and cache.face_found.all()  # the cache found its face with the shared detector


def test_crop_face_shape_and_mapping(hopper_rgb, hopper_faces):
    box = hopper_faces[0].box
    crop = crop_face(hopper_rgb, box, margin=1.3, size=224)
    assert crop.pixels.shape == (224, 224, 3) and crop.pixels.dtype == np.uint8
    centre = crop.crop_to_image @ np.array([112.0, 112.0, 1.0])
    np.testing.assert_allclose(centre, [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], atol=2)
    # The square covers margin x the box's longer side.
    side = max(box[2] - box[0], box[3] - box[1]) * 1.3
    assert crop.crop_to_image[0, 0] * 224 == pytest.approx(side, abs=1)


def test_crop_face_pixels_match_the_image(hopper_rgb):
    crop = crop_face(hopper_rgb, (100.0, 100.0, 164.0, 164.0), margin=1.0, size=64)  # 1:1, no resampling
    np.testing.assert_array_equal(crop.pixels, hopper_rgb[100:164, 100:164])


def test_crop_off_the_edge_is_padded_black():
    image = np.full((100, 100, 3), 255, np.uint8)
    crop = crop_face(image, (-40.0, -40.0, 40.0, 40.0), margin=1.0, size=80)
    assert crop.pixels.shape == (80, 80, 3)
    assert (crop.pixels[:35, :35] == 0).all()  # outside the image: black
    assert (crop.pixels[45:, 45:] == 255).all()  # inside: the image
    # Entirely outside the image still gives a (black) crop rather than an error.
    outside = crop_face(image, (200.0, 200.0, 260.0, 260.0), margin=1.3, size=32)
    assert outside.pixels.shape == (32, 32, 3) and (outside.pixels == 0).all()


def test_landmarks_in_crop_round_trip(hopper_rgb, hopper_faces):
    face = hopper_faces[0]
    crop = crop_face(hopper_rgb, face.box, margin=1.3, size=224)
    in_crop = crop.landmarks_in_crop(face.landmarks)
    assert ((in_crop > 0) & (in_crop < 224)).all()
    back = np.c_[in_crop, np.ones(5)] @ crop.crop_to_image.T
    np.testing.assert_allclose(back, face.landmarks, atol=1e-3)


def test_a_face_found_on_a_halved_picture_maps_back_to_the_whole_one(detector, hopper_rgb):
    canvas = np.full((1920, 2560, 3), 90, np.uint8)  # both sizes are searched at 640x480
    canvas[300:1500, 900:1924] = cv2.resize(hopper_rgb, (1024, 1200), interpolation=cv2.INTER_CUBIC)
    whole = detector.detect(canvas)[0]
    half = detector.detect(cv2.resize(canvas, (1280, 960), interpolation=cv2.INTER_AREA))[0]
    mapped = half.scaled(2.0)
    assert _iou(mapped.box, whole.box) > 0.97 and mapped.score == half.score
    np.testing.assert_allclose(mapped.landmarks, whole.landmarks, atol=4)
    np.testing.assert_array_equal(mapped.landmarks, half.landmarks * 2)


def test_whole_image_box():
    assert whole_image_box(np.zeros((30, 40, 3), np.uint8)) == (0.0, 0.0, 40.0, 30.0)


def test_outside_fraction_measures_the_square_the_cropper_frames():
    shape = (100, 200)  # height, width
    assert outside_fraction((80, 30, 120, 70), shape) == 0.0  # a square face well inside
    assert outside_fraction((0, 30, 20, 70), shape) == pytest.approx(0.25)  # clipped at the left: its square sticks out
    assert outside_fraction((180, 80, 200, 100), shape) == pytest.approx(0.0)  # fits exactly in the corner
    assert outside_fraction((190, 90, 200, 100), (95, 195)) == pytest.approx(0.75)
