"""Detection metrics in plain NumPy (checked against scikit-learn in the tests).

Labels: 1 = FAKE (the positive class), 0 = REAL. Scores: fake probabilities.
"""

from __future__ import annotations

import numpy as np


def _check(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels).astype(int).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError("labels and scores differ in length")
    return labels, scores


def roc_curve(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False-positive rates, true-positive rates and thresholds (descending), ties merged."""
    labels, scores = _check(labels, scores)
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    distinct = np.r_[np.nonzero(np.diff(scores))[0], labels.size - 1]
    tps = np.cumsum(labels)[distinct]
    fps = (distinct + 1) - tps
    positives, negatives = max(labels.sum(), 1), max((1 - labels).sum(), 1)
    tpr = np.r_[0.0, tps / positives]
    fpr = np.r_[0.0, fps / negatives]
    return fpr, tpr, np.r_[np.inf, scores[distinct]]


def roc_auc(labels, scores) -> float:
    labels, _ = _check(labels, scores)
    if labels.min() == labels.max():
        return float("nan")
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(np.trapezoid(tpr, fpr))


def auc_interval(labels, scores, level: float = 0.95, resamples: int = 1000, seed: int = 0) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the ROC AUC, reals and fakes resampled separately (each class
    keeps its size); None without both classes. 150 reals against 150 fakes at an AUC near 0.7 span
    about 0.12: what another draw of held-out items could give. Two models scored on the same items
    share the draw, so their difference is less uncertain than either AUC."""
    labels, scores = _check(labels, scores)
    if labels.min() == labels.max():
        return None
    rng = np.random.default_rng(seed)
    real, fake = scores[labels == 0], scores[labels == 1]
    aucs = [pairwise_auc(rng.choice(real, real.size), rng.choice(fake, fake.size)) for _ in range(resamples)]
    low, high = np.quantile(aucs, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def interval_text(bounds) -> str | None:
    """An interval as "low-high" for tables; None where there is none (older reports, one class)."""
    return f"{bounds[0]:.3f}-{bounds[1]:.3f}" if bounds else None


def pairwise_auc(real: np.ndarray, fake: np.ndarray, real_weights: np.ndarray | None = None,
                 fake_weights: np.ndarray | None = None) -> float:  # fmt: skip
    """P(a fake scores above a real), ties counting half: the ROC AUC, without building the curve.
    Weights count each item that many times (a bootstrap resample without copying scores)."""
    real_weights = np.ones(real.size) if real_weights is None else np.asarray(real_weights, np.float64)
    fake_weights = np.ones(fake.size) if fake_weights is None else np.asarray(fake_weights, np.float64)
    order = np.argsort(real, kind="stable")
    real, cumulative = real[order], np.r_[0.0, np.cumsum(real_weights[order])]
    below, up_to = cumulative[np.searchsorted(real, fake, "left")], cumulative[np.searchsorted(real, fake, "right")]
    return float(fake_weights @ (below + 0.5 * (up_to - below)) / (cumulative[-1] * fake_weights.sum()))


def precision_recall_curve(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    labels, scores = _check(labels, scores)
    fpr, tpr, _ = roc_curve(labels, scores)
    positives, negatives = labels.sum(), (1 - labels).sum()
    tp, fp = tpr[1:] * positives, fpr[1:] * negatives
    precision = np.r_[1.0, tp / np.maximum(tp + fp, 1)]
    return precision, tpr


def average_precision(labels, scores) -> float:
    """Step-wise area under the precision-recall curve, as scikit-learn computes it."""
    labels, _ = _check(labels, scores)
    if labels.sum() == 0:
        return float("nan")
    precision, recall = precision_recall_curve(labels, scores)
    return float(np.sum(np.diff(recall) * precision[1:]))


def equal_error_rate(labels, scores) -> tuple[float, float]:
    """(EER, threshold) where false-positive and false-negative rates meet."""
    fpr, tpr, thresholds = roc_curve(labels, scores)
    fnr = 1 - tpr
    i = int(np.nanargmin(np.abs(fnr - fpr)))
    return float((fpr[i] + fnr[i]) / 2), float(min(thresholds[i], 1.0))


def expected_calibration_error(labels, scores, bins: int = 15, prior: float | None = None) -> float:
    """ECE over equal-width bins of the predicted fake probability. With ``prior``, samples are
    weighted so that fakes make up that share of the total: the error a user sees on a stream with
    that base rate, whatever the mix of the evaluation set."""
    labels, scores = _check(labels, scores)
    weights = np.ones(labels.size)
    if prior is not None and 0 < labels.sum() < labels.size:
        weights = np.where(labels == 1, prior / labels.sum(), (1 - prior) / (labels.size - labels.sum()))
    weights = weights / weights.sum()
    edges = np.linspace(0, 1, bins + 1)
    index = np.clip(np.digitize(scores, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        inside = index == b
        mass = weights[inside].sum()
        if mass > 0:
            w = weights[inside] / mass
            ece += mass * abs(float(w @ labels[inside]) - float(w @ scores[inside]))
    return float(ece)


def reliability(labels, scores, bins: int = 10) -> dict:
    labels, scores = _check(labels, scores)
    edges = np.linspace(0, 1, bins + 1)
    index = np.clip(np.digitize(scores, edges[1:-1]), 0, bins - 1)
    rows = [(float(scores[index == b].mean()), float(labels[index == b].mean()), int((index == b).sum()))
            for b in range(bins) if (index == b).any()]
    return {"confidence": [r[0] for r in rows], "fake_rate": [r[1] for r in rows], "count": [r[2] for r in rows]}


def at_threshold(labels, scores, threshold: float) -> dict:
    """Counts and rates when ``score >= threshold`` means FAKE."""
    labels, scores = _check(labels, scores)
    predicted = scores >= threshold
    tp = int(np.sum(predicted & (labels == 1)))
    fp = int(np.sum(predicted & (labels == 0)))
    fn = int(np.sum(~predicted & (labels == 1)))
    tn = int(np.sum(~predicted & (labels == 0)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "threshold": float(threshold),
        "accuracy": (tp + tn) / max(labels.size, 1),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "fpr": fp / (fp + tn) if fp + tn else 0.0,
        "fnr": fn / (fn + tp) if fn + tp else 0.0,
        "confusion": {"tn": tn, "fp": fp, "fn": fn, "tp": tp},
    }


def threshold_sweep(labels, scores, thresholds=None) -> dict:
    """Metrics per threshold plus Youden's J and best-F1 choices."""
    thresholds = np.round(np.linspace(0.05, 0.95, 19), 2) if thresholds is None else np.asarray(thresholds)
    rows = [at_threshold(labels, scores, float(t)) for t in thresholds]
    youden = max(rows, key=lambda r: (r["recall"] - r["fpr"], -abs(r["threshold"] - 0.5)))
    best_f1 = max(rows, key=lambda r: (r["f1"], -abs(r["threshold"] - 0.5)))
    return {"rows": rows, "youden_threshold": youden["threshold"], "best_f1_threshold": best_f1["threshold"]}


def summarize(labels, scores, threshold: float) -> dict:
    """Every headline metric at once (NaN-free where a class is missing: those keys are None)."""
    labels, scores = _check(labels, scores)
    both = 0 < labels.sum() < labels.size
    eer, eer_threshold = equal_error_rate(labels, scores) if both else (None, None)
    out = at_threshold(labels, scores, threshold)
    out.update({
        "n": int(labels.size), "n_fake": int(labels.sum()), "n_real": int(labels.size - labels.sum()),
        "auc": roc_auc(labels, scores) if both else None,
        "average_precision": average_precision(labels, scores) if both else None,
        "eer": eer, "eer_threshold": eer_threshold,
        "ece": expected_calibration_error(labels, scores) if labels.size else None,
    })  # fmt: skip
    return out


def fit_temperature(logits, labels) -> float:
    """Temperature T minimising the NLL of sigmoid(logit / T) (Guo et al., 2017)."""
    logits, labels = np.asarray(logits, np.float64), np.asarray(labels, np.float64)

    def nll(t: float) -> float:
        z = logits / t
        return float(np.mean(np.logaddexp(0, z) - labels * z))

    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 400))
    best = grid[int(np.argmin([nll(t) for t in grid]))]
    fine = np.linspace(best * 0.97, best * 1.03, 61)
    return float(fine[int(np.argmin([nll(t) for t in fine]))])
