"""Calibration: ECE by hand, on calibrated and on overconfident simulated probabilities."""

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss

from mmxai_core.train.calibration import brier_score, expected_calibration_error, reliability_curve
from mmxai_core.train.metrics import EvaluationError


def _logit(p):
    return np.log(p / (1 - p))


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_ece_hand_example():
    # bins of width 0.5: [0, .5) holds 0.1, 0.2 (outcomes 0, 1); [.5, 1] holds 0.8, 0.9, 1.0 (1, 1, 0)
    y = np.array([0, 1, 1, 1, 0])
    p1 = np.array([0.1, 0.2, 0.8, 0.9, 1.0])
    r = reliability_curve(y, p1, n_bins=2)
    assert r["count"] == [2, 3]
    assert r["mean_confidence"] == pytest.approx([0.15, 0.9])
    assert r["observed"] == pytest.approx([0.5, 2 / 3])
    assert r["ece"] == pytest.approx(2 / 5 * 0.35 + 3 / 5 * (0.9 - 2 / 3))
    assert r["mce"] == pytest.approx(0.35)
    assert r["mode"] == "positive_class"


def test_reliability_curve_matches_sklearn_calibration_curve():
    rng = np.random.default_rng(0)
    p1 = rng.random(2000)
    y = (rng.random(2000) < p1).astype(int)
    r = reliability_curve(y, p1, n_bins=10)
    prob_true, prob_pred = calibration_curve(y, p1, n_bins=10, strategy="uniform")
    got_true = [v for v in r["observed"] if v is not None]
    got_pred = [v for v in r["mean_confidence"] if v is not None]
    np.testing.assert_allclose(got_true, prob_true)
    np.testing.assert_allclose(got_pred, prob_pred)
    assert r["brier"] == pytest.approx(brier_score_loss(y, p1))


def test_ece_small_for_calibrated_large_for_overconfident():
    rng = np.random.default_rng(1)
    q = rng.uniform(0.02, 0.98, 20000)  # true probability of class 1
    y = (rng.random(q.size) < q).astype(int)
    calibrated = expected_calibration_error(y, q)
    overconfident = expected_calibration_error(y, _sigmoid(4 * _logit(q)))
    assert calibrated < 0.02
    assert overconfident > 0.12


def test_multiclass_uses_top_class_confidence():
    rng = np.random.default_rng(2)
    n, c = 6000, 4
    logits = rng.normal(size=(n, c)) * 1.5
    true_p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = np.array([rng.choice(c, p=row) for row in true_p])
    r = reliability_curve(y, true_p)
    assert r["mode"] == "top_class" and r["ece"] < 0.03
    sharp = np.exp(3 * logits) / np.exp(3 * logits).sum(1, keepdims=True)
    assert expected_calibration_error(y, sharp) > 0.1
    onehot = np.eye(c)[y]
    assert brier_score(y, true_p) == pytest.approx(np.mean(((true_p - onehot) ** 2).sum(1)))


def test_bad_bins():
    with pytest.raises(EvaluationError, match="n_bins"):
        reliability_curve([0, 1], [0.2, 0.7], n_bins=0)
