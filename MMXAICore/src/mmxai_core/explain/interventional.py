"""Interventional SHAP of the clinical fields over background rows, via the shap library (optional).

A DIFFERENT QUANTITY from :func:`mmxai_core.explain.shapley.clinical_shapley`: a field outside the
coalition takes the values of background rows (averaged over the rows), not "unknown". So

    sum_i phi_i = f(x) - mean_k f(image, background row k)

the base value is per image and per background set (REFERENCE.md, SHAP). For researchers; the default
explanation of the product is the "unknown" game. The image is encoded once here too.

Fields the user left unknown stay unknown in every row (also in the background rows), so they are null
players with value 0, as in the default game. shap is an optional extra (``pip install mmxai-core[shap]``)
and is imported only when this function runs; it must never be installed into 3D Slicer's Python (its
dependency ``slicer`` clashes with Slicer's own package).
"""

from __future__ import annotations

import importlib
import time
from typing import Any, Sequence

import numpy as np

from mmxai_core.errors import MMXAIError
from mmxai_core.explain.shapley import EXACT_MAX_FIELDS, ShapleyResult, entered_display
from mmxai_core.explain.value_function import CoalitionValue

#: Stands for "unknown" inside the arrays handed to shap (its maskers multiply by the mask, so NaN would
#: leak into neighbouring entries). Preprocessed values are scaled numbers or category codes, never this.
_UNKNOWN_SENTINEL = -1.0e30


def _import_shap():
    try:
        return importlib.import_module("shap")
    except ImportError as e:
        raise MMXAIError("interventional SHAP needs the optional 'shap' package: pip install "
                         "'mmxai-core[shap]' (never into 3D Slicer's Python: its 'slicer' dependency clashes "
                         f"with Slicer's own package) ({e})") from None


def interventional_shapley(model, images=None, clin_values=None, clin_missing=None, *, background_values,
                           background_missing=None, slice_mask=None, image_present: bool | None = None,
                           target: int | None = None, output: str = "probability", method: str = "auto",
                           max_evals: int | None = None, seed: int = 0,
                           entered: Sequence[str] | None = None, preprocessor: Any = None,
                           class_names: Sequence[str] | None = None) -> ShapleyResult:
    """Interventional SHAP of one case's known clinical fields with shap's Exact or Permutation explainer.

    Args:
        background_values: (K, F) preprocessed background rows (e.g. a training summary); NaN = unknown.
        background_missing: (K, F) bool (default: NaN in ``background_values``).
        method: ``auto`` (Exact up to :data:`~mmxai_core.explain.shapley.EXACT_MAX_FIELDS` known fields,
            else Permutation), ``exact`` or ``permutation``; ``max_evals`` for Permutation.
        Other arguments as in :func:`~mmxai_core.explain.shapley.clinical_shapley`.

    Returns:
        :class:`ShapleyResult` with ``method`` ``interventional-exact`` / ``interventional-permutation`` and
        ``baseline`` naming the background; ``base_value`` = mean over the background rows.
    """
    shap = _import_shap()
    t0 = time.perf_counter()
    vf = CoalitionValue(model, images, clin_values, clin_missing, slice_mask=slice_mask,
                        image_present=image_present, target=target, output=output)
    n_fields = len(vf.field_names)
    bg = np.array(background_values, dtype=np.float64, copy=True)
    if bg.ndim != 2 or bg.shape[1] != n_fields or bg.shape[0] < 1:
        raise ValueError(f"background_values must be (K, {n_fields}) with K >= 1, got {bg.shape}")
    bg_missing = np.isnan(bg) if background_missing is None else np.asarray(background_missing, dtype=bool)
    if bg_missing.shape != bg.shape:
        raise ValueError(f"background_missing must be {bg.shape}, got {bg_missing.shape}")
    bg = np.where(bg_missing, _UNKNOWN_SENTINEL, bg)
    players = vf.players
    d = len(players)
    x_full = vf.values[0].cpu().numpy().astype(np.float64)
    x = x_full[players][None, :]                                   # (1, d)
    evals0, eval_s0 = vf.n_evaluations, vf.eval_seconds

    def f(rows: np.ndarray) -> np.ndarray:
        """(R, d) values of the players (sentinel = unknown) -> (R,)."""
        rows = np.asarray(rows, dtype=np.float64)
        values = np.broadcast_to(x_full, (rows.shape[0], n_fields)).copy()
        missing = np.broadcast_to(vf.entered_missing, values.shape).copy()
        values[:, players] = rows
        missing[:, players] = rows <= _UNKNOWN_SENTINEL / 2
        return vf.evaluate_rows(np.where(missing, 0.0, values).astype(np.float32), missing)

    values = np.zeros(n_fields)
    if method not in ("auto", "exact", "permutation"):
        raise ValueError(f"method must be auto, exact or permutation, got {method!r}")
    if method == "auto":
        method = "exact" if d <= EXACT_MAX_FIELDS else "permutation"
    if d == 0:
        base = float(np.mean(f(bg[:, players])))
        pred = float(f(x)[0])
    else:
        masker = shap.maskers.Independent(bg[:, players], max_samples=bg.shape[0])
        if method == "exact":
            explanation = shap.explainers.Exact(f, masker)(x, silent=True)
        else:
            evals = max_evals or max(500, 10 * (2 * d + 1))
            explanation = shap.explainers.Permutation(f, masker, seed=seed)(x, max_evals=evals, silent=True)
        values[players] = np.asarray(explanation.values, dtype=np.float64).reshape(-1)
        base = float(np.asarray(explanation.base_values).reshape(-1)[0])
        pred = float(f(x)[0])
    shown = entered_display(vf.field_names, x_full, vf.entered_missing, preprocessor, entered)
    total = time.perf_counter() - t0
    return ShapleyResult(
        field_names=vf.field_names, entered=shown, known=~vf.entered_missing.copy(), values=values,
        base_value=base, prediction=pred, method=f"interventional-{method}", standard_errors=None,
        n_evaluations=vf.n_evaluations - evals0, seconds=total,
        timings={"encode_image": vf.encode_seconds, "evaluate_coalitions": vf.eval_seconds - eval_s0},
        target=vf.target, target_name=None if class_names is None else str(class_names[vf.target]),
        output=vf.output,
        baseline=f"interventional: mean over {bg.shape[0]} background row(s) (not 'all unknown')")


__all__ = ["interventional_shapley"]
