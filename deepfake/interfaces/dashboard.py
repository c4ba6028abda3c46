"""The dashboard's library side, with no Streamlit in it so that all of it is tested directly:
analyses kept per session, re-judging and re-explaining them without detecting again, the
history table and its statistics, chart data, and what is known about the model.

``app.py`` only lays these out.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd

from deepfake.detector import ImageDeepfakeDetector
from deepfake.engine import FAKE_TARGET, DetectionEngine
from deepfake.errors import DeepfakeError
from deepfake.evaluation.metrics import interval_text
from deepfake.exports import history_row
from deepfake.figures import fit
from deepfake.loading import DEFAULT_MODEL_PATH, MODEL_ENV, LoadedModel
from deepfake.media import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, read_media, sniff_kind
from deepfake.provenance.findings import LEANS_FAKE, LEANS_REAL, NEUTRAL, Finding, heading
from deepfake.results import (
    FAKE,
    HISTORY_COLUMNS,
    NO_FACE,
    REAL,
    AnalysisResult,
    FaceResult,
    VideoResult,
    classify,
    now_iso,
)
from deepfake.video import Progress, VideoDeepfakeDetector
from deepfake.wording import VERDICT_COLOURS, markdown_literal
from explainability.faces import render_overlay

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
REPORTS_ENV = "DEEPFAKE_REPORTS"  # folder written by deepfake.evaluate; unset means reports/
MODEL_CARD = ROOT / "models" / "MODEL_CARD.md"
UPLOAD_TYPES = [extension.lstrip(".") for extension in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS]
PREVIEW_SIDE = 1280  # pixels: pictures are shown at most this large, however big the upload
METRIC_COLUMNS = ("n", "auc", "accuracy", "precision", "recall", "f1", "eer", "fpr", "fnr", "ece")
EVALUATION_PLOTS = ("roc", "reliability", "confusion", "pr", "histogram")
# What a reader looks for first; the export schema keeps its own order (HISTORY_COLUMNS).
HISTORY_DISPLAY_ORDER = ("analyzed_at", "file_name", "verdict", "fake_probability", "threshold", "faces", "frames",
                         "media_type", "decided_by", "evidence", "warnings", "error", "duration_ms", "model_version",
                         "sha256")  # fmt: skip
EVIDENCE_ICONS = {LEANS_FAKE: ":material/report:", LEANS_REAL: ":material/verified:", NEUTRAL: ":material/info:"}


def model_path_from_env() -> str | None:
    return os.environ.get(MODEL_ENV) or None


def model_file_stamp(model_path: str | None) -> float:
    """The model file's modification time (0 when missing): caching the engine under it makes a
    retrained model take effect on the next page load, without restarting the dashboard."""
    path = Path(model_path) if model_path else DEFAULT_MODEL_PATH
    return path.stat().st_mtime if path.is_file() else 0.0


def reports_dir_from_env() -> Path:
    return Path(os.environ.get(REPORTS_ENV) or ROOT / "reports")


@dataclass
class Analysis:
    """One file analysed in a session: the result as detected, or why it failed.

    ``explained`` holds the result once per heatmap method and target (the combined score or one
    head) asked for, so switching back and forth computes each explanation once; ``view`` caches
    the last threshold's labels.
    """

    file_name: str
    media_type: str
    sha256: str
    result: AnalysisResult | None = None
    error: str = ""
    annotated_video: bytes | None = None  # H.264 MP4 with coloured face boxes, for videos
    analyzed_at: str = field(default_factory=now_iso)
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    explained: dict[tuple[str | None, str], AnalysisResult] = field(default_factory=dict, repr=False)
    view: tuple[tuple, AnalysisResult] | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.result is not None

    def history_row(self, threshold: float) -> dict:
        if self.result is None:
            row = history_row(file_name=self.file_name, error=self.error, media_type=self.media_type,
                              sha256=self.sha256)  # fmt: skip
            row["analyzed_at"] = self.analyzed_at
            return row
        return dataclasses.replace(self.result, threshold=threshold).history_row()


def _ignore_progress(fraction: float, message: str) -> None:
    """Progress reports go nowhere unless the caller asks for them."""


class Workbench:
    """Analyses files for the dashboard. Holds only the shared engine and two stateless
    detectors, so one instance serves every browser session; each analysis writes to its own
    temporary folder, removed before returning."""

    def __init__(self, engine: DetectionEngine) -> None:
        self.engine = engine
        self.images = ImageDeepfakeDetector(engine=engine)
        self.videos = VideoDeepfakeDetector(engine=engine)

    @property
    def model(self) -> LoadedModel:
        return self.engine.model

    def analyze(self, data: bytes, name: str, *, threshold: float, num_frames: int = 32,
                cam_method: str = "gradcam", progress: Progress | None = None) -> Analysis:  # fmt: skip
        """Analyse one uploaded file; a file that cannot be analysed gives a failed Analysis, never
        an exception, so the rest of a batch goes on."""
        report = progress or _ignore_progress
        kind = sniff_kind(data) or ""
        sha256 = hashlib.sha256(data).hexdigest()
        try:
            if not kind:
                read_media(data, name)  # raises the error that says what the bytes are not
            with tempfile.TemporaryDirectory(prefix="deepfake-app-") as folder:
                if kind == "video":
                    result = self.videos.detect(data, name=name, threshold=threshold, num_frames=num_frames,
                                                cam_method=cam_method, annotate=True, output_dir=folder,
                                                progress=report)  # fmt: skip
                    video = Path(result.annotated_video_path).read_bytes()
                    result = _keep_what_is_shown(result)
                else:
                    report(0.1, "Finding faces and scoring them")
                    result = self.images.detect(data, name=name, threshold=threshold, cam_method=cam_method,
                                                output_dir=folder)  # fmt: skip
                    result = dataclasses.replace(result, heatmap_overlay_path=None)  # the folder goes away
                    video = None
                    report(1.0, "Done")
        except DeepfakeError as exc:
            return Analysis(name, kind, sha256, error=exc.message)
        except Exception:  # noqa: BLE001 - a bug on one odd file must not stop the rest of a batch
            log.exception("analysis of %s failed", name)
            return Analysis(name, kind, sha256, error="The analysis failed unexpectedly on this file. "
                            "It may use an unusual encoding; try converting it to JPEG or MP4.")  # fmt: skip
        analysis = Analysis(name, kind, sha256, result=result, annotated_video=video, analyzed_at=result.analyzed_at)
        analysis.explained[(result.cam_method, FAKE_TARGET)] = result
        return analysis

    def view(self, analysis: Analysis, threshold: float, method: str | None = None,
             target: str | None = None) -> AnalysisResult:  # fmt: skip
        """The analysis as shown: explained with ``method`` (None: as analysed) for ``target`` (the
        combined FAKE score, or one head of a two-head model) and labelled at ``threshold``. Detection
        never runs again; another method or target costs one Grad-CAM pass per face."""
        base = analysis.result
        if base is None:
            raise ValueError(f"'{analysis.file_name}' has no result: {analysis.error}")
        method = method if base.cam_method is not None and method is not None else base.cam_method
        target = target if target in self.engine.cam_targets else FAKE_TARGET
        key = (method, target, float(threshold))
        if analysis.view is None or analysis.view[0] != key:
            if (method, target) not in analysis.explained:
                analysis.explained[(method, target)] = self.reexplain(base, method, target)
            analysis.view = (key, self.rejudge(analysis.explained[(method, target)], threshold))
        return analysis.view[1]

    def rejudge(self, result: AnalysisResult, threshold: float) -> AnalysisResult:
        """Labels, suspicious-region boxes and explanations at another threshold."""
        detector = self.videos if isinstance(result, VideoResult) else self.images
        return detector.rejudge(result, threshold)

    def reexplain(self, result: AnalysisResult, method: str, target: str = FAKE_TARGET) -> AnalysisResult:
        """The same scores with maps from another CAM method or target (images: every face; videos:
        the most suspicious frames, the only ones with heatmaps). Regions and sentences follow in
        ``rejudge``."""
        if not isinstance(result, VideoResult):
            return dataclasses.replace(result, faces=self._with_cams(result.faces, method, target), cam_method=method)
        timeline = list(result.timeline)
        for i in result.suspicious_frames:
            timeline[i] = dataclasses.replace(timeline[i], faces=self._with_cams(timeline[i].faces, method, target))
        return dataclasses.replace(result, timeline=timeline, cam_method=method)

    def _with_cams(self, faces: list[FaceResult], method: str, target: str) -> list[FaceResult]:
        faces = [dataclasses.replace(f) for f in faces]
        self.engine.attach_cams(faces, method, target)
        return faces


def _keep_what_is_shown(result: VideoResult) -> VideoResult:
    """Drop the pixels of frames that are never shown (up to 32 HD frames would sit in each
    session's memory) and the paths into the temporary folder that is about to be removed."""
    shown = set(result.suspicious_frames)
    timeline = [dataclasses.replace(frame, heatmap_overlay_path=None, image=frame.image if i in shown else None)
                for i, frame in enumerate(result.timeline)]  # fmt: skip
    return dataclasses.replace(result, timeline=timeline, heatmap_overlay_path=None, annotated_video_path=None)


def evidence_markdown(finding: Finding) -> str:
    """One finding as a Markdown line for a card's Evidence panel: an icon for the way it points,
    where it comes from and how much it counts, then what was found. Text that comes from the
    file itself (names, notes) is escaped, so it shows as written and cannot inject markup."""
    return f"{EVIDENCE_ICONS[finding.leans]} **{markdown_literal(heading(finding))}:** {markdown_literal(finding.summary)}"


def preview(image: np.ndarray) -> np.ndarray:
    return fit(image, PREVIEW_SIDE)


def heatmap_preview(image: np.ndarray, faces: list[FaceResult], opacity: float, show_regions: bool,
                    shape: tuple[int, int] | None = None) -> np.ndarray:  # fmt: skip
    """``shape``: the (height, width) the faces' coordinates refer to, when ``image`` was decoded smaller
    (a photo's ``result.image``; a video frame is kept at its own size)."""
    return fit(render_overlay(image, faces, opacity, show_regions, shape=shape), PREVIEW_SIDE)


def history_table(rows: list[dict]) -> pd.DataFrame:
    """History rows as a typed table for display (times as datetimes, numbers as numbers; errors,
    and frame counts of photos, left empty)."""
    table = pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))
    table["analyzed_at"] = pd.to_datetime(table["analyzed_at"], utc=True)
    for column in ("fake_probability", "confidence", "threshold", "duration_ms"):
        table[column] = pd.to_numeric(table[column], errors="coerce")
    for column in ("faces", "frames"):
        table[column] = pd.to_numeric(table[column], errors="coerce").astype("Int64")
    table.loc[table["media_type"] != "video", "frames"] = pd.NA  # "0 frames" would puzzle for a photo
    return table


def held_out_summary(level: dict) -> list[str]:
    """The evaluation's image-level headline in words, with counts: at 2 of 421 a rate rounded to
    whole percent reads "0%", which claims more than was measured."""
    auc = "–" if level.get("auc") is None else f"{level['auc']:.2f}"
    confusion = level.get("confusion") or {}

    def share(wrong: str, right: str, rate: float) -> str:
        counts = confusion.get(wrong), confusion.get(right)
        if not all(isinstance(c, int) for c in counts) or sum(counts) == 0:
            return f"{rate:.1%}"
        return f"{counts[0]} of {sum(counts)} ({counts[0] / sum(counts):.1%})"

    return [f"AUC {auc} (1 is perfect, 0.5 a coin toss)",
            f"False alarms: {share('fp', 'tn', level.get('fpr', 0.0))} of real files called FAKE",
            f"Missed fakes: {share('fn', 'tp', level.get('fnr', 0.0))} of fakes called REAL"]  # fmt: skip


def summary_stats(rows: list[dict]) -> dict:
    """Counts per verdict, mean fake probability and total time over the analysed files."""
    counts = Counter(row["verdict"] for row in rows)
    scored = [float(row["fake_probability"]) for row in rows if row["verdict"] != "ERROR"]
    return {
        "files": len(rows),
        "verdicts": {verdict: counts.get(verdict, 0) for verdict in (FAKE, REAL, NO_FACE, "ERROR")},
        "mean_fake_probability": float(np.mean(scored)) if scored else None,
    }


_VERDICT_SCALE = alt.Scale(domain=[FAKE, REAL, NO_FACE], range=[VERDICT_COLOURS[v] for v in (FAKE, REAL, NO_FACE)])


def history_chart(table: pd.DataFrame, threshold: float) -> alt.Chart:
    """Fake probability of each analysed file over the time it was analysed."""
    scored = table[table["verdict"] != "ERROR"]
    points = alt.Chart(scored).mark_circle(size=90).encode(
        # UTC like the table; "nice" minutes keep the ticks on round times when files are seconds apart.
        x=alt.X("analyzed_at:T", title="Analysed at (UTC)", scale=alt.Scale(type="utc", nice="minute"),
                axis=alt.Axis(format="%H:%M:%S")),
        y=alt.Y("fake_probability:Q", title="Fake probability", scale=alt.Scale(domain=[0, 1]),
                axis=alt.Axis(format="%")),
        color=alt.Color("verdict:N", scale=_VERDICT_SCALE, title="Verdict"),
        tooltip=[alt.Tooltip("file_name", title="File"), alt.Tooltip("verdict", title="Verdict"),
                 alt.Tooltip("fake_probability:Q", format=".0%", title="Fake probability"),
                 alt.Tooltip("analyzed_at:T", format="%H:%M:%S", title="Analysed at (UTC)", formatType="utc")],
    )  # fmt: skip
    return (points + _threshold_rule(threshold)).properties(
        title="Fake probability of each file as it was analysed (dashed line: the threshold)")


def _threshold_rule(threshold: float) -> alt.Chart:
    return alt.Chart(pd.DataFrame({"threshold": [threshold]})).mark_rule(strokeDash=[6, 4], color="black").encode(
        y="threshold:Q", tooltip=[alt.Tooltip("threshold:Q", format=".0%", title="Threshold")])


def timeline_table(result: VideoResult) -> pd.DataFrame:
    """One row per sampled frame: its time, score (its most suspicious face) and label."""
    suspicious = set(result.suspicious_frames)
    return pd.DataFrame([
        {"time_s": frame.time_s, "frame": frame.index, "fake_probability": frame.fake_probability,
         "face_found": frame.face_found, "most_suspicious": i in suspicious,
         "label": classify(frame.fake_probability, result.threshold) if frame.face_found else NO_FACE}
        for i, frame in enumerate(result.timeline)
    ], columns=["time_s", "frame", "fake_probability", "face_found", "most_suspicious", "label"])  # fmt: skip


def timeline_chart(table: pd.DataFrame, threshold: float) -> alt.Chart:
    base = alt.Chart(table).encode(
        x=alt.X("time_s:Q", title="Seconds into the video"),
        y=alt.Y("fake_probability:Q", title="Fake probability", scale=alt.Scale(domain=[0, 1]),
                axis=alt.Axis(format="%")),
    )  # fmt: skip
    line = base.mark_line(color="#607d8b")
    points = base.mark_circle(size=70).encode(
        color=alt.Color("label:N", scale=_VERDICT_SCALE, title="Frame"),
        tooltip=[alt.Tooltip("time_s:Q", format=".1f", title="Seconds"), "frame",
                 alt.Tooltip("fake_probability:Q", format=".0%", title="Fake probability"), "label"],
    )  # fmt: skip
    rings = base.transform_filter("datum.most_suspicious").mark_point(size=260, color="black", strokeWidth=1.5)
    return line + points + rings + _threshold_rule(threshold)


def checkpoint_metrics(model: LoadedModel) -> pd.DataFrame:
    """The validation numbers the checkpoint carries: its scalars, and for a v2 checkpoint the AUC
    per kind of fake as given (its other conditions and the training history are left out)."""
    values = {k: float(v) for k, v in model.metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    as_given = model.metrics.get("as given")
    if isinstance(as_given, dict):
        values |= {f"AUC, {k[4:].removeprefix('fake:')}": float(v) for k, v in as_given.items() if k.startswith("auc:")}
    return pd.DataFrame({"value": list(values.values())}, index=pd.Index(list(values), name="metric"))


@dataclass
class Evaluation:
    """What ``python -m deepfake.evaluate`` wrote to a reports folder."""

    metrics: dict
    plots: dict[str, Path]  # plot name (roc, reliability, ...) -> PNG present on disk
    threshold_report: str | None

    def other_version(self, loaded_version: str) -> str | None:
        """The version this evaluation measured when it is not the loaded model's (None when it is or
        the report does not say), so that figures of another model are never shown as this one's."""
        version = self.metrics.get("model", {}).get("version")
        return None if version in (None, loaded_version) else str(version)


def load_evaluation(folder: Path) -> Evaluation | None:
    """The evaluation in ``folder``, or None when there is none or it cannot be read."""
    path = folder / "metrics.json"
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(metrics, dict):
        return None
    plots = {name: folder / f"{name}.png" for name in EVALUATION_PLOTS if (folder / f"{name}.png").is_file()}
    report = folder / "THRESHOLD_OPTIMIZATION_REPORT.md"
    return Evaluation(metrics, plots, report.read_text() if report.is_file() else None)


def metrics_table(evaluation: Evaluation) -> pd.DataFrame:
    levels = {"image_level": "Per file", "face_level": "Per face", "made_level": "Real crops vs made fakes",
              "pseudo_fake_level": "Real vs pseudo-fakes"}  # fmt: skip
    rows = {label: {k: evaluation.metrics[key].get(k) for k in METRIC_COLUMNS}
            for key, label in levels.items() if isinstance(evaluation.metrics.get(key), dict)}  # fmt: skip
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(METRIC_COLUMNS))


def breakdown_table(groups: dict) -> pd.DataFrame:
    """``by_source`` or ``by_group`` of an evaluation as a table, one row per source or group."""
    keys = ("n", "auc", "accuracy", "fpr", "fnr")
    return pd.DataFrame.from_dict({name: {k: m.get(k) for k in keys} for name, m in groups.items()},
                                  orient="index", columns=list(keys))  # fmt: skip


def confusion_table(level: dict) -> pd.DataFrame | None:
    counts = level.get("confusion")
    if not isinstance(counts, dict):
        return None
    return pd.DataFrame({"Called REAL": [counts.get("tn"), counts.get("fn")],
                         "Called FAKE": [counts.get("fp"), counts.get("tp")]},
                        index=["Actually real", "Actually fake"])  # fmt: skip


# The tables below read sections that only protocol-v2 evaluations write; each is None for an older
# report, which the tab then shows as before. Columns are named for reading, rates rounded.


def kinds_table(metrics: dict) -> pd.DataFrame | None:
    """One row per kind of fake: AUC as given and with compression matched, share caught, calibration,
    and each head's AUC (compression matched) for two-head models."""
    kinds = metrics.get("kinds")
    if not isinstance(kinds, dict) or not kinds:
        return None
    rows = {}
    for kind, k in kinds.items():
        rows[kind] = {"Made from real crops": k["population"] == "made", "Fakes": k["n_fake"], "Reals": k["n_real"],
                      "AUC as given": k["as_given"]["auc"], "AUC compression matched": k["matched"]["auc"],
                      "AUC matched, 95% interval": interval_text(k["matched"].get("auc_interval")),
                      "Caught as given": k["as_given"]["recall"], "Caught matched": k["matched"]["recall"],
                      "ECE": k["as_given"]["ece"]}  # fmt: skip
        rows[kind] |= {f"{head} head AUC (matched)": aucs["matched"] for head, aucs in k.get("heads", {}).items()}
    return pd.DataFrame.from_dict(rows, orient="index").round(3)


def ladder_table(metrics: dict) -> pd.DataFrame | None:
    """One row per degradation step: AUC, false alarms at the threshold and the reals' mean P(fake)."""
    ladder = metrics.get("ladder")
    if not isinstance(ladder, dict):
        return None
    rows = {step: {"AUC fake folders": r["auc_files"], "AUC made fakes": r["auc_made"], "False alarms": r["fpr"],
                   "Fakes caught": r["recall_files"], "Reals' mean P(fake)": r["real_mean"],
                   "Change from as given": r["real_mean_change"]} for step, r in ladder["rows"].items()}  # fmt: skip
    return pd.DataFrame.from_dict(rows, orient="index").round(3)


def ladder_verdict(metrics: dict) -> str | None:
    """The ladder's target in a sentence: do authentic faces look more fake once compressed?"""
    ladder = metrics.get("ladder")
    target = ladder.get("target") if isinstance(ladder, dict) else None
    if not target or target.get("met") is None:
        return None
    changes = ", ".join(f"{step} {change:+.3f}" for step, change in zip(target["steps"], target["changes"]))
    outcome = "met" if target["met"] else "not met"
    return (f"Target {outcome}: the reals' mean fake probability may climb by at most {target['limit']:.2f} under "
            f"compression ({changes}).")  # fmt: skip


def authentic_tables(metrics: dict) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """Faces of the authentic photos and the authentic clips, each with its score and verdict."""
    authentic = metrics.get("authentic")
    if not isinstance(authentic, dict):
        return None, None
    threshold = authentic.get("threshold", 0.5)
    photos = videos = None
    if authentic.get("photos"):
        photos = pd.DataFrame([{"Photo": f["file"], "Face": f["face"], "Fake probability": f["p_fake"],
                                "Verdict": classify(f["p_fake"], threshold), "Cut off": f["cut_off"]}
                               for f in authentic["photos"]["faces"]],
                              columns=["Photo", "Face", "Fake probability", "Verdict", "Cut off"]).round(3)  # fmt: skip
    if authentic.get("videos"):
        videos = pd.DataFrame([{"Clip": c["file"], "Frames in training": c["in_training"], "Fake probability": c["p_fake"],
                                "Verdict": classify(c["p_fake"], threshold),
                                "Frames flagged": f"{c['flagged_frames']} of {c['frames_with_faces']}"}
                               for c in authentic["videos"]["clips"]],
                              columns=["Clip", "Frames in training", "Fake probability", "Verdict", "Frames flagged"]
                              ).round(3)  # fmt: skip
    return photos, videos


def loko_table(metrics: dict) -> pd.DataFrame | None:
    """Leave-one-kind-out checkpoints on their left-out kind, beside the evaluated model (empty when none
    were evaluated; None for older reports)."""
    loko = metrics.get("loko")
    if not isinstance(loko, dict):
        return None
    rows = {kind: {"Checkpoint": Path(m["model"]).name, "AUC without it in training": m["auc_matched"],
                   "95% interval": interval_text(m.get("auc_matched_interval")),
                   "AUC of this model": m["main_model_auc_matched"], "Left out (recorded)": m["left_out_in_training"]}
            for kind, m in loko.get("models", {}).items()}  # fmt: skip
    columns = ["Checkpoint", "AUC without it in training", "95% interval", "AUC of this model", "Left out (recorded)"]
    return pd.DataFrame.from_dict(rows, orient="index", columns=columns).round(3)


def demote_headings(markdown: str, levels: int) -> str:
    """Push every Markdown heading down ``levels`` levels, so a report's title fits inside a page."""
    return re.sub(r"^(#{1,6})(?=\s)", lambda m: "#" * min(6, len(m[1]) + levels), markdown, flags=re.MULTILINE)


def read_model_card(path: Path = MODEL_CARD) -> str | None:
    return path.read_text() if path.is_file() else None
