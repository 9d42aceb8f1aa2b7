"""Shapley values of the clinical fields of one case (research use, not for diagnosis).

The game (:mod:`mmxai_core.explain.value_function`): players are the fields the user entered, a field
outside the coalition is set to "unknown", the image is fixed and encoded once. So

    sum_i phi_i = f(x) - f(all clinical fields unknown)        (efficiency)

and a field the user left unknown gets exactly 0 (it is no player: "unknown (0)").

Exact up to :data:`EXACT_MAX_FIELDS` known fields: all 2^d coalitions as a bit matrix (row k = the bits of
k, bit j = player j), v evaluated for all of them in memory-bounded chunks, then combined in one matrix
product ``phi = C @ v`` with the Shapley coefficient matrix C (d, 2^d):

    C[i, S] = w(|S| - 1)  if i in S,   -w(|S|)  if i not in S,   w(s) = s! (d - s - 1)! / d!

which is the usual ``phi_i = sum_{S not containing i} w(|S|) (v(S + i) - v(S))`` regrouped by coalition.
Beyond the cutoff: antithetic permutation sampling (:mod:`mmxai_core.explain.shapley_sampling`) with a
standard error per field.

    from mmxai_core.explain.shapley import clinical_shapley
    result = clinical_shapley(model, images, values, missing, preprocessor=pre)   # ShapleyResult
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from mmxai_core.explain.shapley_sampling import DEFAULT_PERMUTATIONS, permutation_shapley
from mmxai_core.explain.value_function import CoalitionValue

#: The one place that decides exact vs. sampled: exact Shapley values up to this many known fields
#: (2^12 = 4,096 coalitions; one cheap decode row each).
EXACT_MAX_FIELDS = 12

METHODS = ("auto", "exact", "permutation")
UNKNOWN = "unknown"
BASELINE_UNKNOWN = "all clinical fields unknown, image kept"


# ------------------------------------------------------------------------------------- the exact algorithm
def coalition_matrix(d: int) -> np.ndarray:
    """All 2^d coalitions of d players: (2^d, d) bool, row k holds the bits of k (column j = bit j)."""
    if d < 0 or d > 30:
        raise ValueError(f"coalition_matrix: d must be in 0..30, got {d}")
    k = np.arange(1 << d, dtype=np.int64)
    return ((k[:, None] >> np.arange(d, dtype=np.int64)[None, :]) & 1).astype(bool)


def shapley_weights(d: int) -> np.ndarray:
    """w(s) = s! (d - s - 1)! / d! = 1 / (d * C(d-1, s)) for s = 0..d-1, float64 (d,)."""
    return np.array([1.0 / (d * math.comb(d - 1, s)) for s in range(d)], dtype=np.float64)


def shapley_coefficients(d: int) -> np.ndarray:
    """C (d, 2^d) with ``phi = C @ v`` for v indexed by coalition bitmask (see module docstring)."""
    if d == 0:
        return np.zeros((0, 1))
    bits = coalition_matrix(d).T                       # (d, 2^d)
    size = bits.sum(axis=0)                            # (2^d,) |S|
    w = shapley_weights(d)
    w_in = w[np.clip(size - 1, 0, d - 1)]              # used where i in S (|S| >= 1)
    w_out = w[np.clip(size, 0, d - 1)]                 # used where i not in S (|S| <= d - 1)
    return np.where(bits, w_in[None, :], -w_out[None, :])


def shapley_from_table(v: np.ndarray) -> np.ndarray:
    """Exact Shapley values from the value of every coalition: v (2^d,) indexed by bitmask -> phi (d,)."""
    v = np.asarray(v, dtype=np.float64)
    d = int(round(math.log2(v.shape[0]))) if v.ndim == 1 and v.shape[0] else -1
    if d < 0 or v.shape[0] != 1 << d:
        raise ValueError(f"v must have 2^d entries, got shape {v.shape}")
    return shapley_coefficients(d) @ v


def exact_shapley(value_fn: Callable[[np.ndarray], np.ndarray], d: int) -> tuple[np.ndarray, np.ndarray]:
    """Evaluate ``value_fn(coalitions (2^d, d) bool) -> (2^d,)`` once on all coalitions; return
    (phi (d,), v (2^d,) indexed by bitmask: v[0] = empty coalition, v[-1] = all players)."""
    if d > EXACT_MAX_FIELDS:
        raise ValueError(f"exact Shapley values are computed for at most {EXACT_MAX_FIELDS} fields "
                         f"(EXACT_MAX_FIELDS), got {d}; use permutation sampling")
    v = np.asarray(value_fn(coalition_matrix(d)), dtype=np.float64).reshape(-1)
    if v.shape != (1 << d,):
        raise ValueError(f"value_fn returned {v.shape}, expected ({1 << d},)")
    return shapley_from_table(v), v


# ------------------------------------------------------------------------------------------- the result
@dataclasses.dataclass
class ShapleyResult:
    """Attributions of the clinical fields of one case, all F model fields in model order.

    field_names:      (F,) field names.
    entered:          (F,) display strings of the entered values (``"unknown"`` where not entered).
    known:            (F,) bool, entered by the user (the players); unknown fields have value 0.
    values:           (F,) float64 contribution of each field (0 for unknown fields).
    base_value:       f(all clinical fields unknown) (or the background mean, see ``baseline``).
    prediction:       f(x), the model's output for the case as entered.
    method:           ``exact`` | ``permutation`` (| ``interventional-exact`` | ``interventional-permutation``).
    standard_errors:  (F,) per-field standard error of a sampled estimate (0 for unknown fields); None
                      when exact.
    n_evaluations:    clinical rows the model decoded (image encodings not counted).
    seconds:          wall time of the whole explanation; ``timings`` splits it (encode / evaluate).
    target, target_name, output: explained class and the scale (``probability`` | ``log_odds``).
    baseline:         what "absent" means for this result (default: all fields unknown).
    n_permutations:   permutations used (sampling only).
    """

    field_names: tuple[str, ...]
    entered: tuple[str, ...]
    known: np.ndarray
    values: np.ndarray
    base_value: float
    prediction: float
    method: str
    standard_errors: np.ndarray | None = None
    n_evaluations: int = 0
    seconds: float = 0.0
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    target: int = 1
    target_name: str | None = None
    output: str = "probability"
    baseline: str = BASELINE_UNKNOWN
    n_permutations: int | None = None

    @property
    def efficiency_residual(self) -> float:
        """f(x) - base - sum(values); ~0 (rounding) for exact and permutation estimates of this game."""
        return float(self.prediction - self.base_value - float(np.sum(self.values)))

    def order(self) -> np.ndarray:
        """Field indices sorted by |value| (largest first); unknown fields last, in model order."""
        known = np.flatnonzero(self.known)
        known = known[np.argsort(-np.abs(self.values[known]), kind="stable")]
        return np.concatenate([known, np.flatnonzero(~self.known)]).astype(int)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (plain floats, lists, strings)."""
        se = self.standard_errors
        return {
            "quantity": ("Shapley values of the clinical fields; a removed field is set to 'unknown'"
                         if self.method in ("exact", "permutation") else
                         "interventional SHAP: removed fields take background values (a different quantity)"),
            "method": self.method,
            "output": self.output,
            "target": self.target,
            "target_name": self.target_name,
            "baseline": self.baseline,
            "base_value": float(self.base_value),
            "prediction": float(self.prediction),
            "efficiency_residual": self.efficiency_residual,
            "fields": [
                {"name": n, "entered": e, "known": bool(k), "value": float(v),
                 "standard_error": None if se is None else float(se[i])}
                for i, (n, e, k, v) in enumerate(zip(self.field_names, self.entered, self.known, self.values))
            ],
            "n_evaluations": int(self.n_evaluations),
            "n_permutations": self.n_permutations,
            "seconds": float(self.seconds),
            "timings": {k: float(v) for k, v in self.timings.items()},
        }


# ------------------------------------------------------------------------------------------- display
def _fmt_number(x: float) -> str:
    return f"{x:.4g}"


def entered_display(field_names: Sequence[str], values: np.ndarray, missing: np.ndarray,
                    preprocessor: Any = None, entered: Sequence[str] | Mapping[str, Any] | None = None
                    ) -> tuple[str, ...]:
    """Display strings of the entered values, (F,): ``"unknown"`` where missing.

    ``entered`` (a sequence in field order or a mapping by name) wins; otherwise with a fitted
    ``ClinicalPreprocessor`` numeric values are shown in their unit and categories by name; otherwise the
    preprocessed value (scaled number or category code).
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    missing = np.asarray(missing, dtype=bool).reshape(-1)
    out = []
    for j, name in enumerate(field_names):
        if missing[j]:
            out.append(UNKNOWN)
            continue
        given = None
        if isinstance(entered, Mapping):
            given = entered.get(name)
        elif entered is not None:
            given = entered[j]
        if given is not None:
            out.append(str(given))
            continue
        text = _fmt_number(values[j])
        if preprocessor is not None and name in getattr(preprocessor, "names", ()):
            spec = preprocessor.schema.field(name)
            if spec.is_numeric:
                unit = f" {spec.unit}" if spec.unit else ""
                text = _fmt_number(float(preprocessor.inverse_numeric(name, values[j]))) + unit
            else:
                text = str(preprocessor.decode_category(name, values[j]))
        out.append(text)
    return tuple(out)


# ------------------------------------------------------------------------------------------- entry point
def shapley_of_game(vf: CoalitionValue, *, method: str = "auto", n_permutations: int | None = None,
                    seed: int = 0, entered: Sequence[str] | None = None, preprocessor: Any = None,
                    class_names: Sequence[str] | None = None) -> ShapleyResult:
    """Shapley values of a prepared :class:`CoalitionValue` (see :func:`clinical_shapley`)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    d = vf.n_players
    if method == "auto":
        method = "exact" if d <= EXACT_MAX_FIELDS else "permutation"
    t0 = time.perf_counter()
    evals0, eval_s0 = vf.n_evaluations, vf.eval_seconds
    n_fields = len(vf.field_names)
    values = np.zeros(n_fields)
    se = None
    n_perm = None
    if method == "exact":
        phi, table = exact_shapley(vf, d)
        base, pred = float(table[0]), float(table[-1])
    else:
        est = permutation_shapley(vf, d, n_permutations=n_permutations or DEFAULT_PERMUTATIONS, seed=seed)
        phi, base, pred = est.values, est.v_empty, est.v_full
        se = np.zeros(n_fields)
        se[vf.players] = est.standard_errors
        n_perm = est.n_permutations
    values[vf.players] = phi
    target_name = None
    if class_names is not None:
        target_name = str(class_names[vf.target])
    names = vf.field_names
    shown = entered_display(names, vf.values[0].cpu().numpy(), vf.entered_missing, preprocessor, entered)
    evaluate = vf.eval_seconds - eval_s0
    total = time.perf_counter() - t0
    return ShapleyResult(
        field_names=names, entered=shown, known=~vf.entered_missing.copy(), values=values, base_value=base,
        prediction=pred, method=method, standard_errors=se, n_evaluations=vf.n_evaluations - evals0,
        seconds=total + vf.encode_seconds,
        timings={"encode_image": vf.encode_seconds, "evaluate_coalitions": evaluate,
                 "combine": max(0.0, total - evaluate)},
        target=vf.target, target_name=target_name, output=vf.output, n_permutations=n_perm)


def clinical_shapley(model, images=None, clin_values=None, clin_missing=None, *, slice_mask=None,
                     image_present: bool | None = None, target: int | None = None, output: str = "probability",
                     method: str = "auto", n_permutations: int | None = None, seed: int = 0,
                     max_rows_per_chunk: int | None = None, entered: Sequence[str] | None = None,
                     preprocessor: Any = None, class_names: Sequence[str] | None = None) -> ShapleyResult:
    """Shapley values of the clinical fields of one case (removal = "unknown", image encoded once).

    Args:
        model: a MultimodalClassifier (any variant).
        images: (1, S, 1, H, W) or (1, 1, H, W), or None (no image); slice_mask (1, S); image_present.
        clin_values, clin_missing: (F,) or (1, F), model field order (``ClinicalPreprocessor.transform``).
        target: explained class (default: 1 for binary models, the predicted class otherwise).
        output: ``probability`` (default) or ``log_odds``.
        method: ``auto`` (exact up to :data:`EXACT_MAX_FIELDS` known fields, else ``permutation``),
            ``exact`` or ``permutation``.
        n_permutations: permutations for sampling (default :data:`DEFAULT_PERMUTATIONS`, antithetic pairs).
        seed: RNG seed of the sampling.
        max_rows_per_chunk: most coalitions per decode call (memory bound; see CoalitionValue).
        entered / preprocessor: how to display the entered values (see :func:`entered_display`).
        class_names: for ``target_name``.

    Returns:
        :class:`ShapleyResult`; ``values`` sum to ``prediction - base_value``.
    """
    vf = CoalitionValue(model, images, clin_values, clin_missing, slice_mask=slice_mask,
                        image_present=image_present, target=target, output=output,
                        max_rows_per_chunk=max_rows_per_chunk)
    return shapley_of_game(vf, method=method, n_permutations=n_permutations, seed=seed, entered=entered,
                           preprocessor=preprocessor, class_names=class_names)


__all__ = [
    "EXACT_MAX_FIELDS",
    "ShapleyResult",
    "clinical_shapley",
    "coalition_matrix",
    "entered_display",
    "exact_shapley",
    "shapley_coefficients",
    "shapley_from_table",
    "shapley_of_game",
    "shapley_weights",
]
