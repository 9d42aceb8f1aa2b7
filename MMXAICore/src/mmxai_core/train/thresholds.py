"""Decision threshold of a binary classifier, chosen on validation data and applied unchanged to test.

Research use, not for diagnosis.

Rule: a case is predicted positive when ``p(class 1) >= threshold``. Candidate cut points are the distinct
validation scores ``u``; cut ``u`` calls positive every case scoring ``>= u``.

- ``method="youden"`` (default): maximise Youden's J = sensitivity + specificity - 1; among cut points
  with equal J (within 1e-12) the highest one (fewer positives, higher specificity) wins.
- ``method="target_sensitivity"``: among cut points whose validation sensitivity is at least
  ``target_sensitivity``, the one with the best specificity. Specificity only falls as the cut point is
  lowered, so this is the *highest* cut point that still reaches the target.

The returned threshold is placed halfway between the chosen cut point and the next lower distinct
validation score (``placement="midpoint"``, the default), so the validation figures are unchanged while
a test score that falls between the two is not decided by an arbitrary side; ``placement="score"``
returns the cut point itself. If there is no lower score the cut point is returned.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mmxai_core.train.metrics import EvaluationError, check_predictions


@dataclass(frozen=True)
class ThresholdChoice:
    """A threshold chosen on validation data, with the validation figures at it."""

    threshold: float
    method: str
    target_sensitivity: float | None
    sensitivity: float
    specificity: float
    youden_j: float
    n_positive: int
    n_negative: int

    def to_dict(self) -> dict:
        """JSON-ready dict of all fields."""
        return asdict(self)


def roc_cut_points(y_true: Any, probs: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sensitivity and specificity at each distinct score used as cut point (``score >= cut`` positive).

    ``y_true`` (N,) in {0, 1}, ``probs`` (N, 2) or (N,) p(class 1). Returns ``(cuts, sens, spec)``, each
    (K,), cuts in decreasing order.
    """
    y, p = check_predictions(y_true, probs)
    if p.shape[1] != 2:
        raise EvaluationError(f"probs: threshold selection needs a binary task, got {p.shape[1]} classes")
    s = p[:, 1]
    pos = np.sort(s[y == 1])
    neg = np.sort(s[y == 0])
    if pos.size == 0 or neg.size == 0:
        raise EvaluationError("y_true: threshold selection needs both positive and negative validation cases, "
                              f"got {pos.size} positive and {neg.size} negative")
    cuts = np.unique(s)[::-1]
    tp = pos.size - np.searchsorted(pos, cuts, side="left")
    fp = neg.size - np.searchsorted(neg, cuts, side="left")
    return cuts, tp / pos.size, 1.0 - fp / neg.size


def select_threshold(y_true: Any, probs: Any, method: str = "youden", target_sensitivity: float | None = None,
                     placement: str = "midpoint") -> ThresholdChoice:
    """Choose a threshold on validation data (rules: module docstring).

    ``y_true`` (N,) in {0, 1}; ``probs`` (N, 2) or (N,) p(class 1); ``method`` ``"youden"`` or
    ``"target_sensitivity"`` (then ``target_sensitivity`` in (0, 1] is required); ``placement``
    ``"midpoint"`` or ``"score"``. Returns a :class:`ThresholdChoice` with the validation sensitivity,
    specificity and J at the threshold.
    """
    if method not in ("youden", "target_sensitivity"):
        raise EvaluationError(f"method: expected 'youden' or 'target_sensitivity', got {method!r}")
    if placement not in ("midpoint", "score"):
        raise EvaluationError(f"placement: expected 'midpoint' or 'score', got {placement!r}")
    cuts, sens, spec = roc_cut_points(y_true, probs)
    if method == "youden":
        if target_sensitivity is not None:
            raise EvaluationError("target_sensitivity: only used with method='target_sensitivity'")
        j = sens + spec - 1.0
        k = int(np.flatnonzero(j >= j.max() - 1e-12)[0])  # cuts decrease: first = highest cut among ties
    else:
        if target_sensitivity is None or not 0.0 < float(target_sensitivity) <= 1.0:
            raise EvaluationError(f"target_sensitivity: expected a value in (0, 1], got {target_sensitivity!r}")
        ok = np.flatnonzero(sens >= float(target_sensitivity) - 1e-12)
        k = int(ok[0])  # highest cut reaching the target = best specificity among them
    cut = float(cuts[k])
    threshold = cut
    if placement == "midpoint" and k + 1 < cuts.size:
        lower = float(cuts[k + 1])
        mid = 0.5 * (cut + lower)
        if lower < mid <= cut:  # guard against rounding onto the lower score
            threshold = mid
    y, _ = check_predictions(y_true, probs)
    return ThresholdChoice(threshold=threshold, method=method,
                           target_sensitivity=None if target_sensitivity is None else float(target_sensitivity),
                           sensitivity=float(sens[k]), specificity=float(spec[k]),
                           youden_j=float(sens[k] + spec[k] - 1.0), n_positive=int((y == 1).sum()),
                           n_negative=int((y == 0).sum()))


def sensitivity_specificity_at(y_true: Any, probs: Any, threshold: float) -> tuple[float | None, float | None]:
    """(sensitivity, specificity) of ``p(class 1) >= threshold``; None where a class is absent."""
    y, p = check_predictions(y_true, probs)
    if p.shape[1] != 2:
        raise EvaluationError(f"probs: needs a binary task, got {p.shape[1]} classes")
    pred = p[:, 1] >= float(threshold)
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    sens = float((pred & (y == 1)).sum() / n_pos) if n_pos else None
    spec = float((~pred & (y == 0)).sum() / n_neg) if n_neg else None
    return sens, spec


__all__ = ["ThresholdChoice", "roc_cut_points", "select_threshold", "sensitivity_specificity_at"]
