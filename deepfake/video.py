"""Video detector: sample frames evenly with PyAV, score every face, aggregate by a stated rule.

Aggregation (documented in README): a frame's score is its most suspicious face. The video's
score is the mean over frames with a face, unless a *confident run* exists: at least
``max(3, 10%)`` consecutive sampled frames at or above ``CONFIDENT_FAKE`` (0.8). Then the run's
mean wins when higher, so a manipulated segment is not averaged away by authentic footage
(the rule the DFDC winners used, applied to runs).
"""

from __future__ import annotations

import dataclasses
import io
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from deepfake.detector import Progress, _check_method, _Detector, overlay_name, write_png
from deepfake.errors import CorruptFileError, NoDecodableFramesError, UnsupportedFormatError, VideoTooSmallError
from deepfake.media import MIN_IMAGE_SIDE, read_media
from deepfake.provenance.findings import model_finding, ordered
from deepfake.provenance.reader import read_provenance
from deepfake.results import FAKE, FrameResult, Timings, VideoResult, classify, deciding_face
from explainability.faces import explain_faces, render_overlay, summarize_faces

CONFIDENT_FAKE = 0.8
SEEK_GAP_S = 2.0  # closer targets are reached by decoding on; farther ones by seeking to a keyframe
TRUNCATION_GAP_S = 0.5  # sampling targets this far past the last decodable frame mean a cut-short file
MAX_FRAME_SIDE = 1920  # 4K frames are scaled down on decode: 32 of them would not fit a laptop
FACE_BATCH = 8


@dataclass
class VideoInfo:
    width: int
    height: int
    fps: float
    duration_s: float
    codec: str
    # Set when frames ran out (or decoding failed) well before the stated end: a truncated or
    # damaged file. The frames before that point are analysed; the result says what was missed.
    decoded_until_s: float | None = None


@dataclass
class SampledFrame:
    index: int
    time_s: float
    image: np.ndarray


def _open(data: bytes, name: str) -> av.container.InputContainer:
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except av.error.FFmpegError as exc:
        raise CorruptFileError(f"'{name}' cannot be opened as a video; it may be truncated or damaged.") from exc
    if not container.streams.video:
        container.close()
        raise NoDecodableFramesError(f"'{name}' has no video track.")
    return container


def _info(container: av.container.InputContainer) -> VideoInfo:
    stream = container.streams.video[0]
    fps = float(stream.average_rate or stream.guessed_rate or 25)
    if stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    elif container.duration:
        duration = container.duration / av.time_base
    else:
        duration = 0.0
    return VideoInfo(stream.codec_context.width, stream.codec_context.height, fps, duration, stream.codec_context.name)


def _scaled_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Even width and height, the longer side at most ``max_side``."""
    scale = min(1.0, max_side / max(width, height))
    return max(2, round(width * scale) // 2 * 2), max(2, round(height * scale) // 2 * 2)


def _upright(image: np.ndarray, frame: av.VideoFrame) -> np.ndarray:
    """The picture as players show it: phones store portrait video on its side, with a rotation
    to apply on display (counter-clockwise degrees)."""
    turns = round(frame.rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


def _to_rgb(frame: av.VideoFrame, max_side: int | None = None) -> np.ndarray:
    width, height = _scaled_size(frame.width, frame.height, max_side or MAX_FRAME_SIDE)
    resize = {} if (width, height) == (frame.width, frame.height) else {"width": width, "height": height}
    return _upright(frame.to_ndarray(format="rgb24", **resize), frame)


def _decode_from(container, stream, seek_to: float | None) -> Iterator[av.VideoFrame]:
    if seek_to is not None:
        container.seek(max(0, int(seek_to / stream.time_base)), stream=stream, backward=True)
    for frame in container.decode(stream):
        if frame.time is not None:
            yield frame


def sample_frames(data: bytes, name: str, num_frames: int) -> tuple[VideoInfo, list[SampledFrame]]:
    """``num_frames`` frames spread evenly over the duration (centres of equal slices)."""
    if num_frames < 1:
        raise ValueError("num_frames must be at least 1")
    container = _open(data, name)
    try:
        info = _info(container)
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if info.duration_s <= 0:
            info.duration_s = _count_duration(container, stream)
            container.seek(0)
        targets = [(i + 0.5) * info.duration_s / num_frames for i in range(num_frames)]
        frames: list[SampledFrame] = []
        try:
            _collect(container, stream, targets, info.fps, frames)
        except av.error.FFmpegError as exc:
            if not frames:
                raise CorruptFileError(f"'{name}' could not be decoded; it may be truncated or damaged ({exc}).") from exc
            info.decoded_until_s = frames[-1].time_s  # damaged further on: keep what decoded
    finally:
        container.close()
    if not frames:
        raise NoDecodableFramesError(f"'{name}' contains no decodable video frames.")
    upright_h, upright_w = frames[0].image.shape[:2]
    # Checked on a decoded frame: some containers state no size until a frame is decoded.
    if min(upright_h, upright_w) < MIN_IMAGE_SIDE:
        raise VideoTooSmallError(
            f"'{name}' has frames of {upright_w}x{upright_h} pixels, too small to hold a face that can be "
            f"judged (at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} is needed, as for images)."
        )
    if (upright_h > upright_w) != (info.height > info.width):  # stored on its side: report it as shown
        info.width, info.height = info.height, info.width
    if targets[-1] - frames[-1].time_s > max(TRUNCATION_GAP_S, 2 / info.fps):
        info.decoded_until_s = frames[-1].time_s
    return info, frames


def _count_duration(container, stream) -> float:
    """Duration of a stream whose header does not state it, by decoding it once."""
    last = 0.0
    for frame in container.decode(stream):
        if frame.time is not None:
            last = max(last, frame.time)
    return last + 1.0 / float(stream.average_rate or 25)


def _collect(container, stream, targets: list[float], fps: float, frames: list[SampledFrame]) -> None:
    """Append the frame nearest each target to ``frames`` (filled in place, so that what decoded
    before an error is kept)."""
    half_frame = 0.5 / fps
    decoder = _decode_from(container, stream, None)
    position = 0.0
    previous: av.VideoFrame | None = None
    for target in targets:
        if target - position > SEEK_GAP_S:
            decoder = _decode_from(container, stream, target)
            previous = None
        chosen = None
        for frame in decoder:
            position = frame.time
            if frame.time + half_frame >= target:
                chosen = frame
                break
            previous = frame
        chosen = chosen or previous  # a target past the last frame takes the last frame
        if chosen is None:
            break
        index = int(round(chosen.time * fps))
        if not frames or frames[-1].index != index:
            frames.append(SampledFrame(index, float(chosen.time), _to_rgb(chosen)))
        previous = chosen


def aggregate(scores: list[float]) -> tuple[float, dict]:
    """Video score from frame scores; see the module docstring for the rule."""
    mean = float(np.mean(scores))
    min_run = max(3, math.ceil(0.1 * len(scores)))
    best_run: list[float] = []
    run: list[float] = []
    for score in scores:
        run = run + [score] if score >= CONFIDENT_FAKE else []
        if len(run) > len(best_run):
            best_run = run
    run_mean = float(np.mean(best_run)) if best_run else 0.0
    use_run = len(best_run) >= min_run and run_mean > mean
    details = {
        "rule": "confident_run" if use_run else "mean",
        "mean": round(mean, 6),
        "max": round(float(np.max(scores)), 6),
        "longest_confident_run": len(best_run),
        "confident_run_mean": round(run_mean, 6),
        "min_run": min_run,
        "confident_threshold": CONFIDENT_FAKE,
    }
    return (run_mean if use_run else mean), details


class VideoDeepfakeDetector(_Detector):
    """``VideoDeepfakeDetector().detect("clip.mp4", num_frames=32)`` -> :class:`VideoResult`."""

    def detect(
        self,
        source: str | Path | bytes,
        *,
        num_frames: int = 32,
        explain: bool = True,
        annotate: bool = False,
        threshold: float | None = None,
        cam_method: str | None = None,
        output_dir: str | Path | None = None,
        name: str | None = None,
        top_k: int = 3,
        progress: Progress | None = None,
    ) -> VideoResult:
        threshold = float(threshold if threshold is not None else self.threshold)
        method = _check_method(cam_method or self.cam_method)
        report = progress or (lambda fraction, message: None)
        started = time.perf_counter()

        media = read_media(source, name)
        if media.kind != "video":
            raise UnsupportedFormatError(f"'{media.name}' is an image; use ImageDeepfakeDetector for it.")
        file_evidence = read_provenance(media.data, self.provenance)  # C2PA and MP4/MOV metadata
        report(0.0, "Decoding frames")
        info, frames = sample_frames(media.data, media.name, num_frames)
        decoded = time.perf_counter()

        images = [f.image for f in frames]
        faces = []
        for start in range(0, len(images), FACE_BATCH):
            faces += self.engine.faces_for(images[start : start + FACE_BATCH])
            report(min(len(faces), len(images)) / len(images) * 0.8, f"Finding faces: frame {len(faces)}/{len(images)}")
        found = time.perf_counter()
        report(0.85, "Scoring faces")
        scored = self.engine.score_faces(images, faces)
        modelled = time.perf_counter()

        timeline = [
            FrameResult(
                index=f.index,
                time_s=f.time_s,
                fake_probability=deciding_face(frame_faces).fake_probability,
                face_found=bool(frame_faces_found),
                faces=frame_faces,
                image=f.image,
            )
            for f, frame_faces, frame_faces_found in zip(frames, scored, faces)
        ]
        with_faces = [fr for fr in timeline if fr.face_found]
        counted = with_faces or timeline
        probability, aggregation = aggregate([fr.fake_probability for fr in counted])
        aggregation["frames_with_faces"] = len(with_faces)

        order = sorted(range(len(timeline)), key=lambda i: -timeline[i].fake_probability)
        suspicious = [i for i in order if timeline[i].face_found or not with_faces][:top_k]
        warnings = [] if with_faces else ["No face found in any sampled frame: whole frames were scored."]
        if info.decoded_until_s is not None:
            warnings.append(f"Frames could be decoded only up to {info.decoded_until_s:.1f} s of the stated "
                            f"{info.duration_s:.1f} s: the file may be truncated or damaged, and the rest was not "
                            "analysed.")  # fmt: skip
        overlay_path = None
        folder = None
        explaining = explain and self.engine.cam_available
        if explaining:
            report(0.9, "Explaining the most suspicious frames")
            self.engine.attach_cams([face for i in suspicious for face in timeline[i].faces], method)
        for frame in timeline:
            explain_faces(frame.faces, frame.image.shape[:2], threshold)
        if explaining:
            folder = self.output.get(output_dir)
            for rank, i in enumerate(suspicious):
                frame = timeline[i]
                frame.heatmap_overlay_path = write_png(
                    folder / overlay_name(media.sha256, method, frame.index),
                    render_overlay(frame.image, frame.faces),
                )
                if rank == 0:
                    overlay_path = frame.heatmap_overlay_path
        else:
            method = None
        annotated_path = None
        if annotate:
            report(0.95, "Writing the annotated video")
            folder = folder or self.output.get(output_dir)
            annotated_path = write_annotated_video(
                media.data, folder / f"{media.sha256[:16]}_annotated.mp4", timeline, threshold
            )
        done = time.perf_counter()
        report(1.0, "Done")

        return VideoResult(
            source=media.name,
            sha256=media.sha256,
            width=info.width,
            height=info.height,
            fake_probability=probability,
            threshold=threshold,
            face_found=bool(with_faces),
            model_name=self.model_name,
            model_version=self.model_version,
            timings=Timings.from_marks(started, decoded, found, modelled, done),
            explanation=explain_video(timeline, suspicious, threshold),
            heatmap_overlay_path=overlay_path,
            cam_method=method,
            warnings=warnings,
            fps=info.fps,
            duration_s=info.duration_s,
            decoded_until_s=info.decoded_until_s,
            aggregation=aggregation,
            timeline=timeline,
            suspicious_frames=suspicious,
            annotated_video_path=annotated_path,
            evidence=ordered(model_finding(probability, len(with_faces), "video"), file_evidence),
        )


    def rejudge(self, result: VideoResult, threshold: float) -> VideoResult:
        """The same analysis at another threshold: labels, boxes and explanations follow."""
        timeline = []
        for frame in result.timeline:
            faces = [dataclasses.replace(f) for f in frame.faces]
            shape = frame.image.shape[:2] if frame.image is not None else (result.height, result.width)
            explain_faces(faces, shape, threshold)
            timeline.append(dataclasses.replace(frame, faces=faces))
        return dataclasses.replace(result, threshold=float(threshold), timeline=timeline,
                                   explanation=explain_video(timeline, result.suspicious_frames, threshold))  # fmt: skip


def explain_video(timeline: list[FrameResult], suspicious: list[int], threshold: float) -> str:
    """Where the most suspicious frame is, its own score and what its faces show. The score is
    said because a frame can read FAKE in a clip judged REAL on all its frames (held-out interview
    clips have single frames at 0.9: model card), and the frame's sentence then speaks of traces."""
    top = timeline[suspicious[0]] if suspicious else None
    if top is None or not top.faces[0].explanation:
        return ""
    return (f"Most suspicious frame at {top.time_s:.1f} s ({top.fake_probability:.0%} fake on its own). "
            + summarize_faces(top.faces, threshold))


def _score_colour(probability: float, threshold: float) -> tuple[int, int, int]:
    """Green for authentic, through amber, to red at and above the threshold (RGB)."""
    t = min(1.0, probability / max(threshold, 1e-6))
    if classify(probability, threshold) == FAKE:
        return (230, 40, 40)
    return (int(60 + 190 * t), int(190 - 30 * t), 60)


def write_annotated_video(data: bytes, path: Path, timeline: list[FrameResult], threshold: float,
                          max_side: int = 720) -> str:
    """Re-encode the clip as browser-playable H.264 with each face box coloured by its score.

    Boxes come from the nearest sampled frame, so they follow the analysis rather than a tracker.
    """
    times = np.array([fr.time_s for fr in timeline])
    container = _open(data, path.name)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        width, height = stream.codec_context.width, stream.codec_context.height
        # Boxes are in the analysed frames' coordinates (upright, at most MAX_FRAME_SIDE).
        analysed_w = _scaled_size(width, height, MAX_FRAME_SIDE)[0]
        out_w = _scaled_size(width, height, max_side)[0]
        rate = Fraction(stream.average_rate or 25).limit_denominator(1001)
        tmp = path.with_suffix(".part.mp4")
        with av.open(str(tmp), mode="w", options={"movflags": "+faststart"}) as output:
            encoder = output.add_stream("libx264", rate=rate)
            encoder.pix_fmt = "yuv420p"
            encoder.options = {"preset": "veryfast", "crf": "23"}
            sized = False
            for frame in container.decode(stream):
                if frame.time is None:
                    continue
                image = _to_rgb(frame, max_side)
                if not sized:  # the upright size, known from the first frame
                    encoder.width, encoder.height, sized = image.shape[1], image.shape[0], True
                nearest = timeline[int(np.abs(times - frame.time).argmin())]
                _draw_faces(image, nearest, out_w / analysed_w, threshold)
                for packet in encoder.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                    output.mux(packet)
            for packet in encoder.encode():
                output.mux(packet)
        tmp.replace(path)
    finally:
        container.close()
    return str(path)


def _draw_faces(image: np.ndarray, frame: FrameResult, scale: float, threshold: float) -> None:
    thickness = max(2, image.shape[1] // 300)
    for face in frame.faces:
        if face.whole_image:
            continue
        x1, y1, x2, y2 = (int(round(v * scale)) for v in face.box)
        colour = _score_colour(face.fake_probability, threshold)
        cv2.rectangle(image, (x1, y1), (x2, y2), colour, thickness)
        label = f"{classify(face.fake_probability, threshold)} {face.fake_probability:.2f}"
        cv2.putText(image, label, (x1, max(12, y1 - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.5 + image.shape[1] / 2000,
                    colour, max(1, thickness // 2), cv2.LINE_AA)
