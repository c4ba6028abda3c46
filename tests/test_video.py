from __future__ import annotations

import io
import json
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import CLIP_FPS, CLIP_FRAMES, CLIP_SIZE, face_frames, make_clip
from PIL import Image

from deepfake import VideoDeepfakeDetector, VideoResult
from deepfake import video as video_module
from deepfake.video import CONFIDENT_FAKE, aggregate, sample_frames

DURATION = CLIP_FRAMES / CLIP_FPS


@pytest.fixture(scope="module")
def video_result(engine, synthetic_clip, tmp_path_factory) -> tuple[VideoResult, Path, list]:
    out = tmp_path_factory.mktemp("video_out")
    progress: list[tuple[float, str]] = []
    result = VideoDeepfakeDetector(engine=engine).detect(
        synthetic_clip, num_frames=6, annotate=True, output_dir=out, progress=lambda f, m: progress.append((f, m))
    )
    return result, out, progress


def test_sample_frames_spread_over_the_clip(synthetic_clip):
    info, frames = sample_frames(synthetic_clip, "clip.mp4", 8)
    assert (info.width, info.height) == CLIP_SIZE and info.codec == "h264"
    assert info.fps == pytest.approx(CLIP_FPS) and info.duration_s == pytest.approx(DURATION, abs=0.15)
    assert len(frames) == 8
    times = [f.time_s for f in frames]
    assert times == sorted(times) and len(set(times)) == 8
    assert times[0] < 0.25 * DURATION and times[-1] > 0.75 * DURATION
    indices = [f.index for f in frames]
    assert indices == sorted(set(indices)) and 0 <= indices[0] and indices[-1] < CLIP_FRAMES
    for frame in frames:
        assert frame.image.shape == (CLIP_SIZE[1], CLIP_SIZE[0], 3) and frame.image.dtype == np.uint8
        assert frame.index == round(frame.time_s * CLIP_FPS)


def test_sampled_frames_show_the_right_moment(synthetic_clip, hopper_rgb):
    """The frame returned for index i is the i-th frame that was encoded (the face moves 3 px a frame)."""
    originals = face_frames(hopper_rgb)
    _, frames = sample_frames(synthetic_clip, "clip.mp4", 4)
    for frame in frames:
        errors = [np.abs(frame.image.astype(int) - o.astype(int)).mean() for o in originals]
        assert int(np.argmin(errors)) == frame.index


def test_more_frames_than_the_clip_has(synthetic_clip):
    _, frames = sample_frames(synthetic_clip, "clip.mp4", 50)
    indices = [f.index for f in frames]
    assert len(indices) == len(set(indices)) <= CLIP_FRAMES
    assert indices == sorted(indices) and len(indices) >= CLIP_FRAMES - 1


def test_one_frame(synthetic_clip):
    _, frames = sample_frames(synthetic_clip, "clip.mp4", 1)
    assert len(frames) == 1 and abs(frames[0].time_s - DURATION / 2) <= 0.15
    with pytest.raises(ValueError):
        sample_frames(synthetic_clip, "clip.mp4", 0)


def test_timeline(video_result):
    result, _, _ = video_result
    assert result["media_type"] == "video" and result["frames_analyzed"] == 6
    assert len(result.timeline) == 6
    assert (result["width"], result["height"]) == CLIP_SIZE
    assert result["fps"] == pytest.approx(CLIP_FPS) and result["duration_s"] == pytest.approx(DURATION, abs=0.15)
    assert result["face_found"] and result["face_count"] == 1 and result.warnings == []
    times = [fr.time_s for fr in result.timeline]
    assert times == sorted(times)
    for frame in result.timeline:
        entry = frame.to_dict()
        assert {"index", "time_s", "faces", "fake_probability"} <= set(entry)
        assert frame.face_found and frame.faces and not frame.faces[0].whole_image
        assert frame.fake_probability == max(f.fake_probability for f in frame.faces)
        assert entry["face_probabilities"] == [round(f.fake_probability, 6) for f in frame.faces]


def test_video_score_follows_aggregate(video_result):
    result, _, _ = video_result
    expected, details = aggregate([fr.fake_probability for fr in result.timeline])
    assert result["fake_probability"] == pytest.approx(expected, abs=1e-6)
    assert result["aggregation"]["rule"] == details["rule"]
    assert result["aggregation"]["frames_with_faces"] == 6
    assert (result["classification"] == "FAKE") == (result["fake_probability"] >= result["threshold"])


def test_suspicious_frames_have_overlays(video_result):
    result, out, _ = video_result
    assert 1 <= len(result.suspicious_frames) <= 3
    probabilities = [result.timeline[i].fake_probability for i in result.suspicious_frames]
    assert probabilities == sorted(probabilities, reverse=True)
    assert probabilities[0] == max(fr.fake_probability for fr in result.timeline)
    for i in result.suspicious_frames:
        path = Path(result.timeline[i].heatmap_overlay_path)
        assert path.parent == out and path.is_file()
        with Image.open(path) as png:
            assert png.format == "PNG" and png.size == CLIP_SIZE
    assert result["heatmap_overlay_path"] == result.timeline[result.suspicious_frames[0]].heatmap_overlay_path
    others = set(range(6)) - set(result.suspicious_frames)
    assert all(result.timeline[i].heatmap_overlay_path is None for i in others)
    assert result["suspicious_frames"] == [result.timeline[i].index for i in result.suspicious_frames]


def test_annotated_video(video_result):
    result, out, _ = video_result
    path = Path(result["annotated_video_path"])
    assert path.parent == out and path.is_file() and path.suffix == ".mp4"
    assert not list(out.glob("*.part.mp4"))
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert (stream.codec_context.width, stream.codec_context.height) == CLIP_SIZE
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    assert abs(len(frames) - CLIP_FRAMES) <= 1
    # Each face box is drawn in a saturated colour; the grey background and the photo have none.
    first = frames[0].astype(int)
    saturation = first.max(axis=2) - first.min(axis=2)
    assert (saturation > 100).sum() > 50


def test_progress_and_json(video_result):
    result, _, progress = video_result
    fractions = [f for f, _ in progress]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)
    data = result.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert set(data["timings"]) == {"decode_ms", "faces_ms", "model_ms", "explanation_ms", "total_ms"}
    assert len(data["timeline"]) == 6 and data["model_version"] == "test"
    assert data["decoded_until_s"] is None and result.warnings == []  # a whole file: nothing was missed
    assert result.history_row()["frames"] == 6 and result.history_row()["media_type"] == "video"


def test_a_cut_short_file_is_analysed_as_far_as_it_goes_and_says_so(engine, hopper_rgb, tmp_path):
    """A download cut off part way (Matroska states its duration up front): the frames before the
    cut are analysed, and the result says where decoding stopped."""
    path = tmp_path / "whole.mkv"
    with av.open(str(path), mode="w", format="matroska") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = *CLIP_SIZE, "yuv420p"
        stream.options = {"g": "5"}
        for frame in face_frames(hopper_rgb, count=40):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = path.read_bytes()
    result = VideoDeepfakeDetector(engine=engine).detect(data[: len(data) // 2], num_frames=10, name="partial.mkv",
                                                         output_dir=tmp_path)  # fmt: skip
    assert result.duration_s == pytest.approx(4.0, abs=0.2)
    assert result.decoded_until_s is not None and 0.5 < result.decoded_until_s < 3.0
    assert 1 <= result.frame_count < 10 and all(fr.time_s <= result.decoded_until_s for fr in result.timeline)
    assert any("truncated" in w and f"{result.decoded_until_s:.1f} s" in w for w in result.warnings)
    assert result.to_dict()["decoded_until_s"] == pytest.approx(result.decoded_until_s, abs=1e-3)


def test_video_without_faces(engine, tmp_path):
    frames = [np.full((96, 128, 3), 40 + 10 * i, np.uint8) for i in range(6)]
    result = VideoDeepfakeDetector(engine=engine).detect(
        make_clip(frames, 5), num_frames=3, explain=False, name="walls.mp4", output_dir=tmp_path
    )
    assert result["face_found"] is False and result["verdict"] == "NO FACE"
    assert len(result.timeline) == 3 and all(fr.faces[0].whole_image for fr in result.timeline)
    assert any("no face" in w.lower() for w in result.warnings)
    assert result["annotated_video_path"] is None and result["heatmap_overlay_path"] is None
    assert result["source"] == "walls.mp4"


def test_aggregate_mean_rule():
    scores = [0.1, 0.95] * 10  # scattered highs: no run
    value, details = aggregate(scores)
    assert details["rule"] == "mean" and value == pytest.approx(np.mean(scores))
    assert details["longest_confident_run"] == 1 and details["max"] == pytest.approx(0.95)
    assert aggregate([0.3, 0.5, 0.4])[0] == pytest.approx(0.4)


def test_aggregate_confident_run_rule():
    scores = [0.1] * 20 + [0.95] * 5
    value, details = aggregate(scores)
    assert details["rule"] == "confident_run" and value == pytest.approx(0.95)
    assert details["longest_confident_run"] == 5 and details["min_run"] == 3
    assert details["mean"] == pytest.approx(np.mean(scores)) and details["confident_threshold"] == CONFIDENT_FAKE


def test_aggregate_run_must_be_long_enough():
    # 40 frames need a run of 4 (10%): 3 in a row is not enough.
    scores = [0.1] * 37 + [0.9] * 3
    assert aggregate(scores)[1]["rule"] == "mean"
    assert aggregate([0.1] * 36 + [0.9] * 4)[1]["rule"] == "confident_run"
    # A run right at the threshold counts; just below it does not.
    assert aggregate([0.1] * 5 + [CONFIDENT_FAKE] * 3)[1]["rule"] == "confident_run"
    assert aggregate([0.1] * 5 + [CONFIDENT_FAKE - 1e-3] * 3)[1]["rule"] == "mean"
    # All frames confident: the run is the whole clip and equals the mean.
    value, details = aggregate([0.9] * 5)
    assert value == pytest.approx(0.9) and details["rule"] == "mean"


def test_a_phone_video_stored_on_its_side_is_analysed_upright(engine, hopper_rgb, tmp_path):
    """Phones store portrait video landscape, with a display rotation; faces are only found upright."""
    path = tmp_path / "phone.mp4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = CLIP_SIZE[1], CLIP_SIZE[0], "yuv420p"  # stored sideways
        stream.set_display_rotation(90)  # players turn it 90 degrees counter-clockwise
        for frame in face_frames(hopper_rgb, count=10):
            sideways = np.ascontiguousarray(np.rot90(frame, -1))  # what the sensor recorded
            for packet in stream.encode(av.VideoFrame.from_ndarray(sideways, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    result = VideoDeepfakeDetector(engine=engine).detect(path.read_bytes(), num_frames=4, name="phone.mp4",
                                                         annotate=True, output_dir=tmp_path)  # fmt: skip
    assert (result.width, result.height) == CLIP_SIZE  # as shown, not as stored
    assert all(fr.image.shape[:2] == CLIP_SIZE[::-1] for fr in result.timeline)
    assert all(fr.face_found for fr in result.timeline)
    with av.open(result.annotated_video_path) as annotated:
        first = next(annotated.decode(video=0))
        assert (first.width, first.height) == CLIP_SIZE and first.rotation == 0  # upright, boxes drawn on it


def test_boxes_land_on_the_faces_when_frames_were_analysed_scaled_down(engine, synthetic_clip, tmp_path, monkeypatch):
    """Big (4K) frames are analysed scaled down; the annotated video must scale the boxes back."""
    monkeypatch.setattr(video_module, "MAX_FRAME_SIDE", 160)  # as a 4K clip is brought to 1920
    result = VideoDeepfakeDetector(engine=engine).detect(synthetic_clip, num_frames=1, annotate=True,
                                                         output_dir=tmp_path, threshold=1.0)  # fmt: skip
    [frame] = result.timeline
    assert frame.image.shape[:2] == (120, 160) and frame.face_found
    with av.open(result.annotated_video_path) as annotated:
        images = [f.to_ndarray(format="rgb24").astype(int) for f in annotated.decode(video=0)]
    with av.open(io.BytesIO(synthetic_clip)) as original:
        plain = [f.to_ndarray(format="rgb24").astype(int) for f in original.decode(video=0)][frame.index]
    drawn = np.argwhere(np.abs(images[frame.index] - plain).max(axis=2) > 80)  # the box and its label
    x1, _, _, y2 = (2 * v for v in frame.faces[0].box)  # analysed at half size
    assert abs(drawn[:, 1].min() - x1) < 6 and abs(drawn[:, 0].max() - y2) < 6  # left and bottom edges
