"""Stability of the explanations under small input perturbations (seed paper §3.7.1).

Research use, not for diagnosis.

**Image maps** (:func:`gradcam_stability`, generic :func:`map_stability`). For one case, the reference map
M (Grad-CAM++ of the unperturbed case, normalised; the explained class is fixed to the reference's) is
compared with the maps of K perturbed copies of the image, by SSIM (:mod:`.ssim`, default Gaussian window
sigma 1.5 px, K1 0.01, K2 0.03, ``data_range`` 1 for maps in [0, 1]; volumes: mean of the per-slice SSIM
over the real slices, or a 3D window):

(a) **Gaussian noise**: x + N(0, sigma^2) on every real voxel, ``sigma = noise_fraction * (max - min)``
    of the case's real voxels (default ``noise_fraction`` = 0.05; a constant image uses range 1).
(b) **Rigid in-plane transform** about the image centre, the same for every slice: a shift of exactly
    ``shift_px`` pixels (default 3) in a uniformly random direction and a rotation of ``+-rotation_deg``
    (default 5, random sign), bilinear resampling, edge values replicated outside the field of view. The
    perturbed map is **mapped back** with the inverse transform before comparing, and the SSIM is
    averaged over the window centres whose whole SSIM window stayed inside the field of view both ways
    (``valid_fraction`` = the fraction of the map's pixels that are such centres).

K repeats each (default 8), seeded; all 2K perturbed copies go through the explainer stacked along the
batch axis (``batch_size`` copies per Grad-CAM++ call: one forward + one backward per chunk). Reported:
mean, std (ddof 0), min, max, median and the K values, plus every parameter.

Maps are compared at the model input resolution (upsampled Grad-CAM++), normalised ``"case"`` (divided
by the maximum over the whole case; default) or ``"model"`` (the model's fixed scale, ``cam_scale``).

**Clinical attributions** (:func:`shapley_stability`). Pearson correlation between the Shapley vector of
the case as entered and the Shapley vectors of K jittered copies, over the d known fields (unknown fields
are 0 in every vector and are left out of the correlation):

* numeric fields: scaled value + N(0, (jitter * (hi - lo))^2), clipped to the scaled range [lo, hi]
  (default [0, 1], the ClinicalPreprocessor's min-max range; default ``jitter`` = 0.05);
* categorical, ordinal and boolean fields are **unchanged** (a category cannot be nudged a little);
* unknown fields stay unknown.

The image is encoded once; all (K + 1) * 2^d coalition rows of the exact Shapley values go through the
clinical branch, fusion and head in memory-bounded chunks (permutation sampling beyond ``EXACT_MAX_FIELDS``
known fields, the same permutations for every copy). A correlation with a constant vector (e.g. every
value 0) is NaN and counted in ``n_nan`` (:func:`.ssim.pearson`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmxai_core.explain.metrics._common import (clinical_row, image_case, jsonable, model_device,
                                                one_case, summary)
from mmxai_core.explain.metrics.ssim import DEFAULT_SSIM, SSIMSettings, pearson, volume_ssim

DEFAULT_K = 8
DEFAULT_NOISE_FRACTION = 0.05
DEFAULT_SHIFT_PX = 3.0
DEFAULT_ROTATION_DEG = 5.0
DEFAULT_JITTER = 0.05
VALID_THRESHOLD = 1.0 - 1e-3

MapFn = Callable[[Tensor], Tensor]


# ------------------------------------------------------------------------------------------ rigid maps
@dataclasses.dataclass(frozen=True)
class RigidTransform:
    """An in-plane rigid transform about the image centre ((H-1)/2, (W-1)/2) in pixel units.

    shift:     (dy, dx) pixels; the image content moves by +dy rows and +dx columns.
    angle_deg: rotation; positive turns the +x (column) axis towards +y (row), i.e. clockwise on a screen
               with rows going down.
    A point p = (x, y) of the original moves to ``R (p - c) + c + t``.
    """

    shift: tuple[float, float]
    angle_deg: float

    def to_dict(self) -> dict[str, Any]:
        return {"shift_px": [float(self.shift[0]), float(self.shift[1])], "rotation_deg": float(self.angle_deg)}


def _thetas(transforms: Sequence[RigidTransform], h: int, w: int, back: bool, device) -> Tensor:
    """affine_grid matrices (N, 2, 3) in normalised coordinates (align_corners=False).

    With pixel coordinates p = D n + c (D = diag(W/2, H/2)), warping samples the input at T^-1(q):
    theta = [D^-1 R^T D | -D^-1 R^T t]; mapping back samples the perturbed frame at T(p):
    theta = [D^-1 R D | D^-1 t].
    """
    out = torch.empty(len(transforms), 2, 3, dtype=torch.float64)
    d = torch.tensor([w / 2.0, h / 2.0], dtype=torch.float64)
    for i, tr in enumerate(transforms):
        a = math.radians(tr.angle_deg)
        rot = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=torch.float64)
        t = torch.tensor([tr.shift[1], tr.shift[0]], dtype=torch.float64)          # (x, y)
        mat = rot if back else rot.T
        out[i, :, :2] = mat * d[None, :] / d[:, None]                               # D^-1 M D
        out[i, :, 2] = (t if back else -(rot.T @ t)) / d
    return out.to(device=device, dtype=torch.float32)


def _resample(x: Tensor, theta: Tensor, padding: str) -> Tensor:
    n, h, w = x.shape[0], x.shape[-2], x.shape[-1]
    flat = x.reshape(n, -1, h, w).float()
    grid = F.affine_grid(theta, list(flat.shape), align_corners=False)
    return F.grid_sample(flat, grid, mode="bilinear", padding_mode=padding, align_corners=False).reshape(x.shape)


def warp(x: Tensor, transforms: Sequence[RigidTransform], padding: str = "border") -> Tensor:
    """Apply transform i to item i of x (N, ..., H, W) (every leading slice/channel alike)."""
    if len(transforms) != x.shape[0]:
        raise ValueError(f"{len(transforms)} transforms for {x.shape[0]} items")
    return _resample(x, _thetas(transforms, x.shape[-2], x.shape[-1], False, x.device), padding)


def unwarp(x: Tensor, transforms: Sequence[RigidTransform], padding: str = "zeros") -> Tensor:
    """Map item i of x (N, ..., H, W), given in the transformed frame, back to the original frame."""
    if len(transforms) != x.shape[0]:
        raise ValueError(f"{len(transforms)} transforms for {x.shape[0]} items")
    return _resample(x, _thetas(transforms, x.shape[-2], x.shape[-1], True, x.device), padding)


def support_mask(transforms: Sequence[RigidTransform], h: int, w: int) -> Tensor:
    """(N, H, W) bool: pixels of the original frame that stay inside the field of view on the way there
    and back (a ones image warped and mapped back with zero padding is >= 1 - 1e-3)."""
    ones = torch.ones(len(transforms), 1, h, w)
    there = warp(ones, transforms, padding="zeros")
    back = unwarp(there, transforms, padding="zeros")
    return back[:, 0] >= VALID_THRESHOLD


def window_inside(valid: Tensor, window: int) -> Tensor:
    """(N, H, W) bool -> the pixels whose whole ``window`` x ``window`` neighbourhood is valid (erosion; the
    image border itself is left to the SSIM crop)."""
    r = (int(window) - 1) // 2
    if r <= 0:
        return valid.clone()
    invalid = (~valid).float()[:, None]
    grown = F.max_pool2d(invalid, kernel_size=2 * r + 1, stride=1, padding=r)[:, 0]
    return grown < 0.5


def sample_transforms(k: int, shift_px: float, rotation_deg: float, rng: np.random.Generator
                      ) -> list[RigidTransform]:
    """K transforms: a shift of length ``shift_px`` in a uniformly random direction, rotation
    ``+-rotation_deg`` with a random sign."""
    out = []
    for _ in range(k):
        phi = rng.uniform(0.0, 2.0 * math.pi)
        sign = 1.0 if rng.random() < 0.5 else -1.0
        out.append(RigidTransform((float(shift_px * math.sin(phi)), float(shift_px * math.cos(phi))),
                                  float(sign * rotation_deg)))
    return out


# ------------------------------------------------------------------------------------------ image maps
def _batched(fn: MapFn, images: Tensor, batch_size: int) -> Tensor:
    parts = [fn(images[i:i + batch_size]) for i in range(0, images.shape[0], batch_size)]
    return torch.cat([p.detach().float().cpu() for p in parts])


def map_stability(explain_fn: MapFn, images: Any, *, slice_mask: Any = None, k: int = DEFAULT_K,
                  noise_fraction: float = DEFAULT_NOISE_FRACTION, shift_px: float = DEFAULT_SHIFT_PX,
                  rotation_deg: float = DEFAULT_ROTATION_DEG, seed: int = 0, data_range: float = 1.0,
                  ssim_settings: SSIMSettings = DEFAULT_SSIM, volume_mode: str = "slices",
                  batch_size: int = 16, perturbations: Sequence[str] = ("noise", "rigid")) -> dict[str, Any]:
    """Stability of any map explainer (see the module docstring).

    Args:
        explain_fn: images (N, S, 1, H, W) -> maps (N, S, H, W), values in [0, data_range]. Called on the
            reference alone first, then on chunks of ``batch_size`` perturbed copies.
        images: one case (1, S, 1, H, W) or (1, 1, H, W); slice_mask (1, S) real slices.
        k: repeats per perturbation; seed: seeds the noise (torch CPU generator) and the transforms.
        perturbations: which of ``"noise"``, ``"rigid"`` to run.

    Returns:
        JSON-ready dict: ``parameters``, and per perturbation the SSIM :func:`~._common.summary`
        (``rigid`` also lists the ``transforms`` and the ``valid_fraction`` of each map).
    """
    t0 = time.perf_counter()
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    unknown = set(perturbations) - {"noise", "rigid"}
    if unknown:
        raise ValueError(f"unknown perturbation(s) {sorted(unknown)}; use 'noise' and/or 'rigid'")
    images, mask, _ = one_case(images, slice_mask, None, "cpu")
    real = mask[0]
    voxels = images[0, real]
    lo, hi = float(voxels.min()), float(voxels.max())
    intensity_range = hi - lo if hi > lo else 1.0
    sigma = float(noise_fraction) * intensity_range
    gen = torch.Generator().manual_seed(int(seed))
    rng = np.random.default_rng(int(seed))
    s, h, w = images.shape[1], images.shape[-2], images.shape[-1]

    reference = _batched(explain_fn, images, 1)[0]                              # (S, H, W)
    if tuple(reference.shape) != (s, h, w):
        raise ValueError(f"explain_fn returned maps of shape {tuple(reference.shape)}, expected "
                         f"(N, {s}, {h}, {w}) at the input resolution")
    copies, parts = [], {}
    if "noise" in perturbations:
        noise = torch.randn(k, *images.shape[1:], generator=gen) * sigma
        noise = noise * real.reshape(1, s, 1, 1, 1)
        copies.append(images + noise)
        parts["noise"] = (len(copies) - 1, None)
    transforms: list[RigidTransform] = []
    if "rigid" in perturbations:
        transforms = sample_transforms(k, shift_px, rotation_deg, rng)
        copies.append(warp(images.expand(k, -1, -1, -1, -1), transforms, padding="border"))
        parts["rigid"] = (len(copies) - 1, transforms)
    batch = torch.cat(copies)
    maps = _batched(explain_fn, batch, batch_size)                              # (N, S, H, W)

    params = {
        "k": int(k), "seed": int(seed), "noise_fraction": float(noise_fraction), "noise_sigma": sigma,
        "intensity_range": intensity_range, "intensity_range_definition": "max - min of the real voxels",
        "shift_px": float(shift_px), "rotation_deg": float(rotation_deg),
        "rigid_definition": "shift of exactly shift_px in a random direction + rotation of +-rotation_deg "
                            "(random sign) about the image centre, same for all slices; bilinear, edges "
                            "replicated; maps mapped back by the inverse transform, SSIM over the window centres "
                            "whose whole window stayed inside the field of view both ways",
        "ssim": ssim_settings.to_dict(), "data_range": float(data_range), "volume_mode": volume_mode,
        "compared_at": f"model input resolution {h}x{w}", "batch_size": int(batch_size),
        "std_ddof": 0,
    }
    out: dict[str, Any] = {"metric": "image_map_stability", "similarity": "SSIM", "parameters": params}
    ref = reference.expand(k, -1, -1, -1)
    for name, (index, trs) in parts.items():
        block = maps[index * k:(index + 1) * k]
        if trs is None:
            values = volume_ssim(ref, block, data_range=data_range, mode=volume_mode, slice_mask=real,
                                 settings=ssim_settings)
            out[name] = summary(np.atleast_1d(values))
        else:
            back = unwarp(block, trs, padding="zeros")
            valid = window_inside(support_mask(trs, h, w), ssim_settings.window)[:, None].expand(k, s, h, w)
            values = volume_ssim(ref, back, data_range=data_range, mode=volume_mode, slice_mask=real,
                                 settings=ssim_settings, mask=valid)
            entry = summary(np.atleast_1d(values))
            entry["transforms"] = [tr.to_dict() for tr in trs]
            entry["valid_fraction"] = [float(v) for v in valid[:, 0].float().mean(dim=(1, 2))]
            out[name] = entry
    out["seconds"] = time.perf_counter() - t0
    return jsonable(out)


def cam_map_fn(model: nn.Module, clin_values: Any, clin_missing: Any, *, slice_mask: Any = None,
               image_present: Any = None, target_class: int, normalise: str = "case",
               cam_scale: float | None = None, **cam_kwargs: Any) -> MapFn:
    """images (N, S, 1, H, W) -> normalised, upsampled Grad-CAM++ maps (N, S, H, W) of ``target_class``,
    the clinical row and slice mask of the case repeated N times."""
    from mmxai_core.explain.gradcam import gradcam_plus_plus

    device = model_device(model)
    values, missing = clinical_row(clin_values, clin_missing, device)
    mask = None if slice_mask is None else torch.as_tensor(slice_mask).to(torch.bool).reshape(1, -1)
    present = None if image_present is None else torch.as_tensor(image_present).to(torch.bool).reshape(1)

    def fn(images: Tensor) -> Tensor:
        n = images.shape[0]
        rep = lambda t: None if t is None else t.expand(n, *t.shape[1:])  # noqa: E731
        result = gradcam_plus_plus(model, images.to(device), rep(values), rep(missing), slice_mask=rep(mask),
                                   image_present=rep(present), target_class=int(target_class), **cam_kwargs)
        return result.normalised(normalise, cam_scale)

    return fn


def gradcam_stability(model: nn.Module, images: Any, clin_values: Any = None, clin_missing: Any = None, *,
                      slice_mask: Any = None, image_present: Any = None, target_class: int | None = None,
                      normalise: str = "case", cam_scale: float | None = None, k: int = DEFAULT_K,
                      noise_fraction: float = DEFAULT_NOISE_FRACTION, shift_px: float = DEFAULT_SHIFT_PX,
                      rotation_deg: float = DEFAULT_ROTATION_DEG, seed: int = 0,
                      ssim_settings: SSIMSettings = DEFAULT_SSIM, volume_mode: str = "slices",
                      batch_size: int = 16, perturbations: Sequence[str] = ("noise", "rigid"),
                      **cam_kwargs: Any) -> dict[str, Any]:
    """Grad-CAM++ stability of one case under noise and rigid transforms (module docstring).

    Args:
        model: a MultimodalClassifier with an image branch (not modified; eval mode during the call).
        images: (1, S, 1, H, W) or (1, 1, H, W); clin_values / clin_missing (F,) or (1, F).
        target_class: explained class (default as Grad-CAM++: class 1 of a binary model, else the
            predicted class of the unperturbed case); fixed for every perturbed copy.
        normalise / cam_scale: ``"case"`` (default) or ``"model"`` with the model's fixed scale.
        cam_kwargs: ``target_layer``, ``reshape_transform``, ``slice_chunk`` for Grad-CAM++.

    Returns:
        :func:`map_stability`'s dict with ``explainer`` and ``target_class`` added.
    """
    imgs, mask, present, values, missing, target_class = image_case(
        model, images, slice_mask, image_present, clin_values, clin_missing, target_class, "there is no map to check")
    fn = cam_map_fn(model, values, missing, slice_mask=mask, image_present=present, target_class=target_class,
                    normalise=normalise, cam_scale=cam_scale, **cam_kwargs)
    out = map_stability(fn, imgs.cpu(), slice_mask=mask.cpu(), k=k, noise_fraction=noise_fraction,
                        shift_px=shift_px, rotation_deg=rotation_deg, seed=seed, data_range=1.0,
                        ssim_settings=ssim_settings, volume_mode=volume_mode, batch_size=batch_size,
                        perturbations=perturbations)
    out["metric"] = "gradcam_stability"
    out["explainer"] = "Grad-CAM++"
    out["target_class"] = int(target_class)
    layer = cam_kwargs.get("target_layer", "image_encoder.cam_layer")
    if isinstance(layer, nn.Module):
        layer = next((n for n, mod in model.named_modules() if mod is layer), type(layer).__name__)
    out["parameters"].update(normalise=normalise, cam_scale=cam_scale, target_layer=str(layer))
    return jsonable(out)


# ------------------------------------------------------------------------------------------ Shapley
RowsFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def jitter_rows(values: np.ndarray, known: np.ndarray, numeric: np.ndarray, k: int, jitter: float,
                value_range: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """(K, F) jittered copies of ``values`` (F,): known numeric fields + N(0, (jitter (hi - lo))^2), clipped
    to [lo, hi]; every other field unchanged."""
    lo, hi = float(value_range[0]), float(value_range[1])
    rows = np.repeat(np.asarray(values, dtype=np.float64)[None], k, axis=0)
    cols = np.flatnonzero(np.asarray(known, bool) & np.asarray(numeric, bool))
    if cols.size:
        rows[:, cols] = np.clip(rows[:, cols] + rng.normal(0.0, jitter * (hi - lo), (k, cols.size)), lo, hi)
    return rows


def shapley_vectors(rows_fn: RowsFn, rows: np.ndarray, known: np.ndarray, *, n_permutations: int | None = None,
                    seed: int = 0) -> tuple[np.ndarray, str]:
    """Shapley values of the known fields for every clinical row: (R, d), and the method.

    ``rows_fn(values (M, F), missing (M, F) bool) -> (M,)`` evaluates the model; a field outside the
    coalition is missing (unknown). Exact (all rows' coalitions in ONE call) up to ``EXACT_MAX_FIELDS``
    known fields, else antithetic permutation sampling with the same permutations for every row.
    """
    from mmxai_core.explain.shapley import EXACT_MAX_FIELDS, coalition_matrix, shapley_coefficients
    from mmxai_core.explain.shapley_sampling import DEFAULT_PERMUTATIONS, permutation_shapley

    rows = np.asarray(rows, dtype=np.float64)
    known = np.asarray(known, dtype=bool)
    players = np.flatnonzero(known)
    d, n_rows, n_fields = players.size, rows.shape[0], rows.shape[1]

    def missing_for(coalitions: np.ndarray) -> np.ndarray:
        keep = np.zeros((coalitions.shape[0], n_fields), dtype=bool)
        keep[:, players] = coalitions
        return ~keep

    if d == 0:
        return np.zeros((n_rows, 0)), "none"
    if d <= EXACT_MAX_FIELDS:
        coal = coalition_matrix(d)                                        # (2^d, d)
        miss = missing_for(coal)
        values = np.repeat(rows, coal.shape[0], axis=0)
        v = np.asarray(rows_fn(values, np.tile(miss, (n_rows, 1))), dtype=np.float64)
        v = v.reshape(n_rows, coal.shape[0])
        return v @ shapley_coefficients(d).T, "exact"
    out = np.empty((n_rows, d))
    for r in range(n_rows):
        def game(coalitions: np.ndarray, row=rows[r]) -> np.ndarray:
            c = np.asarray(coalitions, dtype=bool)
            return rows_fn(np.repeat(row[None], c.shape[0], axis=0), missing_for(c))
        est = permutation_shapley(game, d, n_permutations=n_permutations or DEFAULT_PERMUTATIONS, seed=seed)
        out[r] = est.values
    return out, "permutation"


def shapley_stability_of_rows(rows_fn: RowsFn, values: Any, known: Any, numeric: Any, *, k: int = DEFAULT_K,
                              jitter: float = DEFAULT_JITTER, value_range: tuple[float, float] = (0.0, 1.0),
                              seed: int = 0, n_permutations: int | None = None,
                              field_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Pearson stability of the Shapley vector for any row-evaluating model (see the module docstring).

    Args:
        rows_fn: values (M, F), missing (M, F) bool -> output (M,) of the explained class.
        values: (F,) the case's (scaled) values; known: (F,) bool entered; numeric: (F,) bool numeric fields.
    """
    t0 = time.perf_counter()
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    known = np.asarray(known, dtype=bool).reshape(-1)
    numeric = np.asarray(numeric, dtype=bool).reshape(-1)
    if not values.shape == known.shape == numeric.shape:
        raise ValueError("values, known and numeric must all be (F,)")
    values = np.where(known, values, 0.0)
    rng = np.random.default_rng(int(seed))
    jittered = jitter_rows(values, known, numeric, k, jitter, value_range, rng)
    rows = np.concatenate([values[None], jittered])
    phi, method = shapley_vectors(rows_fn, rows, known, n_permutations=n_permutations, seed=seed)
    r, constant = pearson(np.broadcast_to(phi[0], phi[1:].shape), phi[1:]) if phi.shape[1] else \
        (np.full(k, np.nan), np.ones(k, dtype=bool))
    names = list(field_names) if field_names is not None else [f"field_{i}" for i in range(values.size)]
    jittered_names = [names[i] for i in np.flatnonzero(known & numeric)]
    out = {
        "metric": "shapley_stability",
        "similarity": "Pearson correlation over the known fields",
        "parameters": {
            "k": int(k), "seed": int(seed), "jitter": float(jitter), "value_range": [float(v) for v in value_range],
            "jitter_definition": "known numeric fields + N(0, (jitter * (hi - lo))^2), clipped to [lo, hi]; "
                                 "categorical/ordinal/boolean fields unchanged; unknown fields stay unknown",
            "jittered_fields": jittered_names, "n_known_fields": int(known.sum()), "shapley_method": method,
            "n_permutations": n_permutations if method == "permutation" else None, "std_ddof": 0,
        },
        "pearson": summary(np.atleast_1d(r)),
        "n_constant": int(np.sum(constant)),
        "reference_values": {names[i]: float(v) for i, v in zip(np.flatnonzero(known), phi[0])},
        "max_abs_change": float(np.max(np.abs(phi[1:] - phi[0]))) if phi.size else 0.0,
        "seconds": time.perf_counter() - t0,
    }
    if not jittered_names:
        out["note"] = "no known numeric field: the perturbation changes nothing"
    return jsonable(out)


def shapley_stability(model: nn.Module, images: Any = None, clin_values: Any = None, clin_missing: Any = None,
                      *, slice_mask: Any = None, image_present: bool | None = None, target: int | None = None,
                      output: str = "probability", k: int = DEFAULT_K, jitter: float = DEFAULT_JITTER,
                      value_range: tuple[float, float] = (0.0, 1.0), seed: int = 0,
                      n_permutations: int | None = None, max_rows_per_chunk: int | None = None) -> dict[str, Any]:
    """Stability of the clinical Shapley values of one case under small clinical perturbations.

    Inputs as :func:`mmxai_core.explain.shapley.clinical_shapley` (the image is encoded once). Returns
    :func:`shapley_stability_of_rows`'s dict with ``target`` and ``output`` added.
    """
    from mmxai_core.explain.value_function import CoalitionValue

    vf = CoalitionValue(model, images, clin_values, clin_missing, slice_mask=slice_mask,
                        image_present=image_present, target=target, output=output,
                        max_rows_per_chunk=max_rows_per_chunk)
    numeric = np.array([f.kind == "numeric" for f in model.config.clinical_fields], dtype=bool)
    values = vf.values[0].detach().cpu().numpy().astype(np.float64)
    known = ~vf.entered_missing

    def rows_fn(v: np.ndarray, m: np.ndarray) -> np.ndarray:
        return vf.evaluate_rows(v.astype(np.float32), m)

    out = shapley_stability_of_rows(rows_fn, values, known, numeric, k=k, jitter=jitter, value_range=value_range,
                                    seed=seed, n_permutations=n_permutations, field_names=vf.field_names)
    out["target"], out["output"] = int(vf.target), vf.output
    out["parameters"]["removal"] = "unknown (the field's learned unknown embedding)"
    return jsonable(out)


__all__ = ["RigidTransform", "warp", "unwarp", "support_mask", "window_inside", "sample_transforms", "map_stability",
           "cam_map_fn", "gradcam_stability", "jitter_rows", "shapley_vectors", "shapley_stability_of_rows",
           "shapley_stability", "DEFAULT_K", "DEFAULT_NOISE_FRACTION", "DEFAULT_SHIFT_PX",
           "DEFAULT_ROTATION_DEG", "DEFAULT_JITTER"]
