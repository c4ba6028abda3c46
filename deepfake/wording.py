"""Plain-language texts about results, shared by the dashboard and the HTML report so that both
say the same thing in the same words. Written for readers who are not machine-learning experts."""

from __future__ import annotations

from deepfake.results import FAKE, NO_FACE, AnalysisResult, FaceResult, FrameResult

CAVEAT = (
    "Scores are probabilities estimated by a machine-learning model, not proof. A high score is a reason "
    "to look closer and check other evidence; a low score is no guarantee that a file is authentic. "
    "When no face is found the whole picture is scored, and those results are less reliable."
)
METHOD_LABELS = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++"}
CAM_TARGET_LABELS = {"fake": "Combined score", "blending": "Blending", "generation": "Generation"}
VERDICT_COLOURS = {"REAL": "#2e7d32", "FAKE": "#c62828", "NO FACE": "#8d6e00", "ERROR": "#616161"}


def verdict_badge(verdict: str) -> str:
    """The verdict as a coloured HTML label (white on the verdict's colour, readable at a glance)."""
    return (f'<span style="background:{VERDICT_COLOURS[verdict]};color:white;padding:0.05em 0.45em;'
            f'border-radius:0.3em;font-weight:700;margin-right:0.3em">{verdict}</span>')  # fmt: skip


def file_size(megabytes: int) -> str:
    return f"{megabytes / 1024:g} GB" if megabytes >= 1024 else f"{megabytes} MB"


def percent(value: float) -> str:
    return f"{value:.0%}"


def verdict_sentence(result: AnalysisResult) -> str:
    """One sentence, verdict first: what the model concluded and how strongly."""
    video = result.media_type == "video"
    score = f"{percent(result.fake_probability)} probability of being fake"
    if result.decided_by is not None:  # the file declares itself AI-made: that, not the model, decides
        return (f"AI-made, by the file's own declaration: {result.decided_by.summary} The model's own score: "
                f"{score}.")  # fmt: skip
    if result.verdict == NO_FACE:
        where, what = ("in any sampled frame", "whole frames were") if video else ("", "whole picture was")
        return (f"No face found{' ' + where if where else ''}, so the {what} scored ({score}). "
                "The model is built for faces: treat this result with extra caution.")  # fmt: skip
    if video:
        subject = "the video"
    else:
        whole = sum(not f.whole_image and not f.cut_off for f in result.faces)
        if result.face_count > 1 and whole < result.face_count:
            subject = "the most suspicious whole face" if whole > 1 else "the whole face"
        else:
            subject = "the most suspicious face" if result.face_count > 1 else "the face"
    kind = evidence_kind_sentence(result)
    if result.classification == FAKE:
        return (f"Likely manipulated: the model gives {subject} a {score}, at or above the "
                f"{percent(result.threshold)} threshold.{' ' + kind if kind else ''}")  # fmt: skip
    return (f"Looks authentic to the model: it gives {subject} a {score}, below the "
            f"{percent(result.threshold)} threshold.")  # fmt: skip


EVIDENCE_WORDS = {
    "generation": "The face looks generated: the whole face shows traces of image synthesis",
    "blending": "Signs that the face was blended into the photo: a face region looks pasted, swapped or edited",
}


def evidence_kind_sentence(result: AnalysisResult) -> str:
    """Which kind of evidence a FAKE verdict rests on, with both scores (two-head models only).
    Each head is calibrated on its own kind of fake, the verdict's score on both together (at the
    model's base rate), so a face can read "blending 65%" and FAKE 90%: the sentence says which is which."""
    scores = result.head_scores()
    kind = scores["dominant_evidence"]
    if kind is None or result.classification != FAKE:
        return ""
    return (f"{EVIDENCE_WORDS[kind]} (each kind on its own: generation {percent(scores['generation_probability'])}, "
            f"blending {percent(scores['blending_probability'])}; the fake probability weighs both together, "
            "so it can be higher than either).")  # fmt: skip


def duration(milliseconds: float) -> str:
    seconds = milliseconds / 1000
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)} min {seconds % 60:.0f} s"


MARKDOWN_SPECIAL = frozenset("\\`*_{}[]()<>#+-.!|$:~&")


def markdown_literal(text: str) -> str:
    """``text`` shown as typed in Markdown (file names may hold ``*``, ``_``, ``[`` or ``$``)."""
    return "".join("\\" + c if c in MARKDOWN_SPECIAL else c for c in text)


def face_caption(number: int, face: FaceResult) -> str:
    cut_off = " (cut off by the edge)" if face.cut_off else ""
    return f"Face {number}: {percent(face.fake_probability)} fake{cut_off}"


def frame_caption(frame: FrameResult) -> str:
    return f"Frame at {frame.time_s:.1f} s ({percent(frame.fake_probability)} fake)"
