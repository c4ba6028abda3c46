"""Deepfake check: the Streamlit dashboard. ``streamlit run app.py``

Layout only: everything shown is computed by the ``deepfake`` package (dashboard, samples,
exports, figures, wording). The model path comes from the DEEPFAKE_MODEL environment variable
(default models/image_model.pth).
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from deepfake import DetectionEngine
from deepfake.errors import ModelError, TrustAnchorsError
from deepfake.exports import history_csv, history_json, html_report
from deepfake.figures import gauge_png
from deepfake.interfaces import dashboard, samples
from deepfake.interfaces.dashboard import Analysis, Workbench
from deepfake.provenance import EVIDENCE_RULES, TRUST_ANCHORS_ENV
from deepfake.results import DetectionResult, FaceResult, VideoResult
from deepfake.wording import (
    CAM_TARGET_LABELS,
    CAVEAT,
    METHOD_LABELS,
    duration,
    face_caption,
    file_size,
    frame_caption,
    markdown_literal,
    percent,
    verdict_badge,
    verdict_sentence,
)
from explainability.gradcam import CAM_METHODS

TITLE = "Deepfake check"
TRAIN_COMMAND = "python -m deepfake.train --data ../shared/data/faces --out models/image_model.pth"
EVALUATE_COMMAND = "python -m deepfake.evaluate --data ../shared/data/faces --out reports"
METRIC_LABELS = {"n": "Files", "auc": "AUC", "accuracy": "Accuracy", "precision": "Precision", "recall": "Recall",
                 "f1": "F1", "eer": "EER", "fpr": "False alarms (FPR)", "fnr": "Missed fakes (FNR)", "ece": "ECE"}  # fmt: skip

st.set_page_config(page_title=TITLE, page_icon=":material/policy:", layout="wide")


@st.cache_resource(show_spinner="Loading the detection model…", max_entries=1)
def load_workbench(model_path: str | None, modified: float) -> Workbench:
    # One engine for every browser session: the model loads once and the engine serialises model calls.
    # ``modified`` is only part of the cache key, so a retrained model file replaces the cached one.
    return Workbench(DetectionEngine.load(model_path))


@st.cache_resource(show_spinner="Making a fake from the sample photo…")
def fake_sample(_bench: Workbench) -> tuple[str, bytes]:
    return samples.sample_fake(_bench.engine.face_detector)


gauge = st.cache_data(show_spinner=False, max_entries=512)(gauge_png)

st.title(TITLE)
try:
    model_path = dashboard.model_path_from_env()
    bench = load_workbench(model_path, dashboard.model_file_stamp(model_path))
except ModelError as exc:  # failures are not cached: reloading the page tries again
    st.error(f"**The detection model is missing or cannot be used.**\n\n{exc.message}", icon=":material/error:")
    st.markdown("This dashboard needs a trained model to analyse anything. From the repository folder, train one with")
    st.code(TRAIN_COMMAND, language="bash")
    st.markdown(f"or set the `{dashboard.MODEL_ENV}` environment variable to the path of an existing checkpoint. "
                "Once the model file is in place, reload this page.")  # fmt: skip
    st.stop()
except TrustAnchorsError as exc:
    st.error(f"**The trust anchors for content credentials cannot be used.**\n\n{exc.message}\n\nFix or unset "
             f"`{TRUST_ANCHORS_ENV}` and reload this page.", icon=":material/error:")  # fmt: skip
    st.stop()

model = bench.model
state = st.session_state
state.setdefault("analyses", [])  # list[Analysis] of this browser tab, newest first
state.setdefault("analysed_uploads", set())  # file ids of uploads already analysed
evaluation = dashboard.load_evaluation(dashboard.reports_dir_from_env())

with st.sidebar:
    st.header("Settings")
    threshold = st.slider(
        "Call a face FAKE from", 5, 95, round(model.threshold * 100), step=1, format="%d%%", key="threshold",
        help="A face whose fake probability reaches this value is labelled FAKE. Higher means fewer false "
             f"alarms but more missed fakes. The model's default is {percent(model.threshold)}.",
    ) / 100  # fmt: skip
    num_frames = st.slider("Frames checked per video", 8, 64, 32, step=8, key="num_frames",
                           help="Frames are spread evenly over the video. More frames: slower, but a short "
                                "manipulated moment is less likely to be missed.")  # fmt: skip

    st.header("Model")
    st.markdown(f"**{markdown_literal(model.name)}**, version `{model.version}`")
    if model.trained_on:
        st.caption("Trained on: " + markdown_literal(", ".join(map(str, model.trained_on))))
    checkpoint_metrics = dashboard.checkpoint_metrics(model)
    if len(checkpoint_metrics):
        st.markdown("Validation results stored with the model:")
        st.dataframe(checkpoint_metrics, column_config={"value": st.column_config.NumberColumn("value", format="%.3f")})
    if evaluation is not None and isinstance(evaluation.metrics.get("image_level"), dict):
        other = evaluation.other_version(model.version)
        measured_for = f" for version `{other}`, not the loaded one" if other else ""
        st.markdown(f"Measured on held-out files{measured_for} (details in *Model performance*):\n"
                    + "".join(f"- {line}\n" for line in dashboard.held_out_summary(evaluation.metrics["image_level"])))
    with st.expander("Model card", icon=":material/description:"):
        card = dashboard.read_model_card()
        st.markdown(card or "The model card (`models/MODEL_CARD.md`) has not been written yet.")


def analyse(queue: list[tuple[str | None, str, bytes]]) -> None:
    """Analyse (upload id or None, name, bytes) in turn. Each file gets a slot above the older
    results, showing its progress bar until its result card replaces it."""
    slots = [st.empty() for _ in queue]
    for slot, (_, name, _) in zip(slots, queue):
        slot.progress(0.0, text=f"{name}: waiting")
    for position, (slot, (upload_id, name, data)) in enumerate(zip(slots, queue)):
        analysis = bench.analyze(data, name, threshold=threshold, num_frames=num_frames,
                                 progress=progress_to(slot, name))  # fmt: skip
        state.analyses.insert(position, analysis)  # newest first, a batch in upload order
        if upload_id is not None:
            # Marked only once stored: a rerun that interrupts a batch picks up where it stopped.
            state.analysed_uploads.add(upload_id)
        with slot.container():
            result_card(analysis)


def progress_to(slot: DeltaGenerator, name: str) -> Callable[[float, str], None]:
    return lambda fraction, message: slot.progress(min(max(fraction, 0.0), 1.0), text=f"{name}: {message}")


def faces_row(faces: list[FaceResult], label: str) -> None:
    crops = [f for f in faces if not f.whole_image and f.crop is not None]
    if not crops:
        return
    st.markdown(label)
    for start in range(0, len(crops), 6):
        for column, (number, face) in zip(st.columns(6), enumerate(crops[start : start + 6], start + 1)):
            column.image(face.crop, caption=face_caption(number, face))


def heatmap_view(analysis: Analysis, result: DetectionResult | VideoResult) -> None:
    if result.cam_method is None:
        st.caption("This model file cannot show heatmaps (Grad-CAM needs a model in our checkpoint format).")
        return
    methods = list(CAM_METHODS)
    method_column, opacity_column, boxes_column = st.columns(3)
    # The default index is the analysis's own method, a constant: a changing default would reset the widget.
    method_column.radio("Method", methods, index=methods.index(analysis.result.cam_method), horizontal=True,
                        format_func=METHOD_LABELS.get, key=f"method-{analysis.id}",
                        help="Two ways to compute where the model looked. Grad-CAM++ often spreads the "
                             "attention over more of the face.")  # fmt: skip
    targets = bench.engine.cam_targets
    if len(targets) > 1:  # a two-head model: the map can explain the combined score or one kind of evidence
        method_column.radio("Explain", targets, horizontal=True, format_func=CAM_TARGET_LABELS.get,
                            key=f"target-{analysis.id}",
                            help="The combined score, or one kind of evidence alone: blending (a face region "
                                 "pasted into the photo) or generation (the whole face synthesised).")  # fmt: skip
    opacity = opacity_column.slider("Heatmap strength", 0.0, 1.0, 0.45, 0.05, key=f"opacity-{analysis.id}")
    boxes = boxes_column.toggle("Boxes around suspicious areas", True, key=f"boxes-{analysis.id}",
                                help="Drawn only on faces labelled FAKE.")  # fmt: skip
    if isinstance(result, VideoResult):
        frames = [result.timeline[i] for i in result.suspicious_frames]
        pictures = [(frame.image, frame.faces, frame_caption(frame), None) for frame in frames if frame.image is not None]
        st.markdown(f"The {len(pictures)} most suspicious frames:")
    else:  # a big JPEG is kept as decoded, smaller than the picture its faces' coordinates refer to
        pictures = [(result.image, result.faces, "Photo", (result.height, result.width))]
    for image, faces, caption, shape in pictures:
        original, heatmap = st.columns(2)
        # Both stretched: at natural size a small video frame would sit beside a wider caption-driven one.
        original.image(dashboard.preview(image), caption=f"{caption}: original", width="stretch")
        heatmap.image(dashboard.heatmap_preview(image, faces, opacity, boxes, shape), width="stretch",
                      caption=f"{caption}: heatmap, warm colours where the model looked hardest")  # fmt: skip
    if result.explanation:
        st.markdown(f"**In words:** {markdown_literal(result.explanation)}")


def evidence_panel(analysis: Analysis, result: DetectionResult | VideoResult) -> None:
    """What the model, the file's content credentials and its metadata each say, in words."""
    with st.container(border=True, key=f"evidence-{analysis.id}"):
        st.markdown("**Evidence**: what the model, the file's content credentials and its metadata say")
        for finding in result.evidence:
            line = dashboard.evidence_markdown(finding)
            if finding.decides:
                st.error(line, icon=":material/gavel:")
            else:
                st.markdown(line)
        st.caption(EVIDENCE_RULES)
        with st.expander("Raw fields behind the evidence", icon=":material/data_object:"):
            st.json([finding.to_dict() for finding in result.evidence], expanded=2)


def result_card(analysis: Analysis) -> None:
    with st.container(border=True, key=f"result-{analysis.id}"):
        name = markdown_literal(analysis.file_name)
        if not analysis.ok:
            st.markdown(f"### {verdict_badge('ERROR')} {name}", unsafe_allow_html=True)
            st.error(f"This file could not be analysed. {analysis.error}", icon=":material/error:")
            return
        result = bench.view(analysis, threshold, state.get(f"method-{analysis.id}"), state.get(f"target-{analysis.id}"))
        st.markdown(f"### {verdict_badge(result.verdict)} {name}", unsafe_allow_html=True)
        gauge_column, facts_column = st.columns([1, 2], vertical_alignment="center")
        gauge_column.image(gauge(result.fake_probability, result.threshold), width=300)
        with facts_column:
            st.markdown(f"**{verdict_sentence(result)}**")
            probability, confidence, faces, took = st.columns(4)
            probability.metric("Fake probability", percent(result.fake_probability))
            confidence.metric("Confidence", percent(result.confidence),
                              help="The model's confidence in its own call: the fake probability when it says "
                                   "FAKE, one minus it when it says REAL. Close to 50% means the model is unsure.")  # fmt: skip
            faces.metric("Faces found", result.face_count,
                         help="Most faces in one checked frame." if isinstance(result, VideoResult) else None)
            took.metric("Time taken", duration(result.timings.total_ms))
            for warning in result.warnings:
                st.warning(warning, icon=":material/warning:")
        evidence_panel(analysis, result)
        if isinstance(result, VideoResult):
            rule = ("the mean over a run of confidently fake frames" if result.aggregation.get("rule") == "confident_run"
                    else "the mean over the frames with a face")  # fmt: skip
            st.caption(f"{result.duration_s:.1f} s of video, {result.frame_count} frames checked. The video's score "
                       f"is {rule}.")  # fmt: skip
            chart, player = st.columns([3, 2])
            with chart:
                st.markdown("**Fake probability over time**: each dot is one checked frame (its most suspicious "
                            "face); circled: the most suspicious frames; dashed line: the threshold.")  # fmt: skip
                st.altair_chart(dashboard.timeline_chart(dashboard.timeline_table(result), result.threshold),
                                width="stretch")  # fmt: skip
            with player:
                st.markdown("**The video, each face boxed in its score's colour**")
                st.video(analysis.annotated_video, format="video/mp4")
            if result.suspicious_frames:
                faces_row(result.timeline[result.suspicious_frames[0]].faces,
                          "**Faces in the most suspicious frame**, as the model sees them:")  # fmt: skip
        else:
            faces_row(result.faces, "**Faces**, as the model sees them:")
        # Keyed and tracked, so it stays open across reruns (a threshold change re-renders every card), and lazy:
        # heatmaps are drawn only for the cards whose view is open.
        heatmap = st.expander("Heatmap: where the model looked", icon=":material/visibility:",
                              key=f"heatmap-{analysis.id}", on_change="rerun")  # fmt: skip
        if heatmap.open:
            with heatmap:
                heatmap_view(analysis, result)
        st.download_button("Report for this file (HTML)", data=lambda: html_report([result]), on_click="ignore",
                           file_name=f"{analysis.file_name}.report.html", mime="text/html",
                           key=f"report-{analysis.id}", icon=":material/download:")  # fmt: skip


st.markdown("Check whether the faces in a photo or a video were manipulated: swapped, blended or generated.")
analyse_tab, history_tab, performance_tab = st.tabs(["Analyse", "History", "Model performance"])

with analyse_tab:
    st.info(CAVEAT, icon=":material/info:")
    uploads = st.file_uploader(
        "Drop photos and videos here, several at once if you like", type=dashboard.UPLOAD_TYPES,
        accept_multiple_files=True, key="uploads",
        help="Files are analysed on this server, kept in memory for this browser tab only, and never stored.",
    )  # fmt: skip
    st.caption(f"Photos: JPEG, PNG, WebP, BMP, and phone photos in HEIC or AVIF. Videos: MP4, MOV, AVI, WebM, MKV. Up to "
               f"{file_size(st.get_option('server.maxUploadSize'))} per file. No file at hand? Try a sample:")  # fmt: skip
    queue = [(f.file_id, f.name, f.getvalue()) for f in uploads or [] if f.file_id not in state.analysed_uploads]
    with st.container(horizontal=True):
        if st.button("Try a real photo", key="try-real", icon=":material/person:"):
            queue.append((None, *samples.sample_real()))
        if st.button("Try a fake made from it", key="try-fake", icon=":material/theater_comedy:",
                     help="The real photo with its face altered and blended back in, leaving the kind of seam "
                          "face-swap tools leave."):  # fmt: skip
            queue.append((None, *fake_sample(bench)))
    analyse(queue)
    for item in state.analyses[len(queue) :]:
        result_card(item)

with history_tab:
    rows = [item.history_row(threshold) for item in state.analyses]
    if not rows:
        st.info("Nothing analysed yet. Every file you analyse in this browser tab is listed here.")
    else:
        stats = dashboard.summary_stats(rows)
        columns = st.columns(6)
        columns[0].metric("Files", stats["files"])
        for column, (verdict, label) in zip(columns[1:5], (("FAKE", "FAKE"), ("REAL", "REAL"), ("NO FACE", "NO FACE"),
                                                            ("ERROR", "Could not analyse"))):  # fmt: skip
            column.metric(label, stats["verdicts"][verdict])
        mean = stats["mean_fake_probability"]
        columns[5].metric("Mean fake probability", "–" if mean is None else percent(mean))
        table = dashboard.history_table(rows)
        st.dataframe(table, hide_index=True, key="history-table", column_order=dashboard.HISTORY_DISPLAY_ORDER, placeholder="–",
                     column_config={
            "analyzed_at": st.column_config.DatetimeColumn("Analysed at (UTC)", format="YYYY-MM-DD HH:mm:ss"),
            "file_name": "File", "verdict": "Verdict", "media_type": "Type", "model_version": "Model version",
            "fake_probability": st.column_config.NumberColumn("Fake probability", format="percent"),
            "confidence": st.column_config.NumberColumn("Confidence", format="percent"),
            "threshold": st.column_config.NumberColumn("Threshold", format="percent"),
            "faces": "Faces", "frames": "Frames checked", "warnings": "Caveats", "error": "Problem",
            "evidence": "Evidence from the file", "decided_by": "Decided by (not the model)",
            "duration_ms": st.column_config.NumberColumn("Time taken (ms)", format="%.0f"), "sha256": "SHA-256",
        })  # fmt: skip
        st.caption("Click a column header to sort. Labels follow the threshold set in the sidebar; times are when "
                   "each file was analysed. The history lives in this browser tab only and is gone when it closes.")  # fmt: skip
        st.altair_chart(dashboard.history_chart(table, threshold), width="stretch")
        analysed = [item for item in state.analyses if item.ok]
        results = [bench.view(item, threshold, state.get(f"method-{item.id}"), state.get(f"target-{item.id}"))
                   for item in analysed]  # fmt: skip
        errors = [row for item, row in zip(state.analyses, rows) if not item.ok]
        st.markdown("**Download** (the CSV and JSON share one layout with the API's exports):")
        with st.container(horizontal=True):
            st.download_button("History as CSV", history_csv(rows), file_name="deepfake-history.csv", mime="text/csv",
                               on_click="ignore", key="download-csv", icon=":material/download:")  # fmt: skip
            st.download_button("History as JSON", lambda: history_json(rows, [r.to_dict() for r in results]),
                               file_name="deepfake-history.json", mime="application/json", on_click="ignore",
                               key="download-json", icon=":material/download:")  # fmt: skip
            st.download_button("Report with pictures (HTML)", lambda: html_report(results, errors=errors),
                               file_name="deepfake-session-report.html", mime="text/html", on_click="ignore",
                               key="download-html", icon=":material/download:")  # fmt: skip
        st.divider()
        if st.button("Clear history", key="clear-history", icon=":material/delete:",
                     help="Forget every result of this browser tab. Download what you need first."):  # fmt: skip
            state.analyses = []
            st.rerun()

with performance_tab:
    if evaluation is None:
        st.info("No evaluation report yet. After training, measure the model on labelled data with "
                f"`{EVALUATE_COMMAND}`; its results will show here.", icon=":material/info:")  # fmt: skip
    else:
        report = evaluation.metrics
        evaluated = report.get("model", {})
        protocol = report.get("protocol", {})
        st.markdown(f"Measured by `deepfake.evaluate` for model **{markdown_literal(str(evaluated.get('name', '?')))}** "
                    f"version `{evaluated.get('version', '?')}` on `{protocol.get('data', '?')}` "
                    f"(split `{protocol.get('split', '?')}`).")  # fmt: skip
        if other := evaluation.other_version(model.version):
            st.warning(f"These numbers are for version {other}, not the loaded {model.version}.")
        st.subheader("How well it separates real from fake")
        st.dataframe(dashboard.metrics_table(evaluation), column_config={
            k: st.column_config.NumberColumn(label, format="%d" if k == "n" else "%.3f")
            for k, label in METRIC_LABELS.items()})  # fmt: skip
        st.caption("AUC: 1 means every fake scores above every real file, 0.5 is a coin toss. False alarms: share "
                   "of real files wrongly called FAKE. Missed fakes: share of fakes called REAL. EER: the error rate "
                   "where both are equal. ECE: how far the stated probabilities are from what actually happens "
                   "(0 is best).")  # fmt: skip
        plot_columns = st.columns(3)
        with plot_columns[0]:
            st.markdown(f"**Right and wrong calls at the {percent(protocol.get('threshold', model.threshold))} "
                        "threshold** (per file)")  # fmt: skip
            confusion = dashboard.confusion_table(report.get("image_level", {}))
            if confusion is not None:
                st.dataframe(confusion)
            if "confusion" in evaluation.plots:
                st.image(str(evaluation.plots["confusion"]))
        for column, (name, caption) in zip(plot_columns[1:], (
                ("roc", "ROC: fakes caught (up) against false alarms (right); the closer to the top left, the better"),
                ("reliability", "Reliability: stated probability against how often files really were fake; "
                                "on the diagonal means honest probabilities"))):  # fmt: skip
            if name in evaluation.plots:
                column.image(str(evaluation.plots[name]), caption=caption)
        if evaluation.threshold_report:
            with st.expander("Threshold report: why the threshold is where it is"):
                st.markdown(dashboard.demote_headings(evaluation.threshold_report, 3))
        kinds = dashboard.kinds_table(report)
        if kinds is not None:
            st.subheader("By kind of fake")
            st.dataframe(kinds)
            st.caption("Each kind against real faces, as given and with both re-saved at one JPEG quality "
                       f"({protocol.get('matched', '?')}), so that the sources' own compression cannot tell them apart. "
                       "Kinds made from real crops are compared with the crops they were made from. 95% interval: "
                       "where the AUC could fall on another draw of held-out faces of this size (bootstrap). Caught: "
                       "share of that kind's fakes called FAKE. A two-head model also shows each head's AUC: which kind of "
                       "evidence fires on which kind of fake.")  # fmt: skip
        ladder = dashboard.ladder_table(report)
        if ladder is not None:
            st.subheader("After compression and resizing (real and fake files alike)")
            st.dataframe(ladder)
            if verdict := dashboard.ladder_verdict(report):
                st.caption(verdict)
        photos, clips = dashboard.authentic_tables(report)
        if photos is not None or clips is not None:
            st.subheader("Authentic photos and videos")
            for table in (photos, clips):
                if table is not None:
                    st.dataframe(table, hide_index=True)
            st.caption("All authentic: every FAKE verdict here is a false alarm. Clips whose frames were in the "
                       "training split are marked.")  # fmt: skip
        loko = dashboard.loko_table(report)
        if loko is not None:
            st.subheader("Kinds of fake never seen in training")
            if loko.empty:
                st.info("No model trained without a kind of fake was evaluated, so these numbers say nothing about "
                        "kinds never seen in training.", icon=":material/info:")  # fmt: skip
            else:
                st.dataframe(loko)
                if came := report["loko"].get("carried_from"):
                    st.caption(f"Measured in the evaluation of version {came['model_version']}: those checkpoints "
                               "were not scored again; the column of this model's AUC is fresh.")  # fmt: skip
        for key, title in (("robustness", "After re-encoding, as messaging apps do (real and fake files alike)"),
                           ("by_source", "By source of the files"), ("by_group", "By demographic group")):  # fmt: skip
            if report.get(key):
                st.subheader(title)
                st.dataframe(dashboard.breakdown_table(report[key]), column_config={
                    k: st.column_config.NumberColumn(METRIC_LABELS[k], format="%d" if k == "n" else "%.3f")
                    for k in ("n", "auc", "accuracy", "fpr", "fnr")})  # fmt: skip
