"""Our NumPy metrics agree with scikit-learn; the threshold sweep finds a known optimum."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from deepfake.evaluation import metrics


@pytest.fixture
def scored():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 400)
    scores = np.clip(rng.normal(0.35 + 0.3 * labels, 0.2), 0, 1).round(2)  # rounded: ties on purpose
    return labels, scores


def test_auc_and_ap_match_sklearn(scored):
    labels, scores = scored
    assert metrics.roc_auc(labels, scores) == pytest.approx(skm.roc_auc_score(labels, scores), abs=1e-12)
    assert metrics.average_precision(labels, scores) == pytest.approx(
        skm.average_precision_score(labels, scores), abs=1e-12
    )


def test_auc_interval_holds_the_auc_and_narrows_with_more_items(scored):
    labels, scores = scored
    real, fake = scores[labels == 0], scores[labels == 1]
    assert metrics.pairwise_auc(real, fake) == pytest.approx(metrics.roc_auc(labels, scores), abs=1e-12)  # ties half
    # Weights count items that many times: the AUC of the scores repeated.
    real_w, fake_w = np.arange(real.size) % 3, np.arange(fake.size) % 2 + 1
    repeated = metrics.roc_auc(np.r_[np.zeros(real_w.sum()), np.ones(fake_w.sum())],
                               np.r_[np.repeat(real, real_w), np.repeat(fake, fake_w)])  # fmt: skip
    assert metrics.pairwise_auc(real, fake, real_w, fake_w) == pytest.approx(repeated, abs=1e-12)
    low, high = metrics.auc_interval(labels, scores)
    assert low < metrics.roc_auc(labels, scores) < high and metrics.auc_interval(labels, scores) == (low, high)
    # Four times the items (the same distribution): about half the width, as 1/sqrt(n) says.
    rng = np.random.default_rng(4)
    many = rng.integers(0, 2, 1600)
    wide = high - low
    narrow = np.subtract(*metrics.auc_interval(many, np.clip(rng.normal(0.35 + 0.3 * many, 0.2), 0, 1).round(2))[::-1])
    assert 0.35 * wide < narrow < 0.7 * wide
    assert metrics.auc_interval([0, 0], [0.1, 0.2]) is None and metrics.interval_text(None) is None
    assert metrics.interval_text((0.61234, 0.7)) == "0.612-0.700"


def test_roc_curve_matches_sklearn(scored):
    labels, scores = scored
    fpr, tpr, thresholds = metrics.roc_curve(labels, scores)
    sk_fpr, sk_tpr, sk_thr = skm.roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_allclose(thresholds[1:], sk_thr[1:])


def test_threshold_metrics_match_sklearn(scored):
    labels, scores = scored
    m = metrics.at_threshold(labels, scores, 0.6)
    predicted = (scores >= 0.6).astype(int)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(labels, predicted))
    assert m["precision"] == pytest.approx(skm.precision_score(labels, predicted))
    assert m["recall"] == pytest.approx(skm.recall_score(labels, predicted))
    assert m["f1"] == pytest.approx(skm.f1_score(labels, predicted))
    tn, fp, fn, tp = skm.confusion_matrix(labels, predicted).ravel()
    assert m["confusion"] == {"tn": tn, "fp": fp, "fn": fn, "tp": tp}
    assert m["fpr"] == pytest.approx(fp / (fp + tn)) and m["fnr"] == pytest.approx(fn / (fn + tp))


def test_eer_on_a_constructed_case():
    # 10 reals at 0.1..0.5 and 10 fakes at 0.4..0.8: rates cross where 2 of each are misjudged.
    reals = np.linspace(0.1, 0.5, 10)
    fakes = np.linspace(0.4, 0.8, 10)
    eer, _ = metrics.equal_error_rate(np.r_[np.zeros(10), np.ones(10)], np.r_[reals, fakes])
    assert eer == pytest.approx(0.2, abs=0.05)


def test_ece():
    assert metrics.expected_calibration_error([0, 1, 0, 1], [0.0, 1.0, 0.0, 1.0]) == 0.0
    # Everything predicted 0.9 while half are fake: off by 0.4.
    assert metrics.expected_calibration_error([0, 1] * 50, [0.9] * 100) == pytest.approx(0.4)


def test_ece_at_a_prior_weights_the_classes_to_that_base_rate():
    # Everything at 0.25 on a balanced set: off by 0.25; at a 1-in-4 base rate it is exactly right.
    labels, scores = [0, 1] * 50, [0.25] * 100
    assert metrics.expected_calibration_error(labels, scores) == pytest.approx(0.25)
    assert metrics.expected_calibration_error(labels, scores, prior=0.25) == pytest.approx(0.0)
    # One class only: the prior cannot apply, the plain ECE is returned.
    assert metrics.expected_calibration_error([0] * 10, [0.2] * 10, prior=0.25) == pytest.approx(0.2)


def test_threshold_sweep_finds_the_separating_threshold():
    # Reals below 0.4, fakes at or above 0.7: any threshold in (0.4, 0.7] is perfect, and the sweep
    # breaks ties towards 0.5.
    labels = np.r_[np.zeros(50), np.ones(50)]
    scores = np.r_[np.linspace(0.0, 0.39, 50), np.linspace(0.7, 1.0, 50)]
    sweep = metrics.threshold_sweep(labels, scores)
    assert sweep["best_f1_threshold"] == pytest.approx(0.5)
    assert sweep["youden_threshold"] == pytest.approx(0.5)
    best = next(r for r in sweep["rows"] if r["threshold"] == pytest.approx(0.5))
    assert best["f1"] == 1.0 and best["fpr"] == 0.0


def test_threshold_sweep_prefers_f1_optimum_when_not_separable():
    # Fakes at 0.65 and reals at 0.55 and 0.75: only thresholds in (0.55, 0.65] split them best.
    labels = np.r_[np.zeros(10), np.ones(30), np.zeros(2)]
    scores = np.r_[np.full(10, 0.55), np.full(30, 0.65), np.full(2, 0.75)]
    assert metrics.threshold_sweep(labels, scores)["best_f1_threshold"] == pytest.approx(0.6)


def test_temperature_scaling_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, 5000)
    labels = (rng.random(5000) < 1 / (1 + np.exp(-true_logits))).astype(int)
    # A model three times overconfident: the fitted temperature undoes it.
    assert metrics.fit_temperature(true_logits * 3, labels) == pytest.approx(3.0, rel=0.1)
