"""Paired comparison of models scored on the same cases; ablation summaries.

Research use, not for diagnosis.

- :func:`paired_bootstrap_test`: patient-level bootstrap in which both models are evaluated on the
  *same* resample, giving the distribution of the difference of a metric (AUC by default).
  CI: percentile interval of the differences. Two-sided p-value of "no difference":
  ``p = min(1, 2 * min((#{d* <= 0} + 1) / (n_valid + 1), (#{d* >= 0} + 1) / (n_valid + 1)))`` (percentile
  bootstrap test; never 0 with a finite number of resamples). Works for multi-class macro AUC too.
- :func:`delong_test`: DeLong, DeLong & Clarke-Pearson (1988) test of two correlated binary AUCs from
  the structural components (placement values). For positives X_i (m of them) and negatives Y_j (n),
  psi(x, y) = 1 if x > y, 1/2 if x == y, 0 otherwise; V10(X_i) = mean_j psi(X_i, Y_j),
  V01(Y_j) = mean_i psi(X_i, Y_j); AUC = mean V10 = mean V01. With S10 and S01 the 2 x 2 sample
  covariance matrices (divisor m - 1, n - 1) of the components of the two models,
  Var(AUC_a - AUC_b) = L (S10 / m + S01 / n) L^T with L = [1, -1]; z = diff / sqrt(var),
  p = 2 (1 - Phi(|z|)). DeLong treats cases as independent: with several cases per patient prefer the
  patient-level bootstrap.
- :func:`ablation_summary`: variants x seeds scored on the same test cases; per variant the
  seed-mean of each metric with a patient-bootstrap CI of that mean, the seed SD, and the paired
  bootstrap of the seed-mean difference against a reference variant.

Differences are always ``model_b - model_a`` (``variant - reference``).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
from scipy.stats import norm

from mmxai_core.train.bootstrap import MetricEngine, percentile_ci, resample_weights
from mmxai_core.train.metrics import (METRIC_NAMES, EvaluationError, check_predictions, group_codes,
                                      point_metrics, resolve_threshold)


# ----------------------------------------------------------------------------------------------------
# DeLong


def _binary_scores(y_true: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 2:
        if s.shape[1] != 2:
            raise EvaluationError(f"scores: DeLong needs a binary task, got {s.shape[1]} columns")
        s = s[:, 1]
    y = np.asarray(y_true)
    if s.ndim != 1 or y.ndim != 1 or s.size != y.size:
        raise EvaluationError(f"scores: expected shape ({y.size},) matching y_true, got {np.shape(scores)}")
    if not np.isfinite(s).all():
        raise EvaluationError(f"scores: case {int(np.flatnonzero(~np.isfinite(s))[0])} (0-based) is not finite")
    if not np.isin(y, (0, 1)).all():
        raise EvaluationError("y_true: DeLong needs binary labels 0/1")
    y = y.astype(np.int64)
    if (y == 1).sum() < 2 or (y == 0).sum() < 2:
        raise EvaluationError(f"y_true: DeLong needs at least 2 positive and 2 negative cases, got "
                              f"{int((y == 1).sum())} and {int((y == 0).sum())}")
    return y, s


def structural_components(y_true: Any, scores: Any) -> tuple[float, np.ndarray, np.ndarray]:
    """DeLong placement values. Returns ``(auc, v10 (m,), v01 (n,))`` (definitions: module docstring).

    ``y_true`` (N,) 0/1, ``scores`` (N,) or (N, 2). Counting uses sorted arrays (O(N log N)); the result
    equals the pairwise definition.
    """
    y, s = _binary_scores(y_true, scores)
    x, z = s[y == 1], s[y == 0]
    xs, zs = np.sort(x), np.sort(z)
    below = np.searchsorted(zs, x, side="left")
    tie = np.searchsorted(zs, x, side="right") - below
    v10 = (below + 0.5 * tie) / z.size
    above = x.size - np.searchsorted(xs, z, side="right")
    tie = np.searchsorted(xs, z, side="right") - np.searchsorted(xs, z, side="left")
    v01 = (above + 0.5 * tie) / x.size
    return float(v10.mean()), v10, v01


def delong_test(y_true: Any, scores_a: Any, scores_b: Any, ci_level: float = 0.95) -> dict:
    """DeLong's test of AUC_b - AUC_a for two models on the same binary cases.

    ``scores_*`` (N,) or (N, 2). Returns {"auc_a", "auc_b", "diff", "var_a", "var_b", "cov", "se", "z",
    "p_value", "ci_low", "ci_high" (normal CI of the difference), "ci_level", "n_positive", "n_negative"}.
    """
    y, sa = _binary_scores(y_true, scores_a)
    _, sb = _binary_scores(y, scores_b)
    auc_a, v10a, v01a = structural_components(y, sa)
    auc_b, v10b, v01b = structural_components(y, sb)
    m, n = v10a.size, v01a.size
    s10 = np.cov(np.vstack([v10a, v10b]), ddof=1)
    s01 = np.cov(np.vstack([v01a, v01b]), ddof=1)
    cov = s10 / m + s01 / n
    diff = auc_b - auc_a
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    se = math.sqrt(max(var, 0.0))
    if se > 0:
        z = diff / se
        p = float(2 * norm.sf(abs(z)))
    else:
        z = 0.0 if diff == 0 else math.copysign(math.inf, diff)
        p = 1.0 if diff == 0 else 0.0
    q = norm.ppf(0.5 + ci_level / 2)
    return {"auc_a": auc_a, "auc_b": auc_b, "diff": float(diff), "var_a": float(cov[0, 0]),
            "var_b": float(cov[1, 1]), "cov": float(cov[0, 1]), "se": se, "z": float(z), "p_value": p,
            "ci_low": float(diff - q * se), "ci_high": float(diff + q * se), "ci_level": float(ci_level),
            "n_positive": m, "n_negative": n}


def delong_ci(y_true: Any, scores: Any, ci_level: float = 0.95) -> dict:
    """DeLong normal-approximation CI of one binary AUC (clipped to [0, 1]).

    Returns {"auc", "se", "ci_low", "ci_high", "ci_level"}. Cases are treated as independent.
    """
    auc, v10, v01 = structural_components(y_true, scores)
    var = float(np.var(v10, ddof=1) / v10.size + np.var(v01, ddof=1) / v01.size)
    se = math.sqrt(var)
    q = norm.ppf(0.5 + ci_level / 2)
    return {"auc": auc, "se": se, "ci_low": max(0.0, auc - q * se), "ci_high": min(1.0, auc + q * se),
            "ci_level": float(ci_level)}


# ----------------------------------------------------------------------------------------------------
# paired bootstrap


def bootstrap_p_value(diffs: np.ndarray) -> float | None:
    """Two-sided percentile-bootstrap p-value of "difference = 0" from (B,) differences (NaN skipped)."""
    d = np.asarray(diffs, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return None
    lo = (np.sum(d <= 0) + 1) / (d.size + 1)
    hi = (np.sum(d >= 0) + 1) / (d.size + 1)
    return float(min(1.0, 2 * min(lo, hi)))


def paired_bootstrap_test(y_true: Any, probs_a: Any, probs_b: Any, patient_ids: Any, metric: str = "auc",
                          n_boot: int = 1000, seed: int = 0, ci_level: float = 0.95, threshold_a: Any = None,
                          threshold_b: Any = None) -> dict:
    """Paired patient-level bootstrap of ``metric(b) - metric(a)`` on the same cases.

    ``y_true`` (N,), ``probs_a`` / ``probs_b`` (N, C), ``patient_ids`` (N,) (None = case-level);
    ``metric`` one of :data:`~mmxai_core.train.metrics.METRIC_NAMES`; thresholds for binary tasks.
    Returns {"metric", "value_a", "value_b", "diff", "ci_low", "ci_high", "p_value", "ci_level",
    "n_boot", "n_valid", "n_skipped", "seed", "unit"}.
    """
    if metric not in METRIC_NAMES:
        raise EvaluationError(f"metric: expected one of {list(METRIC_NAMES)}, got {metric!r}")
    y, pa = check_predictions(y_true, probs_a)
    _, pb = check_predictions(y, probs_b)
    if pa.shape != pb.shape:
        raise EvaluationError(f"probs_b: shape {pb.shape} differs from probs_a {pa.shape}")
    codes, _ = group_codes(patient_ids, y.size)
    ta, _ = resolve_threshold(threshold_a, pa.shape[1])
    tb, _ = resolve_threshold(threshold_b, pb.shape[1])
    va = point_metrics(y, pa, ta)["metrics"][metric]
    vb = point_metrics(y, pb, tb)["metrics"][metric]
    ea, eb = MetricEngine(y, pa, ta), MetricEngine(y, pb, tb)
    diffs = [eb(w)[metric] - ea(w)[metric] for w in resample_weights(codes, n_boot, seed)]
    d = np.concatenate(diffs) if diffs else np.empty(0)
    ci = percentile_ci(d, ci_level)
    return {"metric": metric, "value_a": va, "value_b": vb,
            "diff": None if va is None or vb is None else float(vb - va),
            "ci_low": ci["ci_low"], "ci_high": ci["ci_high"], "p_value": bootstrap_p_value(d),
            "ci_level": float(ci_level), "n_boot": int(n_boot), "n_valid": ci["n_valid"],
            "n_skipped": ci["n_skipped"], "seed": int(seed),
            "unit": "patient" if patient_ids is not None else "case"}


# ----------------------------------------------------------------------------------------------------
# ablation


def ablation_summary(runs: Sequence[Mapping], reference: str | None = None,
                     metrics: Sequence[str] = METRIC_NAMES, compare_metric: str = "auc", n_boot: int = 1000,
                     seed: int = 0, ci_level: float = 0.95) -> dict:
    """Summarise variants x seeds scored on the same test cases.

    ``runs``: dicts with ``variant`` (str), ``seed`` (int), ``y_true`` (N,), ``probs`` (N, C),
    ``patient_ids`` (N,) and optional ``threshold`` (binary; chosen on validation, default 0.5). All runs
    must share ``y_true`` and ``patient_ids`` (same cases, same order). ``reference``: the variant the
    others are compared with (default: the first variant listed).

    Per variant (in order of first appearance): ``metrics[name]`` = {"value": mean over seeds,
    "ci_low", "ci_high": patient-bootstrap percentile CI of the seed mean (test-set sampling),
    "sd_seeds": SD over seeds (ddof 1; None with one seed), "per_seed": [values]}, and ``comparison``
    (None for the reference) = paired bootstrap of seed-mean ``compare_metric`` (variant - reference):
    {"reference", "metric", "diff", "ci_low", "ci_high", "p_value", "n_valid", "n_skipped"}.
    Returns {"variants": [...], "reference", "compare_metric", "metrics", "bootstrap": settings,
    "n_cases", "n_patients", "warnings"}.
    """
    if not runs:
        raise EvaluationError("runs: no runs given")
    for name in list(metrics) + [compare_metric]:
        if name not in METRIC_NAMES:
            raise EvaluationError(f"metric: expected one of {list(METRIC_NAMES)}, got {name!r}")
    first = runs[0]
    for key in ("variant", "seed", "y_true", "probs", "patient_ids"):
        for i, r in enumerate(runs):
            if key not in r:
                raise EvaluationError(f"runs[{i}]: missing key {key!r}")
    y, _ = check_predictions(first["y_true"], first["probs"])
    pid_ref = np.asarray(first["patient_ids"], dtype=object)
    codes, n_pat = group_codes(first["patient_ids"], y.size)
    engines, variants, warnings, default_threshold_runs = [], {}, [], []
    for i, r in enumerate(runs):
        yi, p = check_predictions(r["y_true"], r["probs"])
        if yi.shape != y.shape or not np.array_equal(yi, y):
            raise EvaluationError(f"runs[{i}] ({r['variant']}, seed {r['seed']}): y_true differs from runs[0]; "
                                  "all runs must be scored on the same cases in the same order")
        pid = np.asarray(r["patient_ids"], dtype=object)
        if pid.shape != pid_ref.shape or not all(a == b for a, b in zip(pid.tolist(), pid_ref.tolist())):
            raise EvaluationError(f"runs[{i}] ({r['variant']}, seed {r['seed']}): patient_ids differ from runs[0]")
        t = r.get("threshold")
        value, _ = resolve_threshold(t, p.shape[1])
        if p.shape[1] == 2 and t is None:
            default_threshold_runs.append(i)
        variants.setdefault(str(r["variant"]), []).append(i)
        engines.append((MetricEngine(y, p, value), point_metrics(y, p, value)["metrics"], r["seed"]))
    if default_threshold_runs:
        warnings.append(f"runs {default_threshold_runs}: no 'threshold', 0.5 used; choose it on validation data")
    ref = str(reference) if reference is not None else next(iter(variants))
    if ref not in variants:
        raise EvaluationError(f"reference: variant {ref!r} not among {list(variants)}")
    needed = sorted(set(metrics) | {compare_metric}, key=METRIC_NAMES.index)
    sums = {v: {m: [] for m in needed} for v in variants}
    for w in resample_weights(codes, n_boot, seed):
        draws = [e(w) for e, _, _ in engines]
        for v, idx in variants.items():
            for m in needed:
                sums[v][m].append(np.mean([draws[i][m] for i in idx], axis=0))
    boot = {v: {m: (np.concatenate(sums[v][m]) if sums[v][m] else np.empty(0)) for m in needed} for v in variants}
    out_variants = []
    for v, idx in variants.items():
        entry: dict[str, Any] = {"variant": v, "seeds": [engines[i][2] for i in idx], "n_seeds": len(idx),
                                 "metrics": {}}
        for m in metrics:
            vals = [engines[i][1][m] for i in idx]
            defined = [x for x in vals if x is not None]
            ci = percentile_ci(boot[v][m], ci_level)
            entry["metrics"][m] = {
                "value": float(np.mean(defined)) if len(defined) == len(vals) else None,
                "ci_low": ci["ci_low"], "ci_high": ci["ci_high"],
                "sd_seeds": float(np.std(defined, ddof=1)) if len(defined) >= 2 and len(defined) == len(vals)
                else None,
                "per_seed": vals, "n_boot_valid": ci["n_valid"], "n_boot_skipped": ci["n_skipped"]}
        if v == ref:
            entry["comparison"] = None
        else:
            d = boot[v][compare_metric] - boot[ref][compare_metric]
            ci = percentile_ci(d, ci_level)
            mv = [engines[i][1][compare_metric] for i in idx]
            mr = [engines[i][1][compare_metric] for i in variants[ref]]
            diff = (float(np.mean(mv) - np.mean(mr)) if None not in mv and None not in mr else None)
            entry["comparison"] = {"reference": ref, "metric": compare_metric, "diff": diff,
                                   "ci_low": ci["ci_low"], "ci_high": ci["ci_high"],
                                   "p_value": bootstrap_p_value(d), "n_valid": ci["n_valid"],
                                   "n_skipped": ci["n_skipped"]}
        out_variants.append(entry)
    return {"variants": out_variants, "reference": ref, "compare_metric": compare_metric, "metrics": list(metrics),
            "bootstrap": {"n_boot": int(n_boot), "seed": int(seed), "unit": "patient", "method": "percentile",
                          "ci_level": float(ci_level)},
            "n_cases": int(y.size), "n_patients": n_pat, "warnings": warnings}


__all__ = ["structural_components", "delong_test", "delong_ci", "bootstrap_p_value", "paired_bootstrap_test",
           "ablation_summary"]
