"""Localisation of a heatmap against a lesion mask, each against a random-map baseline.

Research use, not for diagnosis.

Inputs: ``heatmap`` and ``mask`` of the same shape, (H, W) or (S, H, W), both in model space or both on the
patient's grid; optionally a ``foreground`` (e.g. the body/breast, or the real slices) to which everything
is restricted (default: every voxel). Negative heat counts as 0. Distances are in voxels (index units,
Euclidean, across slices too), or in mm with ``spacing`` = (sz, sy, sx).

* **Pointing game**: hit = the heatmap's maximum lies within ``tolerance`` (default 2 voxels) of the mask
  (the mask dilated by the tolerance). Tied maxima (values >= (1 - 1e-6) * max) count as the fraction of
  them that hit (the expected hit of a random tie-break). Baseline (**analytic**): a map whose maximum is
  uniform over the foreground hits with probability |dilated mask & foreground| / |foreground|.
* **Energy inside the mask** ("energy-based pointing game"): sum(heat in mask) / sum(heat), no tolerance.
  Baseline (**analytic**): for a random map with exchangeable voxel values the expectation is exactly
  |mask & foreground| / |foreground|.
* **IoU** of the thresholded map with the mask. ``iou_mode``: ``"mask_area"`` (default): the top-n voxels
  with n = |mask & foreground| (so a perfect map reaches IoU 1; ties broken at random, seeded);
  ``"top_fraction"``: the top ``iou_q`` (default 10 %) of the foreground; ``"relative"``: heat >=
  ``iou_t`` (default 0.5) x max. Baseline (**analytic** for the two top-n modes): a uniformly random set of
  n foreground voxels; its intersection with the mask is hypergeometric and E[IoU] is summed exactly.
  No analytic value for ``"relative"``.
* **Monte Carlo baseline** (``n_random`` maps, default 16, seeded): white noise blurred in-plane with
  ``random_sigma_px`` (default 8) and min-max scaled to [0, 1] over the foreground, scored with the same
  three rules (mean and std reported). Spatially smooth random maps have the same expectations as the
  analytic ones for pointing/energy but a larger spread; for ``"relative"`` IoU this is the only baseline.

An empty mask (no lesion) or an all-zero heatmap makes the case undefined (``defined`` False, NaNs), so a
cohort loop can skip it; :func:`summarise_localisation` averages the defined cases.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from scipy import ndimage
from scipy.stats import hypergeom

from mmxai_core.explain.metrics._common import as_maps, jsonable, smooth_random_maps, summary, top_n_mask

IOU_MODES = ("mask_area", "top_fraction", "relative")
TIE_RTOL = 1e-6
DEFAULT_TOLERANCE = 2.0


def _hit_region(mask: np.ndarray, tolerance: float, spacing: Sequence[float] | None) -> np.ndarray:
    if tolerance <= 0:
        return mask.copy()
    sampling = None if spacing is None else tuple(float(v) for v in spacing)
    dist = ndimage.distance_transform_edt(~mask, sampling=sampling)
    return dist <= tolerance


def _scores(heat: np.ndarray, mask: np.ndarray, hit: np.ndarray, fg: np.ndarray, iou_mode: str, n_top: int,
            iou_t: float, rng: np.random.Generator) -> tuple[float, float, float]:
    """(pointing, energy, iou) of one map restricted to the foreground; NaN where the map is empty."""
    h = np.clip(heat[fg], 0.0, None)
    m, g = mask[fg], hit[fg]
    peak = float(h.max()) if h.size else 0.0
    if not peak > 0:
        return math.nan, math.nan, math.nan
    tied = h >= peak * (1.0 - TIE_RTOL)
    pointing = float(g[tied].mean())
    energy = float(h[m].sum() / h.sum())
    if iou_mode == "relative":
        chosen = h >= iou_t * peak
    else:
        chosen = top_n_mask(h, n_top, rng)
    inter = float(np.sum(chosen & m))
    union = float(np.sum(chosen | m))
    return pointing, energy, inter / union if union else math.nan


def expected_random_iou(n_foreground: int, n_mask: int, n_chosen: int) -> float:
    """E[IoU] of a uniformly random ``n_chosen``-subset of ``n_foreground`` voxels with a fixed ``n_mask``
    subset: sum over the hypergeometric intersection x of P(x) x / (n_chosen + n_mask - x)."""
    if n_mask == 0 and n_chosen == 0:
        return math.nan
    lo, hi = max(0, n_chosen + n_mask - n_foreground), min(n_chosen, n_mask)
    x = np.arange(lo, hi + 1)
    pmf = hypergeom.pmf(x, n_foreground, n_mask, n_chosen)
    return float(np.sum(pmf * x / (n_chosen + n_mask - x)))


def localisation(heatmap: Any, mask: Any, *, foreground: Any = None, tolerance: float = DEFAULT_TOLERANCE,
                 spacing: Sequence[float] | None = None, iou_mode: str = "mask_area", iou_q: float = 0.1,
                 iou_t: float = 0.5, n_random: int = 16, random_sigma_px: float = 8.0, seed: int = 0
                 ) -> dict[str, Any]:
    """Pointing game, energy inside the mask and IoU of one case, with baselines (module docstring).

    Args:
        heatmap: (H, W) or (S, H, W) (numpy or torch), higher = more attributed.
        mask: same shape, bool (lesion). foreground: same shape, bool (default all True).
        tolerance: pointing-game tolerance, voxels (or mm with ``spacing`` (sz, sy, sx)).

    Returns:
        JSON-ready dict: ``pointing_game``, ``energy_in_mask``, ``iou``, each ``{"value", "baseline",
        "baseline_kind", "baseline_monte_carlo", "ratio", "difference"}``, plus ``parameters``,
        ``mask_fraction`` and ``defined``.
    """
    if iou_mode not in IOU_MODES:
        raise ValueError(f"iou_mode must be one of {IOU_MODES}, got {iou_mode!r}")
    heat = as_maps(heatmap, "heatmap")
    m = as_maps(mask, "mask") > 0.5
    fg = np.ones_like(m) if foreground is None else as_maps(foreground, "foreground") > 0.5
    if not (heat.shape == m.shape == fg.shape):
        raise ValueError(f"heatmap {heat.shape}, mask {m.shape} and foreground {fg.shape} must have the same shape")
    if spacing is not None and len(spacing) != 3:
        raise ValueError("spacing must be (sz, sy, sx)")
    if not np.isfinite(heat).all():
        raise ValueError("heatmap has non-finite values")
    m = m & fg
    n_fg, n_mask = int(fg.sum()), int(m.sum())
    hit = _hit_region(m, float(tolerance), spacing) & fg
    n_top = n_mask if iou_mode == "mask_area" else int(round(float(iou_q) * n_fg))
    rng = np.random.default_rng(int(seed))
    params = {"tolerance": float(tolerance), "tolerance_unit": "mm" if spacing is not None else "voxels",
              "spacing": None if spacing is None else [float(v) for v in spacing],
              "tie_rule": f"maxima >= (1 - {TIE_RTOL}) * max count fractionally",
              "iou_mode": iou_mode, "iou_q": float(iou_q) if iou_mode == "top_fraction" else None,
              "iou_t": float(iou_t) if iou_mode == "relative" else None, "n_iou_voxels": n_top
              if iou_mode != "relative" else None, "n_random": int(n_random),
              "random_maps": "white noise blurred in-plane (random_sigma_px), min-max scaled" if n_random else None,
              "random_sigma_px": float(random_sigma_px) if n_random else None, "seed": int(seed),
              "foreground": "given" if foreground is not None else "all voxels", "negative_heat": "clipped to 0"}
    out: dict[str, Any] = {"metric": "localisation", "parameters": params,
                           "mask_fraction": n_mask / n_fg if n_fg else math.nan, "n_mask_voxels": n_mask,
                           "n_foreground_voxels": n_fg}
    pointing, energy, iou = _scores(heat, m, hit, fg, iou_mode, n_top, float(iou_t), rng) if n_mask else \
        (math.nan, math.nan, math.nan)
    out["defined"] = bool(n_mask > 0 and math.isfinite(pointing))
    if n_mask == 0:
        out["reason"] = "empty mask (no lesion)"
    elif not out["defined"]:
        out["reason"] = "all-zero heatmap"
    analytic = {
        "pointing_game": float(hit.sum() / n_fg) if n_fg else math.nan,
        "energy_in_mask": n_mask / n_fg if n_fg else math.nan,
        "iou": expected_random_iou(n_fg, n_mask, n_top) if iou_mode != "relative" else None,
    }
    kinds = {"pointing_game": "analytic: |mask dilated by tolerance| / |foreground|",
             "energy_in_mask": "analytic: |mask| / |foreground|",
             "iou": ("analytic: uniformly random set of the same size (hypergeometric expectation)"
                     if iou_mode != "relative" else "Monte Carlo (smoothed random maps)")}
    mc: dict[str, list[float]] = {"pointing_game": [], "energy_in_mask": [], "iou": []}
    if n_random and n_mask:
        s, h, w = heat.shape
        gen = torch.Generator().manual_seed(int(seed))
        maps = smooth_random_maps(int(n_random), (s, h, w), float(random_sigma_px), gen).double().numpy()
        for r in range(int(n_random)):
            x = maps[r]
            lo, hi = x[fg].min(), x[fg].max()
            x = (x - lo) / (hi - lo) if hi > lo else np.ones_like(x)
            for key, v in zip(mc, _scores(x, m, hit, fg, iou_mode, n_top, float(iou_t), rng)):
                mc[key].append(v)
    for key, value in (("pointing_game", pointing), ("energy_in_mask", energy), ("iou", iou)):
        mc_summary = summary(mc[key]) if mc[key] else None
        base = analytic[key]
        if base is None and mc_summary is not None:
            base = mc_summary["mean"]
        entry = {"value": value, "baseline": base, "baseline_kind": kinds[key],
                 "baseline_monte_carlo": None if mc_summary is None else
                 {k: mc_summary[k] for k in ("mean", "std", "min", "max", "n")},
                 "difference": None if base is None else value - base,
                 "ratio": None if base is None or not base > 0 else value / base}
        out[key] = entry
    return jsonable(out)


def summarise_localisation(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Cohort summary of :func:`localisation` results: per metric the mean value and mean baseline over the
    defined cases, their difference and ratio (ratio of the means)."""
    defined = [r for r in results if r.get("defined")]
    out: dict[str, Any] = {"n_cases": len(results), "n_defined": len(defined)}
    for key in ("pointing_game", "energy_in_mask", "iou"):
        vals = np.array([r[key]["value"] for r in defined], dtype=np.float64)
        base = np.array([np.nan if r[key]["baseline"] is None else r[key]["baseline"] for r in defined],
                        dtype=np.float64)
        mean_v = float(np.nanmean(vals)) if np.isfinite(vals).any() else math.nan
        mean_b = float(np.nanmean(base)) if np.isfinite(base).any() else math.nan
        out[key] = {"mean": mean_v, "baseline_mean": mean_b, "difference": mean_v - mean_b,
                    "ratio": mean_v / mean_b if mean_b > 0 else None, "values": summary(vals)}
    return jsonable(out)


__all__ = ["IOU_MODES", "localisation", "expected_random_iou", "summarise_localisation", "DEFAULT_TOLERANCE"]
