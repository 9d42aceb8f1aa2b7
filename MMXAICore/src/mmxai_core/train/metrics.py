"""Point metrics of predicted class probabilities, and the one-call evaluation.

Research use, not for diagnosis.

Inputs everywhere in :mod:`mmxai_core.train`:

- ``y_true``: (N,) integer class indices in ``0 .. C-1``.
- ``probs``: (N, C) class probabilities, C >= 2, each row summing to 1 (within 1e-3). For a binary task
  a 1-D (N,) array is accepted as p(class 1).
- ``patient_ids``: (N,) any hashable ids (str, int); cases sharing an id belong to one patient.

Definitions (also in :data:`METRIC_DEFINITIONS`, which :func:`evaluate_predictions` copies into its
result):

Binary (C == 2)
    The positive class is index 1. A case is predicted positive when ``p(class 1) >= threshold``
    (threshold 0.5 unless given; choose it on validation data with
    :func:`mmxai_core.train.thresholds.select_threshold`). Not argmax. Accuracy, sensitivity (recall of
    class 1), specificity (recall of class 0) and F1 (of class 1) use that prediction; AUC uses
    p(class 1). Sensitivity and F1 are undefined (None) without positive cases, specificity without
    negative cases, AUC without both.

Multi-class (C > 2)
    Prediction is argmax (ties go to the lower class index). Accuracy is the fraction of correct
    argmax predictions. Sensitivity, specificity, F1 and AUC are *macro* averages over the classes
    present in ``y_true`` (at least one true case): sensitivity_c = TP_c / (TP_c + FN_c),
    specificity_c = TN_c / (TN_c + FP_c), F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c), and
    AUC_c = AUC of ``probs[:, c]`` for "class c" vs "any other class" (one-vs-rest). The macro value
    is the unweighted mean over present classes; classes absent from the sample are skipped and named
    in ``warnings``. With all classes present the macro AUC equals scikit-learn's
    ``roc_auc_score(..., multi_class="ovr", average="macro")``.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score, roc_auc_score

from mmxai_core import RESEARCH_USE_NOTICE
from mmxai_core.errors import MMXAIError

METRIC_NAMES: tuple[str, ...] = ("accuracy", "sensitivity", "specificity", "f1", "auc")
DEFAULT_THRESHOLD = 0.5
PROB_SUM_TOLERANCE = 1e-3

METRIC_DEFINITIONS: dict[str, str] = {
    "accuracy": "binary: fraction correct at the threshold on p(class 1); "
                "multi-class: fraction correct by argmax",
    "sensitivity": "binary: recall of class 1 at the threshold; "
                   "multi-class: macro mean over present classes of TP/(TP+FN)",
    "specificity": "binary: recall of class 0 at the threshold; "
                   "multi-class: macro mean over present classes of TN/(TN+FP)",
    "f1": "binary: F1 of class 1 at the threshold; "
          "multi-class: macro mean over present classes of 2TP/(2TP+FP+FN)",
    "auc": "binary: ROC AUC of p(class 1); "
           "multi-class: macro mean over present classes of the one-vs-rest AUC of probs[:, c]",
    "threshold": "binary: a case is positive when p(class 1) >= threshold",
    "ci": "percentile interval of a patient-level bootstrap "
          "(patients resampled with replacement, all cases of a patient together)",
}


class EvaluationError(MMXAIError, ValueError):
    """Labels, predictions, ids or settings given to an evaluation function are invalid."""


# ----------------------------------------------------------------------------------------------------
# input checks


def check_predictions(y_true: Any, probs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert labels and probabilities.

    Returns ``(y, p)``: y (N,) int64, p (N, C) float64 clipped to [0, 1]. A 1-D ``probs`` is read as
    p(class 1) of a binary task. Raises :class:`EvaluationError` naming the first bad case (0-based).
    """
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise EvaluationError(f"y_true: expected shape (N,), got {y.shape}")
    if y.size == 0:
        raise EvaluationError("y_true: no cases")
    if y.dtype.kind == "b":
        y = y.astype(np.int64)
    elif y.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(y) | (y != np.round(y)))
        if bad.size:
            raise EvaluationError(f"y_true: case {bad[0]} (0-based) is {y[bad[0]]!r}, not a class index")
        y = y.astype(np.int64)
    elif y.dtype.kind not in "iu":
        raise EvaluationError(f"y_true: expected integer class indices, got dtype {y.dtype}")
    y = y.astype(np.int64)
    try:
        p = np.asarray(probs, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise EvaluationError(f"probs: not a numeric array ({exc})") from None
    if p.ndim == 1:
        p = np.column_stack([1.0 - p, p])
    if p.ndim != 2 or p.shape[0] != y.shape[0]:
        raise EvaluationError(f"probs: expected shape ({y.shape[0]}, C), got {np.shape(probs)}")
    if p.shape[1] < 2:
        raise EvaluationError(f"probs: need at least 2 classes (columns), got {p.shape[1]}")
    bad = np.flatnonzero(~np.isfinite(p).all(axis=1))
    if bad.size:
        raise EvaluationError(f"probs: case {bad[0]} (0-based) has a non-finite value {p[bad[0]].tolist()}")
    bad = np.flatnonzero(((p < -1e-9) | (p > 1 + 1e-9)).any(axis=1))
    if bad.size:
        raise EvaluationError(f"probs: case {bad[0]} (0-based) has a value outside [0, 1]: {p[bad[0]].tolist()}")
    bad = np.flatnonzero(np.abs(p.sum(axis=1) - 1.0) > PROB_SUM_TOLERANCE)
    if bad.size:
        raise EvaluationError(f"probs: case {bad[0]} (0-based) sums to {p[bad[0]].sum():.6g}, not 1 "
                              "(pass softmax probabilities, not logits)")
    bad = np.flatnonzero((y < 0) | (y >= p.shape[1]))
    if bad.size:
        raise EvaluationError(f"y_true: case {bad[0]} (0-based) has class {y[bad[0]]}, "
                              f"outside 0..{p.shape[1] - 1} (probs has {p.shape[1]} columns)")
    return y, np.clip(p, 0.0, 1.0)


def group_codes(ids: Any, n: int, name: str = "patient_ids") -> tuple[np.ndarray, int]:
    """Map (N,) ids to codes 0..G-1 in order of first appearance; None means one group per case.

    Returns ``(codes (N,) int64, G)``. Missing ids (None, NaN, empty string) raise
    :class:`EvaluationError`.
    """
    if ids is None:
        return np.arange(n, dtype=np.int64), n
    values = np.asarray(ids, dtype=object).ravel().tolist() if not isinstance(ids, list) else list(ids)
    if len(values) != n:
        raise EvaluationError(f"{name}: expected {n} ids (one per case), got {len(values)}")
    table: dict[Any, int] = {}
    codes = np.empty(n, dtype=np.int64)
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip()):
            raise EvaluationError(f"{name}: case {i} (0-based) has no id")
        if isinstance(v, np.generic):
            v = v.item()
        codes[i] = table.setdefault(v, len(table))
    return codes, len(table)


def resolve_threshold(threshold: Any, n_classes: int) -> tuple[float | None, dict]:
    """Return ``(value, info)`` from a float, a :class:`~mmxai_core.train.thresholds.ThresholdChoice`,
    a dict with key ``"threshold"``, or None (binary: 0.5, flagged as not chosen on validation)."""
    if n_classes != 2:
        if threshold is not None:
            raise EvaluationError(f"threshold: only used for binary tasks, this task has {n_classes} classes")
        return None, {"value": None, "source": "argmax (multi-class)", "validation": None}
    if threshold is None:
        return DEFAULT_THRESHOLD, {"value": DEFAULT_THRESHOLD, "source": "default (not chosen on validation)",
                                   "validation": None}
    validation = None
    source = "given"
    if hasattr(threshold, "to_dict"):
        validation = threshold.to_dict()
        source = f"validation ({validation.get('method')})"
        threshold = validation["threshold"]
    elif isinstance(threshold, Mapping):
        validation = dict(threshold)
        source = f"validation ({validation.get('method', 'unknown method')})"
        threshold = validation.get("threshold")
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise EvaluationError(f"threshold: expected a number, got {threshold!r}") from None
    if not math.isfinite(value):
        raise EvaluationError(f"threshold: must be finite, got {value}")
    return value, {"value": value, "source": source, "validation": validation}


# ----------------------------------------------------------------------------------------------------
# point metrics


def _f(x: Any) -> float | None:
    """Python float, or None for undefined / non-finite."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def predict_labels(probs: np.ndarray, threshold: float | None) -> np.ndarray:
    """(N,) predicted classes: binary ``p[:, 1] >= threshold``; multi-class argmax of (N, C) probs."""
    if probs.shape[1] == 2:
        t = DEFAULT_THRESHOLD if threshold is None else threshold
        return (probs[:, 1] >= t).astype(np.int64)
    return np.argmax(probs, axis=1).astype(np.int64)


def _binary_point(y: np.ndarray, p: np.ndarray, threshold: float) -> tuple[dict, list, list]:
    pred = predict_labels(p, threshold)
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    warnings = []
    out: dict[str, float | None] = {"accuracy": _f(accuracy_score(y, pred))}
    if n_pos:
        out["sensitivity"] = _f(recall_score(y, pred, pos_label=1, zero_division=0))
        out["f1"] = _f(f1_score(y, pred, pos_label=1, zero_division=0))
    else:
        out["sensitivity"] = out["f1"] = None
        warnings.append("no positive cases (class 1): sensitivity, F1 and AUC undefined")
    if n_neg:
        out["specificity"] = _f(recall_score(y, pred, pos_label=0, zero_division=0))
    else:
        out["specificity"] = None
        warnings.append("no negative cases (class 0): specificity and AUC undefined")
    out["auc"] = _f(roc_auc_score(y, p[:, 1])) if n_pos and n_neg else None
    return {k: out[k] for k in METRIC_NAMES}, [], warnings


def _multiclass_point(y: np.ndarray, p: np.ndarray) -> tuple[dict, list, list]:
    n_classes = p.shape[1]
    pred = predict_labels(p, None)
    counts = np.bincount(y, minlength=n_classes)
    present = np.flatnonzero(counts > 0)
    warnings = []
    absent = np.flatnonzero(counts == 0)
    if absent.size:
        warnings.append(f"classes {absent.tolist()} absent from y_true: skipped in the macro averages")
    cm = confusion_matrix(y, pred, labels=np.arange(n_classes))
    n = cm.sum()
    sens = recall_score(y, pred, labels=present, average=None, zero_division=0)
    f1 = f1_score(y, pred, labels=present, average=None, zero_division=0)
    per_class = []
    specs, aucs = [], []
    for k, c in enumerate(present):
        tp = cm[c, c]
        fp = cm[:, c].sum() - tp
        tn = n - cm[c, :].sum() - cm[:, c].sum() + tp
        rest = n - counts[c]
        spec = tn / (tn + fp) if rest > 0 else None
        auc = roc_auc_score(y == c, p[:, c]) if rest > 0 else None
        if spec is not None:
            specs.append(spec)
        if auc is not None:
            aucs.append(auc)
        per_class.append({"class": int(c), "n": int(counts[c]), "sensitivity": _f(sens[k]),
                          "specificity": _f(spec), "f1": _f(f1[k]), "auc": _f(auc)})
    multi_present = present.size >= 2
    if not multi_present:
        warnings.append("only one class present: specificity and AUC undefined")
    out = {
        "accuracy": _f(accuracy_score(y, pred)),
        "sensitivity": _f(np.mean(sens)),
        "specificity": _f(np.mean(specs)) if multi_present else None,
        "f1": _f(np.mean(f1)),
        "auc": _f(np.mean(aucs)) if multi_present else None,
    }
    return out, per_class, warnings


def point_metrics(y_true: Any, probs: Any, threshold: float | None = None) -> dict:
    """Point estimates of accuracy, sensitivity, specificity, F1 and AUC (definitions: module docstring).

    Parameters: ``y_true`` (N,) int, ``probs`` (N, C) or binary (N,), ``threshold`` (binary only;
    None = 0.5). Returns ``{"metrics": {name: float | None}, "per_class": [...] (multi-class, else []),
    "warnings": [str], "task": "binary" | "multiclass", "threshold": float | None}``. None marks an
    undefined metric.
    """
    y, p = check_predictions(y_true, probs)
    value, _ = resolve_threshold(threshold, p.shape[1])
    if p.shape[1] == 2:
        metrics, per_class, warnings = _binary_point(y, p, value)
    else:
        metrics, per_class, warnings = _multiclass_point(y, p)
    return {"metrics": metrics, "per_class": per_class, "warnings": warnings,
            "task": "binary" if p.shape[1] == 2 else "multiclass", "threshold": value}


# ----------------------------------------------------------------------------------------------------
# one-call evaluation


def _evaluate_subset(y, p, codes, threshold, n_boot, seed, ci_level, n_bins) -> dict:
    from mmxai_core.train.bootstrap import bootstrap_metrics
    from mmxai_core.train.calibration import reliability_curve

    point = point_metrics(y, p, threshold)
    codes = np.unique(codes, return_inverse=True)[1]
    n_patients = int(codes.max()) + 1
    boot = bootstrap_metrics(y, p, codes, threshold=threshold, n_boot=n_boot, seed=seed, ci_level=ci_level)
    metrics = {}
    for name in METRIC_NAMES:
        b = boot["metrics"][name]
        metrics[name] = {"value": point["metrics"][name], "ci_low": b["ci_low"], "ci_high": b["ci_high"],
                         "n_boot_valid": b["n_valid"], "n_boot_skipped": b["n_skipped"]}
    return {
        "n_cases": int(y.size),
        "n_patients": n_patients,
        "class_counts": np.bincount(y, minlength=p.shape[1]).tolist(),
        "metrics": metrics,
        "per_class": point["per_class"],
        "calibration": reliability_curve(y, p, n_bins=n_bins),
        "warnings": point["warnings"] + boot["warnings"],
    }


def evaluate_predictions(y_true: Any, probs: Any, patient_ids: Any, threshold: Any = None,
                         n_boot: int = 1000, seed: int = 0, dataset: Any = None, *,
                         ci_level: float = 0.95, n_bins: int = 10) -> dict:
    """Evaluate predictions: point metrics, patient-level bootstrap CIs, calibration; JSON-ready.

    Parameters
    ----------
    y_true : (N,) int class indices.
    probs : (N, C) probabilities (binary may be (N,) p(class 1)).
    patient_ids : (N,) patient id per case; None = every case its own patient (flagged in warnings).
    threshold : binary only. A float, a :class:`~mmxai_core.train.thresholds.ThresholdChoice` (or its
        ``to_dict()``) chosen on validation data, or None (0.5, flagged as not chosen on validation).
        Applied unchanged. Must be None for multi-class.
    n_boot : patient-level bootstrap resamples (0 = no CIs). seed : seed of the bootstrap.
    dataset : optional (N,) dataset label per case; adds ``by_dataset`` with the same evaluation per
        label (same threshold, n_boot and seed).
    ci_level : two-sided percentile CI level. n_bins : equal-width calibration bins.

    Returns
    -------
    dict with ``notice``, ``task``, ``n_classes``, ``positive_class`` (binary: 1), ``threshold``
    (value, source, validation figures if chosen on validation), ``bootstrap`` (settings),
    ``definitions``, ``n_cases``, ``n_patients``, ``class_counts``, ``metrics``
    (name -> value, ci_low, ci_high, n_boot_valid, n_boot_skipped), ``per_class`` (multi-class),
    ``calibration`` (:func:`~mmxai_core.train.calibration.reliability_curve`), ``warnings`` and, with
    ``dataset``, ``by_dataset`` (label -> the per-subset keys). Undefined values are None; the dict
    passes ``json.dumps(..., allow_nan=False)``.
    """
    y, p = check_predictions(y_true, probs)
    codes, _ = group_codes(patient_ids, y.size)
    value, thr_info = resolve_threshold(threshold, p.shape[1])
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
        raise EvaluationError(f"n_boot: expected an integer >= 0, got {n_boot!r}")
    if not 0 < ci_level < 1:
        raise EvaluationError(f"ci_level: expected a value in (0, 1), got {ci_level!r}")
    result: dict[str, Any] = {
        "notice": RESEARCH_USE_NOTICE,
        "task": "binary" if p.shape[1] == 2 else "multiclass",
        "n_classes": int(p.shape[1]),
        "positive_class": 1 if p.shape[1] == 2 else None,
        "threshold": thr_info,
        "bootstrap": {"n_boot": int(n_boot), "seed": int(seed), "unit": "patient" if patient_ids is not None
                      else "case", "method": "percentile", "ci_level": float(ci_level)},
        "definitions": dict(METRIC_DEFINITIONS),
    }
    overall = _evaluate_subset(y, p, codes, value, n_boot, seed, ci_level, n_bins)
    if patient_ids is None:
        overall["warnings"].insert(0, "no patient ids: cases bootstrapped as independent patients")
    if threshold is None and value is not None:
        overall["warnings"].insert(0, "threshold 0.5 by default: choose it on validation data "
                                      "(mmxai_core.train.thresholds.select_threshold)")
    result.update(overall)
    if dataset is not None:
        labels = np.asarray(dataset, dtype=object).ravel()
        if labels.size != y.size:
            raise EvaluationError(f"dataset: expected {y.size} labels (one per case), got {labels.size}")
        dcodes, _ = group_codes(labels, y.size, name="dataset")
        names: dict[int, str] = {}
        for i, c in enumerate(dcodes):
            names.setdefault(int(c), str(labels[i]))
        result["by_dataset"] = {}
        for c, name in names.items():
            mask = dcodes == c
            result["by_dataset"][name] = _evaluate_subset(y[mask], p[mask], codes[mask], value, n_boot, seed,
                                                          ci_level, n_bins)
    return result


def metric_rows(result: Mapping) -> list[dict]:
    """Flatten an :func:`evaluate_predictions` result to rows ``dataset, metric, value, ci_low, ci_high,
    n_boot_valid, n_boot_skipped`` (dataset ``"(all)"`` for the whole set, then each dataset)."""
    rows = []
    parts: list[tuple[str, Mapping]] = [("(all)", result)]
    parts += list(result.get("by_dataset", {}).items())
    for name, part in parts:
        for metric, m in part["metrics"].items():
            rows.append({"dataset": name, "metric": metric, "value": m.get("value"), "ci_low": m.get("ci_low"),
                         "ci_high": m.get("ci_high"), "n_boot_valid": m.get("n_boot_valid"),
                         "n_boot_skipped": m.get("n_boot_skipped"), "n_cases": part.get("n_cases"),
                         "n_patients": part.get("n_patients")})
    return rows


__all__: Sequence[str] = ["METRIC_NAMES", "METRIC_DEFINITIONS", "DEFAULT_THRESHOLD", "EvaluationError",
                          "check_predictions", "group_codes", "resolve_threshold", "predict_labels",
                          "point_metrics", "evaluate_predictions", "metric_rows"]
