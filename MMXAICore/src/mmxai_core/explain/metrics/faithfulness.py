"""Faithfulness of the explanations: delete what they call important, watch the prediction fall.

Research use, not for diagnosis.

**Image deletion curve** (:func:`image_deletion`, generic :func:`deletion_curve`). For one case with an
attribution map A (S, H, W) at the model input resolution (default: the case's Grad-CAM++ map):

* rank the real voxels (all real slices together) by A, largest first; ties broken at random (seeded);
* for each k in the grid (default 0, 5, ..., 50 % of the real voxels) remove the top k %:
  ``removal="blur"`` (default) replaces them by the image blurred in-plane with a Gaussian of
  ``blur_sigma_px`` pixels (default 5; edges replicated), which takes the local structure away without
  painting a flat patch the model never saw; ``removal="baseline"`` fills them with ``baseline_value``
  (default: the mean intensity of the case's real voxels);
* p_k = the model's probability of the explained class; drop_k = p_0 - p_k (positive = the probability
  fell);
* **AOPC** = mean of drop_k over the grid, k = 0 included (Samek et al. 2017: "area over the
  perturbation curve"); ``aoc_trapezoid`` = trapezoid area under drop(k) divided by the grid's span.

**Random baseline**: the same deletion in R random orders (default R = 8), each the ranking of a smoothed
random map (white noise blurred in-plane with ``random_sigma_px``, default 8 px, so randomly deleted
regions are blobs like Grad-CAM++ regions rather than scattered pixels, which blurring hardly changes;
``random_sigma_px=0`` gives a pixel-wise random order). Reported: the mean curve with its std, the AOPC of
each order, and ``aopc_difference = AOPC(attributed) - mean AOPC(random)`` and ``aopc_ratio`` (the
quotient; None when the random AOPC is <= 1e-12). A faithful map has a clearly positive difference.

Every perturbed copy goes through the model stacked along the batch axis (``batch_size`` per forward, no
gradients).

**Clinical deletion** (:func:`clinical_deletion`, generic :func:`clinical_deletion_curve`): the known
fields are removed (set to "unknown", DESIGN.md) one after another, cumulatively, in the order of their
Shapley values: ``rank_by="value"`` (default) = most positive first, i.e. the strongest evidence *towards*
the explained class first (so the drop is expected to be positive); ``rank_by="abs"`` = largest |value|
first. Curve over j = 0..d removed fields, AOPC = mean drop over j = 0..d, against random orders: all d!
orders when d! <= ``n_random`` (then the mean is exact), else ``n_random`` (default 16) random
permutations.
"""

from __future__ import annotations

import itertools
import math
import time
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from mmxai_core.explain.metrics._common import (DEFAULT_FRACTIONS, as_maps, blur2d, clinical_row, image_case,
                                                eval_mode, model_device, one_case, rank_order,
                                                smooth_random_maps, summary, jsonable)

REMOVALS = ("blur", "baseline")
RANK_BY = ("value", "abs")
DEFAULT_BLUR_SIGMA_PX = 5.0
DEFAULT_RANDOM_SIGMA_PX = 8.0
DEFAULT_N_RANDOM_IMAGE = 8
DEFAULT_N_RANDOM_CLINICAL = 16

ScoreFn = Callable[[Tensor], Tensor]


def aopc(drops: Sequence[float] | np.ndarray) -> float:
    """Mean of the drops over the grid (k = 0 included)."""
    return float(np.mean(np.asarray(drops, dtype=np.float64)))


def _trapezoid(drops: np.ndarray, grid: np.ndarray) -> float:
    span = float(grid[-1] - grid[0])
    if span <= 0:
        return float(drops[0])
    return float(np.sum((drops[1:] + drops[:-1]) * np.diff(grid)) / 2.0 / span)


def _ratio(a: float, b: float) -> float | None:
    return float(a / b) if b > 1e-12 else None


# ------------------------------------------------------------------------------------------ image
def deletion_curve(score_fn: ScoreFn, images: Any, attribution: Any, *, slice_mask: Any = None,
                   fractions: Sequence[float] = DEFAULT_FRACTIONS, removal: str = "blur",
                   blur_sigma_px: float = DEFAULT_BLUR_SIGMA_PX, baseline_value: float | None = None,
                   n_random: int = DEFAULT_N_RANDOM_IMAGE, random_sigma_px: float = DEFAULT_RANDOM_SIGMA_PX,
                   seed: int = 0, batch_size: int = 16) -> dict[str, Any]:
    """Deletion curve of an attribution map against random orders (see the module docstring).

    Args:
        score_fn: images (N, S, 1, H, W) -> (N,) the model's output for the explained class (a probability).
        images: one case (1, S, 1, H, W) or (1, 1, H, W); slice_mask (1, S) real slices.
        attribution: (S, H, W) or (H, W), same spatial shape as the image (higher = more important).
        fractions: deletion grid in [0, 1], increasing (default 0, 0.05, ..., 0.5).

    Returns:
        JSON-ready dict with ``parameters``, ``p_original``, ``attributed`` and ``random`` curves, AOPCs,
        ``aopc_difference`` and ``aopc_ratio``.
    """
    t0 = time.perf_counter()
    if removal not in REMOVALS:
        raise ValueError(f"removal must be one of {REMOVALS}, got {removal!r}")
    grid = np.asarray(fractions, dtype=np.float64)
    if grid.ndim != 1 or grid.size < 2 or np.any(np.diff(grid) <= 0) or grid[0] < 0 or grid[-1] > 1:
        raise ValueError(f"fractions must be at least two increasing values in [0, 1], got {list(fractions)}")
    if n_random < 0:
        raise ValueError(f"n_random must be >= 0, got {n_random}")
    images, mask, _ = one_case(images, slice_mask, None, "cpu")
    s, h, w = images.shape[1], images.shape[-2], images.shape[-1]
    attr = as_maps(attribution, "attribution")
    if attr.shape != (s, h, w):
        raise ValueError(f"attribution must match the image: (S, H, W) = {(s, h, w)}, got {attr.shape} "
                         "(upsample a feature-resolution map first)")
    if not np.isfinite(attr).all():
        raise ValueError("attribution has non-finite values")
    real = mask[0].cpu().numpy()
    flat_index = np.flatnonzero(np.broadcast_to(real[:, None, None], (s, h, w)).reshape(-1))
    n_real = flat_index.size
    counts = np.round(grid * n_real).astype(np.int64)

    base = images[0, :, 0]                                             # (S, H, W)
    if removal == "blur":
        removed = blur2d(base, float(blur_sigma_px))
        fill = None
    else:
        fill = float(base[torch.as_tensor(real)].mean()) if baseline_value is None else float(baseline_value)
        removed = torch.full_like(base, fill)

    rng = np.random.default_rng(int(seed))
    gen = torch.Generator().manual_seed(int(seed))
    ranks = []                                                         # per curve: rank of each real voxel
    orders = [rank_order(attr.reshape(-1)[flat_index], rng)]
    if n_random:
        noise = smooth_random_maps(n_random, (s, h, w), float(random_sigma_px), gen).numpy()
        orders += [rank_order(noise[r].reshape(-1)[flat_index], rng) for r in range(n_random)]
    for order in orders:
        rank = np.empty(n_real, dtype=np.int64)
        rank[order] = np.arange(n_real)
        ranks.append(rank)

    jobs = [(c, j) for c in range(len(ranks)) for j in range(grid.size) if counts[j] > 0]
    scores = np.full((len(ranks), grid.size), np.nan)
    flat_base, flat_removed = base.reshape(-1), removed.reshape(-1)
    p0 = float(score_fn(images)[0])
    scores[:, counts == 0] = p0
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start:start + batch_size]
        batch = torch.empty(len(chunk), s * h * w)
        for i, (c, j) in enumerate(chunk):
            deleted = flat_index[ranks[c] < counts[j]]
            row = flat_base.clone()
            idx = torch.as_tensor(deleted)
            row[idx] = flat_removed[idx]
            batch[i] = row
        out = score_fn(batch.reshape(len(chunk), s, 1, h, w)).detach().cpu().double().numpy()
        for i, (c, j) in enumerate(chunk):
            scores[c, j] = out[i]
    drops = p0 - scores
    attributed = drops[0]
    out: dict[str, Any] = {
        "metric": "image_deletion",
        "parameters": {
            "fractions": [float(f) for f in grid], "n_real_voxels": int(n_real),
            "deleted_counts": [int(c) for c in counts], "removal": removal,
            "blur_sigma_px": float(blur_sigma_px) if removal == "blur" else None,
            "blur_definition": "in-plane Gaussian blur of the image, edges replicated" if removal == "blur" else None,
            "baseline_value": fill, "n_random": int(n_random),
            "random_order": ("ranking of white noise blurred in-plane with random_sigma_px" if random_sigma_px > 0
                             else "uniform random pixel order") if n_random else None,
            "random_sigma_px": float(random_sigma_px) if n_random else None, "seed": int(seed),
            "ties": "broken at random (seeded)", "ranking": "over all real voxels of the case",
            "aopc_definition": "mean of p_0 - p_k over the grid, k = 0 included (Samek et al. 2017)",
            "batch_size": int(batch_size), "std_ddof": 0,
        },
        "p_original": p0,
        "attributed": {"score": [float(v) for v in scores[0]], "drop": [float(v) for v in attributed],
                       "aopc": aopc(attributed), "aoc_trapezoid": _trapezoid(attributed, grid)},
    }
    if n_random:
        rand = drops[1:]
        rand_aopc = rand.mean(axis=1)
        out["random"] = {"score_mean": [float(v) for v in scores[1:].mean(0)],
                         "score_std": [float(v) for v in scores[1:].std(0)],
                         "drop_mean": [float(v) for v in rand.mean(0)], "drop_std": [float(v) for v in rand.std(0)],
                         "aopc": summary(rand_aopc),
                         "aoc_trapezoid": float(np.mean([_trapezoid(r, grid) for r in rand]))}
        mean_random = float(rand_aopc.mean())
        out["aopc_difference"] = out["attributed"]["aopc"] - mean_random
        out["aopc_ratio"] = _ratio(out["attributed"]["aopc"], mean_random)
    out["seconds"] = time.perf_counter() - t0
    return jsonable(out)


def probability_fn(model: nn.Module, clin_values: Any, clin_missing: Any, *, slice_mask: Any = None,
                   image_present: Any = None, target_class: int) -> ScoreFn:
    """images (N, S, 1, H, W) -> (N,) probability of ``target_class`` with the case's clinical row and
    slice mask repeated (eval mode, no gradients)."""
    device = model_device(model)
    values, missing = clinical_row(clin_values, clin_missing, device)
    mask = None if slice_mask is None else torch.as_tensor(slice_mask).to(torch.bool).reshape(1, -1).to(device)
    present = None if image_present is None else torch.as_tensor(image_present).to(torch.bool).reshape(1).to(device)

    def fn(images: Tensor) -> Tensor:
        n = images.shape[0]
        rep = lambda t: None if t is None else t.expand(n, *t.shape[1:])  # noqa: E731
        with eval_mode(model), torch.no_grad():
            out = model(images.to(device), rep(mask), rep(present), rep(values), rep(missing))
        return out.probs[:, int(target_class)].float().cpu()

    return fn


def image_deletion(model: nn.Module, images: Any, clin_values: Any = None, clin_missing: Any = None,
                   attribution: Any = None, *, slice_mask: Any = None, image_present: Any = None,
                   target_class: int | None = None, fractions: Sequence[float] = DEFAULT_FRACTIONS,
                   removal: str = "blur", blur_sigma_px: float = DEFAULT_BLUR_SIGMA_PX,
                   baseline_value: float | None = None, n_random: int = DEFAULT_N_RANDOM_IMAGE,
                   random_sigma_px: float = DEFAULT_RANDOM_SIGMA_PX, seed: int = 0, batch_size: int = 16,
                   **cam_kwargs: Any) -> dict[str, Any]:
    """Image deletion curve of one case for the model (module docstring).

    Args:
        attribution: (S, H, W) map at the model input resolution; default: the case's Grad-CAM++ map
            (upsampled raw map; ``cam_kwargs`` go to Grad-CAM++).
        target_class: explained class (default: 1 for a binary model, else the predicted class).

    Returns:
        :func:`deletion_curve`'s dict with ``target_class`` and ``attribution`` (its source) added.
    """
    imgs, mask, present, values, missing, target_class = image_case(
        model, images, slice_mask, image_present, clin_values, clin_missing, target_class, "nothing to delete")
    source = "given"
    if attribution is None:
        from mmxai_core.explain.gradcam import gradcam_plus_plus

        cam = gradcam_plus_plus(model, imgs, values, missing, slice_mask=mask, image_present=present,
                                target_class=int(target_class), **cam_kwargs)
        attribution = cam.upsampled()[0]
        source = f"Grad-CAM++ ({cam.layer}), upsampled raw map"
    fn = probability_fn(model, values, missing, slice_mask=mask, image_present=present, target_class=target_class)
    out = deletion_curve(fn, imgs.cpu(), attribution, slice_mask=mask.cpu(), fractions=fractions, removal=removal,
                         blur_sigma_px=blur_sigma_px, baseline_value=baseline_value, n_random=n_random,
                         random_sigma_px=random_sigma_px, seed=seed, batch_size=batch_size)
    out["target_class"] = int(target_class)
    out["score"] = "probability of the explained class"
    out["attribution"] = source
    return jsonable(out)


# ------------------------------------------------------------------------------------------ clinical
def _field_order(values: np.ndarray, players: np.ndarray, rank_by: str) -> np.ndarray:
    key = values[players] if rank_by == "value" else np.abs(values[players])
    return players[np.argsort(-key, kind="stable")]


def clinical_deletion_curve(value_fn: Callable[[np.ndarray], np.ndarray], attributions: Any, known: Any, *,
                            rank_by: str = "value", n_random: int = DEFAULT_N_RANDOM_CLINICAL, seed: int = 0,
                            field_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Clinical deletion curve for any value function (module docstring).

    Args:
        value_fn: keep (R, F) bool (True = the entered value is kept, False = unknown) -> (R,) output.
        attributions: (F,) Shapley values (0 for unknown fields); known: (F,) bool, the entered fields.
    """
    t0 = time.perf_counter()
    if rank_by not in RANK_BY:
        raise ValueError(f"rank_by must be one of {RANK_BY}, got {rank_by!r}")
    values = np.asarray(attributions, dtype=np.float64).reshape(-1)
    known = np.asarray(known, dtype=bool).reshape(-1)
    if values.shape != known.shape:
        raise ValueError(f"attributions {values.shape} and known {known.shape} differ")
    n_fields = values.size
    names = list(field_names) if field_names is not None else [f"field_{i}" for i in range(n_fields)]
    players = np.flatnonzero(known)
    d = players.size
    rng = np.random.default_rng(int(seed))
    attributed = _field_order(values, players, rank_by)
    if d and math.factorial(d) <= n_random:
        random_orders = [np.asarray(p) for p in itertools.permutations(players)]
        random_kind = f"all {math.factorial(d)} orders (exact mean)"
    else:
        random_orders = [rng.permutation(players) for _ in range(n_random)]
        random_kind = f"{n_random} random permutations"
    orders = [attributed] + random_orders
    keep = np.zeros((len(orders), d + 1, n_fields), dtype=bool)
    for c, order in enumerate(orders):
        for j in range(d + 1):
            keep[c, j, order[j:]] = True
    out_values = np.asarray(value_fn(keep.reshape(-1, n_fields)), dtype=np.float64).reshape(len(orders), d + 1)
    drops = out_values[:, :1] - out_values
    result: dict[str, Any] = {
        "metric": "clinical_deletion",
        "parameters": {"rank_by": rank_by,
                       "rank_definition": ("most positive Shapley value first (evidence towards the explained "
                                           "class)" if rank_by == "value" else "largest |Shapley value| first"),
                       "removal": "unknown", "n_known_fields": int(d), "random_orders": random_kind,
                       "n_random": len(random_orders), "seed": int(seed),
                       "aopc_definition": "mean of v_0 - v_j over j = 0..d removed fields", "std_ddof": 0},
        "removed_order": [names[i] for i in attributed],
        "v_original": float(out_values[0, 0]),
        "attributed": {"score": [float(v) for v in out_values[0]], "drop": [float(v) for v in drops[0]],
                       "aopc": aopc(drops[0])},
    }
    if random_orders:
        rand_aopc = drops[1:].mean(axis=1)
        result["random"] = {"score_mean": [float(v) for v in out_values[1:].mean(0)],
                            "score_std": [float(v) for v in out_values[1:].std(0)],
                            "drop_mean": [float(v) for v in drops[1:].mean(0)],
                            "drop_std": [float(v) for v in drops[1:].std(0)], "aopc": summary(rand_aopc)}
        mean_random = float(rand_aopc.mean())
        result["aopc_difference"] = result["attributed"]["aopc"] - mean_random
        result["aopc_ratio"] = _ratio(result["attributed"]["aopc"], mean_random)
    result["seconds"] = time.perf_counter() - t0
    return jsonable(result)


def clinical_deletion(model: nn.Module, images: Any = None, clin_values: Any = None, clin_missing: Any = None,
                      shapley: Any = None, *, slice_mask: Any = None, image_present: bool | None = None,
                      target: int | None = None, output: str = "probability", rank_by: str = "value",
                      n_random: int = DEFAULT_N_RANDOM_CLINICAL, seed: int = 0) -> dict[str, Any]:
    """Clinical deletion curve of one case for the model (module docstring).

    Args:
        shapley: a :class:`~mmxai_core.explain.shapley.ShapleyResult` of this case (its target and output
            are used), an (F,) array of values, or ``None`` (computed here, exact).
        other inputs as :func:`mmxai_core.explain.shapley.clinical_shapley`.
    """
    from mmxai_core.explain.value_function import CoalitionValue

    if shapley is not None and hasattr(shapley, "values") and hasattr(shapley, "known"):
        target, output = int(shapley.target), shapley.output
    vf = CoalitionValue(model, images, clin_values, clin_missing, slice_mask=slice_mask,
                        image_present=image_present, target=target, output=output)
    if shapley is None:
        from mmxai_core.explain.shapley import shapley_of_game

        shapley = shapley_of_game(vf)
    values = np.asarray(getattr(shapley, "values", shapley), dtype=np.float64).reshape(-1)
    known = ~vf.entered_missing
    if values.size != known.size:
        raise ValueError(f"{values.size} Shapley values for {known.size} model fields")
    out = clinical_deletion_curve(vf.evaluate_known, values, known, rank_by=rank_by, n_random=n_random, seed=seed,
                                  field_names=vf.field_names)
    out["target"], out["output"] = int(vf.target), vf.output
    out["score"] = "probability of the explained class" if vf.output == "probability" else "log-odds"
    return jsonable(out)


__all__ = ["REMOVALS", "RANK_BY", "aopc", "deletion_curve", "probability_fn", "image_deletion",
           "clinical_deletion_curve", "clinical_deletion", "DEFAULT_BLUR_SIGMA_PX", "DEFAULT_RANDOM_SIGMA_PX",
           "DEFAULT_N_RANDOM_IMAGE", "DEFAULT_N_RANDOM_CLINICAL"]
