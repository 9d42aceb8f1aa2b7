"""Threshold selection on validation data, applied unchanged to test data."""

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from mmxai_core.train.metrics import EvaluationError, evaluate_predictions
from mmxai_core.train.thresholds import roc_cut_points, select_threshold, sensitivity_specificity_at

# Constructed validation set: 5 positives, 5 negatives.
#   scores:  0.95 0.90 0.80 0.55 0.30 | 0.70 0.50 0.40 0.20 0.10
#   cut 0.80 -> sens 3/5, spec 5/5, J 0.6
#   cut 0.55 -> sens 4/5, spec 4/5 (0.70 is FP), J 0.6 (tie: the higher cut 0.80 wins)
#   cut 0.30 -> sens 5/5, spec 2/5, J 0.4
Y = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
S = np.array([0.95, 0.90, 0.80, 0.55, 0.30, 0.70, 0.50, 0.40, 0.20, 0.10])


def test_cut_points_match_sklearn_roc_curve():
    cuts, sens, spec = roc_cut_points(Y, S)
    fpr, tpr, thr = roc_curve(Y, S, drop_intermediate=False)
    keep = np.isfinite(thr)
    np.testing.assert_allclose(cuts, thr[keep])
    np.testing.assert_allclose(sens, tpr[keep])
    np.testing.assert_allclose(spec, 1 - fpr[keep])


def test_youden_on_constructed_example():
    c = select_threshold(Y, S)
    assert c.method == "youden"
    assert (c.sensitivity, c.specificity) == (pytest.approx(0.6), pytest.approx(1.0))
    assert c.youden_j == pytest.approx(0.6)
    # midpoint between the cut 0.80 and the next lower score 0.70
    assert c.threshold == pytest.approx(0.75)
    assert select_threshold(Y, S, placement="score").threshold == pytest.approx(0.80)
    assert (c.n_positive, c.n_negative) == (5, 5)
    assert sensitivity_specificity_at(Y, S, c.threshold) == (pytest.approx(0.6), pytest.approx(1.0))


def test_youden_picks_unique_maximum():
    s = S.copy()
    s[5], s[6] = 0.20, 0.35  # negatives now 0.20 0.35 0.40 0.20 0.10
    # cut 0.55 -> sens 4/5, spec 5/5, J 0.8 (unique best); next lower score is 0.40
    c = select_threshold(Y, s)
    assert c.youden_j == pytest.approx(0.8)
    assert c.threshold == pytest.approx((0.55 + 0.40) / 2)


def test_target_sensitivity_takes_best_specificity_among_those_reaching_it():
    c = select_threshold(Y, S, method="target_sensitivity", target_sensitivity=0.8)
    assert c.sensitivity >= 0.8
    assert (c.sensitivity, c.specificity) == (pytest.approx(0.8), pytest.approx(0.8))
    assert c.threshold == pytest.approx((0.55 + 0.50) / 2)
    c = select_threshold(Y, S, method="target_sensitivity", target_sensitivity=1.0)
    assert (c.sensitivity, c.specificity) == (pytest.approx(1.0), pytest.approx(0.4))
    assert c.to_dict()["target_sensitivity"] == 1.0


def test_threshold_applied_unchanged_to_test():
    rng = np.random.default_rng(1)
    yv = rng.integers(0, 2, 300)
    sv = np.clip(rng.normal(0.4 + 0.25 * yv, 0.15), 0, 1)
    choice = select_threshold(yv, sv)
    yt = rng.integers(0, 2, 200)
    st_ = np.clip(rng.normal(0.4 + 0.25 * yt, 0.15), 0, 1)
    res = evaluate_predictions(yt, st_, np.arange(200), threshold=choice, n_boot=0)
    assert res["threshold"]["value"] == choice.threshold
    assert res["threshold"]["source"] == "validation (youden)"
    assert res["threshold"]["validation"]["sensitivity"] == choice.sensitivity
    sens, spec = sensitivity_specificity_at(yt, st_, choice.threshold)
    assert res["metrics"]["sensitivity"]["value"] == pytest.approx(sens)
    assert res["metrics"]["specificity"]["value"] == pytest.approx(spec)
    # and the dict form works the same
    res2 = evaluate_predictions(yt, st_, np.arange(200), threshold=choice.to_dict(), n_boot=0)
    assert res2["metrics"] == res["metrics"]


def test_errors():
    with pytest.raises(EvaluationError, match="both positive and negative"):
        select_threshold(np.ones(5, int), np.linspace(0, 1, 5))
    with pytest.raises(EvaluationError, match="target_sensitivity"):
        select_threshold(Y, S, method="target_sensitivity")
    with pytest.raises(EvaluationError, match="method"):
        select_threshold(Y, S, method="f1")
    with pytest.raises(EvaluationError, match="binary"):
        select_threshold(np.array([0, 1, 2]), np.eye(3))
