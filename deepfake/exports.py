"""Exports of analysis history: CSV and JSON with one schema (``HISTORY_COLUMNS``), shared by the
dashboard, the API and the CLI, and a self-contained HTML report. Plain functions returning
bytes/str, so they are tested directly."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections.abc import Iterable
from typing import TextIO

import numpy as np

from deepfake.figures import encode_jpeg, encode_png, fit, gauge_png, timeline_png
from deepfake.provenance.findings import EVIDENCE_RULES, heading
from deepfake.results import HISTORY_COLUMNS, AnalysisResult, DetectionResult, FaceResult, VideoResult, now_iso
from deepfake.wording import (
    CAVEAT,
    METHOD_LABELS,
    duration,
    face_caption,
    frame_caption,
    percent,
    verdict_badge,
    verdict_sentence,
)
from explainability.faces import render_overlay

REPORT_IMAGE_SIDE = 900  # pixels: enough to see a face, small enough to mail a report of a session


def history_row(result: AnalysisResult | None = None, *, file_name: str = "", error: str = "",
                media_type: str = "", sha256: str = "") -> dict:  # fmt: skip
    """A row for a result, or for a file that failed (verdict ERROR, the error's message)."""
    if result is not None:
        return result.history_row()
    row = {column: "" for column in HISTORY_COLUMNS}
    row.update(analyzed_at=now_iso(), file_name=file_name, sha256=sha256, media_type=media_type,
               verdict="ERROR", error=error)  # fmt: skip
    return row


# A spreadsheet runs a cell that starts with one of these as a formula (=HYPERLINK(...) in a file
# name calls out when the CSV is opened); tab and CR start one in some programs too.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> object:
    """A value safe to put in a CSV cell: text that a spreadsheet would run as a formula gets a
    leading apostrophe (shown as text, the rest intact). Numbers are left alone: -0.5 is data."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class CsvStream:
    """The history CSV written row by row, so a long scan's results are on disk as they come.
    Every CSV the project writes goes through here, so every cell passes :func:`csv_cell`."""

    def __init__(self, file: TextIO) -> None:
        self.file = file
        # Columns a row lacks are written empty; keys outside the schema are left out.
        # CRLF line ends (RFC 4180): the writer quotes cells holding any line-end character, so a
        # CR in a file name cannot start a new row, as it could with "\n" line ends.
        self.writer = csv.DictWriter(file, fieldnames=list(HISTORY_COLUMNS), extrasaction="ignore", lineterminator="\r\n")
        self.writer.writeheader()

    def write(self, row: dict) -> None:
        self.writer.writerow({key: csv_cell(value) for key, value in row.items()})
        self.file.flush()


def history_csv(rows: Iterable[dict]) -> str:
    buffer = io.StringIO()
    stream = CsvStream(buffer)
    for row in rows:
        stream.write(row)
    return buffer.getvalue()


def history_json(rows: Iterable[dict], results: Iterable[dict] | None = None) -> str:
    """``{"schema": [...], "rows": [...]}``, optionally with each analysis's full ``to_dict()``."""
    payload: dict = {"schema": list(HISTORY_COLUMNS), "rows": [{k: row.get(k, "") for k in HISTORY_COLUMNS} for row in rows]}
    if results is not None:
        payload["results"] = list(results)
    return json.dumps(payload, indent=1)


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _img(data: bytes, mime: str, alt: str, css: str = "") -> str:
    return f'<img src="{_data_uri(data, mime)}" alt="{html.escape(alt)}" class="{css}">'


def _photo(image: np.ndarray, alt: str) -> str:
    # JPEG for photographs keeps a session report to a few MB; charts and crops stay PNG.
    return _img(encode_jpeg(fit(image, REPORT_IMAGE_SIDE)), "image/jpeg", alt, "photo")


def _figure(image_html: str, caption: str, css: str = "") -> str:
    return f"<figure class='{css}'>{image_html}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _faces_html(faces: list[FaceResult]) -> str:
    crops = [f for f in faces if not f.whole_image and f.crop is not None]
    if not crops:
        return ""
    figures = "".join(_figure(_img(encode_png(f.crop), "image/png", f"face {i}", "face"), face_caption(i, f))
                      for i, f in enumerate(crops, 1))
    return f"<h3>Faces</h3><div class='row'>{figures}</div>"


def _heatmap_pair(image: np.ndarray, faces: list[FaceResult], caption: str, opacity: float,
                  shape: tuple[int, int] | None = None) -> str:  # fmt: skip
    """``shape``: the (height, width) the faces' coordinates refer to, when ``image`` was decoded smaller."""
    pictures = _figure(_photo(image, "original"), f"{caption}: original", "picture")
    if any(f.cam is not None for f in faces):
        pictures += _figure(_photo(render_overlay(image, faces, opacity, shape=shape), "heatmap"),
                            f"{caption}: heatmap (warm colours: where the model looked hardest)", "picture")  # fmt: skip
    return f"<div class='row'>{pictures}</div>"


def _facts(result: AnalysisResult) -> str:
    facts = [
        ("Fake probability", percent(result.fake_probability)),
        ("Threshold (FAKE at or above)", percent(result.threshold)),
        ("Confidence in the verdict", percent(result.confidence)),
        ("Faces found", str(result.face_count) + (" (most in one frame)" if result.media_type == "video" else "")),
    ]
    if isinstance(result, VideoResult):
        facts += [("Video length", f"{result.duration_s:.1f} s"), ("Frames analysed", str(result.frame_count))]
    facts += [
        ("Analysed at (UTC)", result.analyzed_at),
        ("Time taken", duration(result.timings.total_ms)),
        ("Heatmap method", METHOD_LABELS.get(result.cam_method or "", "none")),
        ("Model", f"{result.model_name} {result.model_version}"),
        ("SHA-256 of the file", result.sha256),
    ]
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts)
    return f"<table class='facts'>{body}</table>"


def _evidence_html(result: AnalysisResult) -> str:
    items = "".join(f"<li class='{f.weight} leans-{f.leans or 'none'}'><b>{html.escape(heading(f))}:</b> "
                    f"{html.escape(f.summary)}</li>" for f in result.evidence)  # fmt: skip
    return f"<h3>Evidence</h3><ul class='evidence'>{items}</ul>" if items else ""


def _result_html(result: AnalysisResult, opacity: float) -> str:
    parts = [
        f"<section class='result'><h2>{verdict_badge(result.verdict)} {html.escape(result.source)}</h2>",
        f"<p class='lead'>{html.escape(verdict_sentence(result))}</p>",
        "<div class='row'>" + _img(gauge_png(result.fake_probability, result.threshold), "image/png", "gauge", "gauge")
        + _facts(result) + "</div>",
    ]  # fmt: skip
    if result.explanation:
        parts.append(f"<p><b>Where the model looked:</b> {html.escape(result.explanation)}</p>")
    parts += [f"<p class='warning'>{html.escape(w)}</p>" for w in result.warnings]
    parts.append(_evidence_html(result))
    if isinstance(result, DetectionResult):
        if result.image is not None:
            parts.append(_heatmap_pair(result.image, result.faces, "Photo", opacity, (result.height, result.width)))
        parts.append(_faces_html(result.faces))
    elif isinstance(result, VideoResult) and result.timeline:
        suspicious = [result.timeline[i] for i in result.suspicious_frames]
        parts.append("<h3>Fake probability over time</h3>" + _img(timeline_png(
            [f.time_s for f in result.timeline], [f.fake_probability for f in result.timeline], result.threshold,
            [f.time_s for f in suspicious]), "image/png", "timeline", "chart"))  # fmt: skip
        if suspicious:
            parts.append("<h3>Most suspicious frames</h3>")
        for frame in suspicious:
            if frame.image is not None:
                parts.append(_heatmap_pair(frame.image, frame.faces, frame_caption(frame), opacity))
        if suspicious:
            parts.append(_faces_html(suspicious[0].faces))
    return "\n".join(parts) + "</section>"


_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #212121; line-height: 1.45; }
.row { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
figure { margin: 0; } figcaption { font-size: 0.85em; color: #555; }
figure.picture { flex: 1 1 300px; max-width: 520px; } /* original and heatmap side by side, same size */
img.photo { max-width: 520px; width: 100%; } img.face { width: 160px; } img.gauge { width: 300px; }
img.chart { max-width: 100%; }
table { border-collapse: collapse; font-size: 0.9em; } table.facts { flex: 1; min-width: 320px; } th, td { text-align: left; padding: 0.2em 0.6em; }
table.summary td, table.summary th { border-bottom: 1px solid #ddd; } .facts th { color: #555; font-weight: normal; }
.facts td { word-break: break-all; } .lead { font-size: 1.1em; font-weight: 600; }
.warning { background: #fff3e0; padding: 0.4em 0.7em; border-left: 4px solid #ef6c00; }
ul.evidence { padding-left: 1.2em; } ul.evidence li { margin: 0.25em 0; }
li.leans-fake { color: #8e0000; } li.leans-real { color: #1b5e20; } li.strong { font-weight: 600; }
.caveat { background: #f5f5f5; padding: 0.6em 0.9em; border-left: 4px solid #9e9e9e; }
section.result { border-top: 2px solid #e0e0e0; margin-top: 2em; padding-top: 0.5em; }
"""


def html_report(results: Iterable[AnalysisResult], *, errors: Iterable[dict] = (),
                title: str = "Deepfake check report", opacity: float = 0.45) -> str:  # fmt: skip
    """One HTML file with everything inside (images as base64 data URIs, inline CSS, no scripts):
    it opens offline and can be mailed or archived as is. ``errors`` are history rows of files
    that could not be analysed (see :func:`history_row`)."""
    results, errors = list(results), list(errors)
    summary_rows = "".join(
        f"<tr><td>{html.escape(r.source)}</td><td>{r.media_type}</td><td>{r.verdict}</td>"
        f"<td>{percent(r.fake_probability)}</td><td>{percent(r.threshold)}</td><td>{r.face_count}</td>"
        f"<td>{html.escape(r.analyzed_at)}</td></tr>"
        for r in results
    ) + "".join(
        f"<tr><td>{html.escape(str(e.get('file_name', '')))}</td><td>{html.escape(str(e.get('media_type', '')))}"
        f"</td><td>ERROR</td><td colspan='4'>{html.escape(str(e.get('error', '')))}</td></tr>"
        for e in errors
    )  # fmt: skip
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Generated {now_iso()} (UTC). {len(results)} file(s) analysed"
        + (f", {len(errors)} could not be analysed" if errors else "") + ".</p>",
        f"<p class='caveat'>{html.escape(CAVEAT)}</p>",
        f"<p class='caveat'>{html.escape(EVIDENCE_RULES)}</p>",
        "<table class='summary'><tr><th>File</th><th>Type</th><th>Verdict</th><th>Fake probability</th>"
        f"<th>Threshold</th><th>Faces</th><th>Analysed at (UTC)</th></tr>{summary_rows}</table>",
        *(_result_html(r, opacity) for r in results),
    ]  # fmt: skip
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>" + "\n".join(body) + "</body></html>")  # fmt: skip
