"""Carry arrays between the original grid and model space with the geometry in a :class:`PreprocessRecord`.

Both directions are one ``sitk.Resample`` in patient space (identity transform): the model grid and the
original grid describe the same physical positions, so no step has to be undone one by one.
"""

from __future__ import annotations

import numpy as np

from mmxai_core.data.preprocess import geometry as geo
from mmxai_core.data.preprocess.pipeline import sitk_interpolator
from mmxai_core.data.preprocess.record import Grid, PreprocessRecord
from mmxai_core.errors import PreprocessingError

_INTERPOLATIONS = ("linear", "nearest")


def to_original_grid(model_array, record: PreprocessRecord, interpolation: str = "linear",
                     default_value: float = 0.0):
    """Resample a model-space map back onto the original image's grid.

    Args:
        model_array: (Z, H, W) array on ``record.model`` (a heatmap, a mask); (H, W) is accepted when
            Z = 1. Numpy array or CPU tensor.
        record: the record :meth:`ImagePreprocessor.apply` returned for the image.
        interpolation: ``"linear"`` (float32 output) or ``"nearest"`` (dtype kept; use for masks/labels).
        default_value: value of original voxels that lie outside the model grid (cropped away).

    Returns:
        :class:`~mmxai_core.io.Image` with array (Z, Y, X) and exactly the original size, spacing,
        origin and direction.
    """
    from mmxai_core.io.image import Image

    arr = _as_array(model_array, record.model, "model_array")
    out = _resample(arr, record.model, record.original, interpolation, default_value)
    g = record.original
    meta = {"Modality": record.modality} if record.modality else {}
    return Image(out, g.spacing, g.origin, g.direction_matrix, meta)


def to_model_space(data, record: PreprocessRecord, interpolation: str = "nearest",
                   default_value: float = 0.0) -> np.ndarray:
    """Send an array on the original grid (a lesion mask) to model space with the record's geometry.

    Args:
        data: an :class:`~mmxai_core.io.Image` whose geometry equals ``record.original`` (within 1e-4 mm),
            or a (Z, Y, X) array on that grid.
        interpolation: ``"nearest"`` (masks, dtype kept) or ``"linear"`` (float32).

    Returns:
        (Z, H, W) array on ``record.model``, aligned voxel for voxel with the preprocessed image.
    """
    g = record.original
    if hasattr(data, "array") and hasattr(data, "spacing"):
        same = (tuple(data.size_xyz) == g.size and np.allclose(data.spacing, g.spacing, atol=1e-4)
                and np.allclose(data.origin, g.origin, atol=1e-4)
                and np.allclose(np.asarray(data.direction).reshape(-1), g.direction, atol=1e-4))
        if not same:
            raise PreprocessingError("to_model_space: the image's geometry differs from the record's "
                                     "original grid; resample it onto the original image first")
        data = data.array
    arr = _as_array(data, g, "data")
    return _resample(arr, g, record.model, interpolation, default_value)


def _as_array(data, grid: Grid, name: str) -> np.ndarray:
    if hasattr(data, "detach"):
        data = data.detach().cpu().numpy()
    arr = np.asarray(data)
    if arr.ndim == 2 and grid.size[2] == 1:
        arr = arr[np.newaxis]
    if tuple(arr.shape) != grid.shape_zyx:
        raise PreprocessingError(f"{name}: shape {tuple(arr.shape)} does not match the grid "
                                 f"{grid.shape_zyx} (Z, Y, X)")
    return arr


def _resample(arr: np.ndarray, src: Grid, dst: Grid, interpolation: str, default_value: float) -> np.ndarray:
    import SimpleITK as sitk

    if interpolation not in _INTERPOLATIONS:
        raise PreprocessingError(f"interpolation: must be one of {list(_INTERPOLATIONS)}, got {interpolation!r}")
    interp = sitk_interpolator(interpolation)
    was_bool = arr.dtype == bool
    if interpolation == "linear":
        arr, pixel = arr.astype(np.float32, copy=False), sitk.sitkFloat32
    else:
        arr, pixel = (arr.astype(np.uint8) if was_bool else arr), sitk.sitkUnknown
    out = sitk.GetArrayFromImage(geo.resample(geo.sitk_from_array(arr, src), dst, interp, default_value, pixel))
    return out.astype(bool) if was_bool and interpolation == "nearest" else out
