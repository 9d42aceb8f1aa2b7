"""Calibration of predicted probabilities: reliability curve, expected calibration error, Brier score.

Research use, not for diagnosis.

Definitions
-----------
Confidence and outcome per case:

- binary (C == 2): confidence = p(class 1), outcome = 1 if the true class is 1. The reliability curve
  compares the predicted probability of the positive class with the observed positive frequency.
- multi-class (C > 2): confidence = the top-class probability max_c p_c, outcome = 1 if the argmax
  class is the true class (the usual "confidence vs accuracy" diagram).

Bins: ``n_bins`` equal-width bins on [0, 1] (default 10): bin b holds confidences in
[b/n_bins, (b+1)/n_bins), the last bin also holds 1.0.

ECE = sum_b (n_b / N) * |mean outcome_b - mean confidence_b| over non-empty bins; MCE = the largest
such gap. Brier score: binary mean (p(class 1) - y)^2; multi-class mean over cases of
sum_c (p_c - [y == c])^2.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mmxai_core.train.metrics import EvaluationError, check_predictions


def _confidence_outcome(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    if p.shape[1] == 2:
        return p[:, 1], (y == 1).astype(np.float64), "positive_class"
    return p.max(axis=1), (np.argmax(p, axis=1) == y).astype(np.float64), "top_class"


def reliability_curve(y_true: Any, probs: Any, n_bins: int = 10) -> dict:
    """Reliability-curve data and summary scores.

    ``y_true`` (N,) int, ``probs`` (N, C) or binary (N,). Returns a JSON-ready dict: ``mode``
    (``"positive_class"`` | ``"top_class"``), ``n_bins``, ``bin_edges`` (n_bins + 1), ``count``,
    ``mean_confidence`` and ``observed`` (n_bins each; None for empty bins), ``ece``, ``mce``, ``brier``,
    ``n_cases``.
    """
    if not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise EvaluationError(f"n_bins: expected an integer >= 1, got {n_bins!r}")
    y, p = check_predictions(y_true, probs)
    conf, outcome, mode = _confidence_outcome(y, p)
    b = np.minimum((conf * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(b, minlength=n_bins)
    sum_conf = np.bincount(b, weights=conf, minlength=n_bins)
    sum_out = np.bincount(b, weights=outcome, minlength=n_bins)
    nz = count > 0
    mean_conf = np.where(nz, sum_conf / np.maximum(count, 1), np.nan)
    observed = np.where(nz, sum_out / np.maximum(count, 1), np.nan)
    gap = np.abs(observed - mean_conf)
    ece = float(np.sum(count[nz] * gap[nz]) / y.size)
    mce = float(gap[nz].max())
    return {
        "mode": mode,
        "n_bins": int(n_bins),
        "n_cases": int(y.size),
        "bin_edges": np.linspace(0.0, 1.0, n_bins + 1).tolist(),
        "count": count.astype(int).tolist(),
        "mean_confidence": [float(v) if np.isfinite(v) else None for v in mean_conf],
        "observed": [float(v) if np.isfinite(v) else None for v in observed],
        "ece": ece,
        "mce": mce,
        "brier": brier_score(y, p),
    }


def expected_calibration_error(y_true: Any, probs: Any, n_bins: int = 10) -> float:
    """ECE with ``n_bins`` equal-width bins (definition: module docstring)."""
    return reliability_curve(y_true, probs, n_bins)["ece"]


def brier_score(y_true: Any, probs: Any) -> float:
    """Brier score (binary: of p(class 1); multi-class: summed over classes; see module docstring)."""
    y, p = check_predictions(y_true, probs)
    if p.shape[1] == 2:
        return float(np.mean((p[:, 1] - (y == 1)) ** 2))
    onehot = np.eye(p.shape[1])[y]
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


__all__ = ["reliability_curve", "expected_calibration_error", "brier_score"]
