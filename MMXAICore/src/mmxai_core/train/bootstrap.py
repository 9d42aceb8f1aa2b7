"""Patient-level bootstrap of the evaluation metrics, vectorised over resamples.

Research use, not for diagnosis.

Resampling unit: the patient. Each resample draws G patients with replacement out of the G patients;
every case of a drawn patient enters as often as the patient was drawn. A resample is therefore a
(N,) vector of integer case weights (the draw counts of each case's patient), and B resamples are a
(B, N) weight matrix. Every metric is computed from weighted counts, so all resamples are evaluated
with a few matrix products and one cumulative sum per AUC:

- accuracy, sensitivity, specificity, F1 from weighted confusion counts (``W @ onehot``);
- AUC as the weighted Mann-Whitney statistic: the cases are sorted by score once; per resample the
  weight of positives in each group of tied scores times the weight of negatives strictly below, plus
  half the negatives in the same group, over (total positive weight x total negative weight). With unit
  weights this is exactly the ROC AUC (ties count 1/2).

A metric that is undefined in a resample is skipped for that resample and counted in ``n_skipped``:
binary: sensitivity and F1 without positive cases, specificity without negative cases, AUC without
both; multi-class: sensitivity, F1 and AUC when a class present in the full sample is missing from the
resample, specificity and AUC when fewer than two classes remain (a class has no "rest").
The confidence interval is the percentile interval of the valid resamples (``numpy.percentile``,
linear interpolation). Random draws come from ``numpy.random.default_rng(seed)``: same data, same
``n_boot`` and seed give the same intervals.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np

from mmxai_core.train.metrics import (METRIC_NAMES, EvaluationError, check_predictions, group_codes,
                                      resolve_threshold)

#: Elements per (B, N) weight block; bounds memory (about 8 bytes x this x a few temporaries).
CHUNK_ELEMENTS = 2_000_000


class WeightedAUC:
    """AUC of fixed (N,) scores for a fixed (N,) positive mask under many (B, N) case-weight rows."""

    def __init__(self, positive: np.ndarray, scores: np.ndarray):
        self.order = np.argsort(scores, kind="stable")
        s = scores[self.order]
        self.pos_sorted = positive[self.order].astype(np.float64)
        self.group_ends = np.append(np.flatnonzero(np.diff(s) != 0), s.size - 1)

    def __call__(self, weights: np.ndarray) -> np.ndarray:
        """(B,) AUC per weight row; NaN where positive or negative total weight is 0."""
        ws = weights[:, self.order]
        wp = ws * self.pos_sorted
        cum_p = np.cumsum(wp, axis=1)[:, self.group_ends]
        cum_n = np.cumsum(ws - wp, axis=1)[:, self.group_ends]
        p_k = np.diff(cum_p, axis=1, prepend=0.0)
        n_k = np.diff(cum_n, axis=1, prepend=0.0)
        u = (p_k * (cum_n - 0.5 * n_k)).sum(axis=1)
        denom = cum_p[:, -1] * cum_n[:, -1]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denom > 0, u / np.where(denom > 0, denom, 1.0), np.nan)


def weighted_auc(positive: Any, scores: Any, weights: Any) -> np.ndarray:
    """AUC of ``scores`` (N,) for ``positive`` (N,) bool under ``weights`` (B, N) or (N,); returns (B,)."""
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    return WeightedAUC(np.asarray(positive, dtype=bool), np.asarray(scores, dtype=np.float64))(w)


class MetricEngine:
    """All of :data:`~mmxai_core.train.metrics.METRIC_NAMES` for one set of predictions under (B, N) weights.

    ``y`` (N,) int, ``probs`` (N, C) already checked (:func:`check_predictions`), ``threshold`` for binary.
    With unit weights the values equal :func:`~mmxai_core.train.metrics.point_metrics`.
    """

    def __init__(self, y: np.ndarray, probs: np.ndarray, threshold: float | None = None):
        n, c = probs.shape
        self.binary = c == 2
        if self.binary:
            t = 0.5 if threshold is None else float(threshold)
            pred = (probs[:, 1] >= t).astype(np.int64)
        else:
            pred = np.argmax(probs, axis=1)
        eye = np.eye(c)
        self.onehot_y = eye[y]
        self.onehot_pred = eye[pred]
        self.tp_mask = self.onehot_y * self.onehot_pred
        self.correct = (pred == y).astype(np.float64)
        counts = np.bincount(y, minlength=c)
        self.present = np.flatnonzero(counts > 0)
        if self.binary:
            self.aucs = [WeightedAUC(y == 1, probs[:, 1])]
        else:
            self.aucs = [WeightedAUC(y == k, probs[:, k]) for k in self.present]

    def __call__(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """``weights`` (B, N) -> {metric: (B,) values, NaN where undefined}."""
        w = np.asarray(weights, dtype=np.float64)
        total = w.sum(axis=1)
        pos = w @ self.onehot_y
        pred_pos = w @ self.onehot_pred
        tp = w @ self.tp_mask
        out = {}
        with np.errstate(invalid="ignore", divide="ignore"):
            out["accuracy"] = (w @ self.correct) / total
            if self.binary:
                has_pos, has_neg = pos[:, 1] > 0, pos[:, 0] > 0
                out["sensitivity"] = np.where(has_pos, tp[:, 1] / pos[:, 1], np.nan)
                out["specificity"] = np.where(has_neg, tp[:, 0] / pos[:, 0], np.nan)
                out["f1"] = np.where(has_pos, 2 * tp[:, 1] / (pos[:, 1] + pred_pos[:, 1]), np.nan)
                out["auc"] = np.where(has_pos & has_neg, self.aucs[0](w), np.nan)
            else:
                k = self.present
                pk, ppk, tpk = pos[:, k], pred_pos[:, k], tp[:, k]
                rest = total[:, None] - pk
                tn = rest - (ppk - tpk)
                all_pos = (pk > 0).all(axis=1)
                all_rest = (rest > 0).all(axis=1) & (k.size >= 2)
                out["sensitivity"] = np.where(all_pos, (tpk / pk).mean(axis=1), np.nan)
                out["specificity"] = np.where(all_rest, (tn / rest).mean(axis=1), np.nan)
                out["f1"] = np.where(all_pos, (2 * tpk / (pk + ppk)).mean(axis=1), np.nan)
                if k.size >= 2:
                    auc = np.mean([a(w) for a in self.aucs], axis=0)
                    out["auc"] = np.where(all_pos & all_rest, auc, np.nan)
                else:
                    out["auc"] = np.full(w.shape[0], np.nan)
        return {name: out[name] for name in METRIC_NAMES}


def resample_weights(patient_codes: np.ndarray, n_boot: int, seed: int | np.random.Generator = 0,
                     chunk: int | None = None) -> Iterator[np.ndarray]:
    """Yield (b, N) float64 case-weight blocks, b <= ``chunk``, B = ``n_boot`` rows in all.

    ``patient_codes`` (N,) ints 0..G-1 (see :func:`~mmxai_core.train.metrics.group_codes`). Each row
    draws G patients with replacement; a case's weight is its patient's draw count. ``chunk`` defaults
    to a size from N and G only, so the draws depend on (data size, n_boot, seed) alone.
    """
    codes = np.asarray(patient_codes, dtype=np.int64)
    n_pat = int(codes.max()) + 1 if codes.size else 0
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if chunk is None:
        chunk = max(1, CHUNK_ELEMENTS // max(codes.size, n_pat, 1))
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        draws = rng.integers(0, n_pat, size=(b, n_pat))
        flat = (draws + (np.arange(b) * n_pat)[:, None]).ravel()
        counts = np.bincount(flat, minlength=b * n_pat).reshape(b, n_pat)
        yield counts[:, codes].astype(np.float64)


def bootstrap_draws(y_true: Any, probs_list: Sequence[Any], patient_ids: Any,
                    thresholds: Sequence[Any] | None = None, n_boot: int = 1000,
                    seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Bootstrap distributions of every metric for several models scored on the same cases.

    All models see the *same* resamples (paired). ``probs_list``: K arrays (N, C); ``thresholds``: K
    thresholds (binary) or None. Returns K dicts {metric: (n_boot,) values, NaN = undefined}.
    """
    y, _ = check_predictions(y_true, probs_list[0])
    codes, _ = group_codes(patient_ids, y.size)
    thresholds = [None] * len(probs_list) if thresholds is None else list(thresholds)
    if len(thresholds) != len(probs_list):
        raise EvaluationError(f"thresholds: expected {len(probs_list)}, got {len(thresholds)}")
    engines = []
    for i, (pr, t) in enumerate(zip(probs_list, thresholds)):
        _, p = check_predictions(y, pr)
        if engines and p.shape[1] != engines[0][1]:
            raise EvaluationError(f"probs of model {i}: {p.shape[1]} classes, model 0 has {engines[0][1]}")
        value, _ = resolve_threshold(t, p.shape[1])
        engines.append((MetricEngine(y, p, value), p.shape[1]))
    parts: list[list[dict[str, np.ndarray]]] = [[] for _ in engines]
    for w in resample_weights(codes, n_boot, seed):
        for i, (engine, _) in enumerate(engines):
            parts[i].append(engine(w))
    out = []
    for blocks in parts:
        out.append({m: (np.concatenate([b[m] for b in blocks]) if blocks else np.empty(0)) for m in METRIC_NAMES})
    return out


def percentile_ci(values: np.ndarray, ci_level: float = 0.95) -> dict:
    """Percentile CI of the finite entries of (B,) ``values``.

    Returns {"ci_low", "ci_high" (None if no valid resample), "n_valid", "n_skipped"}.
    """
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    n_valid = int(ok.sum())
    if n_valid == 0:
        return {"ci_low": None, "ci_high": None, "n_valid": 0, "n_skipped": int(v.size)}
    a = (1.0 - ci_level) / 2.0
    lo, hi = np.percentile(v[ok], [100 * a, 100 * (1 - a)])
    return {"ci_low": float(lo), "ci_high": float(hi), "n_valid": n_valid, "n_skipped": int(v.size - n_valid)}


def bootstrap_metrics(y_true: Any, probs: Any, patient_ids: Any, threshold: Any = None, n_boot: int = 1000,
                      seed: int = 0, ci_level: float = 0.95) -> dict:
    """Patient-level percentile bootstrap CIs of all metrics of one model.

    ``y_true`` (N,), ``probs`` (N, C), ``patient_ids`` (N,) (None = case-level), ``threshold`` binary.
    Returns {"n_boot", "seed", "ci_level", "unit": "patient", "method": "percentile", "n_patients",
    "metrics": {name: {"ci_low", "ci_high", "n_valid", "n_skipped"}}, "warnings": [str]}.
    """
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
        raise EvaluationError(f"n_boot: expected an integer >= 0, got {n_boot!r}")
    y, p = check_predictions(y_true, probs)
    _, n_pat = group_codes(patient_ids, y.size)
    draws = bootstrap_draws(y, [p], patient_ids, [threshold], n_boot=n_boot, seed=seed)[0]
    metrics, warnings = {}, []
    for name in METRIC_NAMES:
        metrics[name] = percentile_ci(draws[name], ci_level)
        skipped = metrics[name]["n_skipped"]
        if n_boot and skipped:
            warnings.append(f"{name}: {skipped} of {n_boot} bootstrap resamples skipped (metric undefined: "
                            "a class missing from the resample)")
    if n_boot and n_pat < 20:
        warnings.append(f"only {n_pat} patients: bootstrap intervals are unreliable")
    unit = "patient" if patient_ids is not None else "case"
    return {"n_boot": int(n_boot), "seed": int(seed), "ci_level": float(ci_level), "unit": unit,
            "method": "percentile", "n_patients": n_pat, "metrics": metrics, "warnings": warnings}


__all__ = ["CHUNK_ELEMENTS", "WeightedAUC", "weighted_auc", "MetricEngine", "resample_weights",
           "bootstrap_draws", "percentile_ci", "bootstrap_metrics"]
