"""Voxel-wise SimpleITK filters on the native grid: foreground mask, N4 bias field, anti-alias smoothing.

Arrays are (Z, Y, X) numpy arrays with spacing (sx, sy, sz) mm. A single-slice array is filtered as a 2-D
image (filters that need several voxels along an axis would fail on a 1-voxel z axis).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mmxai_core.errors import PreprocessingError


def _to_sitk(array: np.ndarray, spacing: tuple[float, float, float]):
    import SimpleITK as sitk

    if array.shape[0] == 1:
        img = sitk.GetImageFromArray(np.ascontiguousarray(array[0]))
        img.SetSpacing(tuple(float(s) for s in spacing[:2]))
    else:
        img = sitk.GetImageFromArray(np.ascontiguousarray(array))
        img.SetSpacing(tuple(float(s) for s in spacing))
    return img


def _from_sitk(img, like: np.ndarray) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(img).reshape(like.shape)


def foreground_mask(array: np.ndarray, spacing: tuple[float, float, float], threshold: float | None,
                    largest_component: bool) -> tuple[np.ndarray, dict[str, Any]]:
    """Body / breast mask: voxels above ``threshold`` (Otsu's when None), optionally the largest
    connected component only.

    Returns:
        (mask bool (Z, Y, X), info ``{"threshold", "method", "largest_component", "voxels"}``).
    """
    import SimpleITK as sitk

    img = _to_sitk(array.astype(np.float32, copy=False), spacing)
    if threshold is None:
        otsu = sitk.OtsuThresholdImageFilter()
        otsu.SetInsideValue(0)
        otsu.SetOutsideValue(1)
        otsu.Execute(img)
        threshold_value, method = float(otsu.GetThreshold()), "otsu"
    else:
        threshold_value, method = float(threshold), "fixed"
    mask_img = sitk.Cast(img > threshold_value, sitk.sitkUInt8)
    if largest_component:
        labels = sitk.RelabelComponent(sitk.ConnectedComponent(mask_img), sortByObjectSize=True)
        mask_img = labels == 1
    mask = _from_sitk(mask_img, array).astype(bool)
    return mask, {"threshold": threshold_value, "method": method, "largest_component": largest_component,
                  "voxels": int(mask.sum())}


def n4_correct(array: np.ndarray, spacing: tuple[float, float, float], mask: np.ndarray,
               shrink_factor: int, iterations: tuple[int, ...],
               convergence_threshold: float) -> tuple[np.ndarray, dict[str, Any]]:
    """N4 bias-field correction fitted on a shrunk copy, the field applied at full resolution.

    Args:
        array: (Z, Y, X) intensities (MR, positive inside ``mask``).
        spacing: (sx, sy, sz) mm.
        mask: (Z, Y, X) bool, voxels used to fit the field.
        shrink_factor: per-axis shrink (reduced along an axis with fewer than 32 voxels per factor).

    Returns:
        (corrected float32 array = array / bias, info with shrink factors and the bias range).
    """
    import SimpleITK as sitk

    fit_mask = mask & (array > 0)
    if fit_mask.sum() < 64:
        raise PreprocessingError("n4: fewer than 64 positive foreground voxels to fit a bias field")
    img = _to_sitk(array.astype(np.float32, copy=False), spacing)
    mask_img = _to_sitk(fit_mask.astype(np.uint8), spacing)
    shrink = [int(max(1, min(shrink_factor, n // 32))) for n in img.GetSize()]
    small = sitk.Shrink(img, shrink)
    small_mask = sitk.Shrink(mask_img, shrink)
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations([int(i) for i in iterations])
    n4.SetConvergenceThreshold(float(convergence_threshold))
    n4.Execute(small, small_mask)
    log_bias = _from_sitk(n4.GetLogBiasFieldAsImage(img), array)
    bias = np.exp(log_bias).astype(np.float32)
    corrected = (array / bias).astype(np.float32)
    inside = bias[fit_mask]
    return corrected, {"shrink_factors": shrink, "iterations": list(iterations),
                       "convergence_threshold": float(convergence_threshold),
                       "bias_min": float(inside.min()), "bias_max": float(inside.max())}


def smooth_axes(array: np.ndarray, spacing: tuple[float, float, float],
                sigmas_mm: tuple[float, float, float]) -> np.ndarray:
    """Gaussian smoothing (SimpleITK recursive Gaussian) along each index axis (x, y, z) with
    ``sigmas_mm[axis] > 0``; axes with sigma 0 or fewer than 4 voxels are left alone."""
    import SimpleITK as sitk

    img = _to_sitk(array.astype(np.float32, copy=False), spacing)
    size = img.GetSize()
    changed = False
    for axis in range(img.GetDimension()):
        if sigmas_mm[axis] <= 0 or size[axis] < 4:
            continue
        f = sitk.RecursiveGaussianImageFilter()
        f.SetDirection(axis)
        f.SetSigma(float(sigmas_mm[axis]))
        f.SetOrder(sitk.RecursiveGaussianImageFilter.ZeroOrder)
        img = f.Execute(img)
        changed = True
    return _from_sitk(img, array) if changed else array
