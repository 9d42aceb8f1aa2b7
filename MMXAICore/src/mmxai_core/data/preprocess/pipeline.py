"""The forward preprocessing: native image -> model-space array (Z, H, W) + :class:`PreprocessRecord`.

Order: reorientation (grid only) -> N4 (MR) -> intensity -> target spacing (grid) + anti-alias -> crop/pad
(grid) -> laterality flip (grid) -> ONE resampling of the native voxels onto the model grid, which by then
holds the reorientation, the target spacing, the crop/pad window and the flip. Voxel-wise steps run on the native grid; all grid steps are arithmetic on
:class:`Grid` (see :mod:`.geometry`), so there is a single interpolation and an exact inverse.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mmxai_core.data.preprocess import geometry as geo
from mmxai_core.data.preprocess.config import ImagePreprocessConfig
from mmxai_core.data.preprocess.filters import foreground_mask, n4_correct, smooth_axes
from mmxai_core.data.preprocess.intensity import normalise, resolve_mode
from mmxai_core.data.preprocess.record import Grid, PreprocessRecord
from mmxai_core.errors import PreprocessingError

LATERALITY_KEYS = ("ImageLaterality", "Laterality", "laterality")


def sitk_interpolator(name: str, parameter: str = "interpolation") -> int:
    """SimpleITK interpolator constant of ``"linear"``, ``"nearest"`` or ``"bspline"``."""
    import SimpleITK as sitk

    table = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor, "bspline": sitk.sitkBSpline}
    if name not in table:
        raise PreprocessingError(f"{parameter}: must be one of {sorted(table)}, got {name!r}")
    return table[name]


class ImagePreprocessor:
    """Invertible preprocessing of one image for the model.

    Example::

        arr, record = ImagePreprocessor(ImagePreprocessConfig(output_size_hw=(224, 224))).apply(image)
        heat = to_original_grid(model_heatmap, record)    # an Image on image's grid
    """

    def __init__(self, config: ImagePreprocessConfig | None = None):
        self.config = config if config is not None else ImagePreprocessConfig()
        if not isinstance(self.config, ImagePreprocessConfig):
            raise PreprocessingError(f"ImagePreprocessor: config must be an ImagePreprocessConfig, "
                                     f"got {type(self.config).__name__}")
        self.config.validate()

    def apply(self, image) -> tuple[np.ndarray, PreprocessRecord]:
        """Preprocess ``image`` (an :class:`~mmxai_core.io.Image`).

        Returns:
            (array float32 of shape (Z, H, W) on ``record.model``, the :class:`PreprocessRecord`).
            Z is the native number of slices (after reorientation) unless ``target_spacing_z`` is set;
            a 2-D image gives Z = 1.
        """
        cfg = self.config
        arr = _checked_array(image)
        modality = str(image.meta.get("Modality", "") or "").strip().upper()
        original = Grid.of(image)
        two_d = arr.shape[0] == 1
        steps: list[str] = []
        arr_raw = arr  # the foreground is found on the input intensities
        fg_state: dict[str, Any] = {}

        def foreground() -> np.ndarray:
            if "mask" not in fg_state:
                fg_state["mask"], fg_state["info"] = foreground_mask(
                    arr_raw, image.spacing, cfg.foreground_threshold, cfg.foreground_largest_component)
            return fg_state["mask"]

        # 1. reorientation: grid only (the voxels are resampled once at the end)
        grid, reo_info = original, None
        if cfg.orientation is not None:
            grid, reo_info = geo.reorient_grid(original, cfg.orientation, in_plane_only=two_d)
            steps.append("reorient")
        perm = reo_info["permutation"] if reo_info else [0, 1, 2]
        flips = reo_info["flips"] if reo_info else [False, False, False]

        # 2. N4 bias field (MR)
        bias_info = None
        if cfg.n4 == "on" or (cfg.n4 == "auto" and modality == "MR"):
            arr, bias_info = n4_correct(arr, image.spacing, foreground(), cfg.n4_shrink_factor,
                                        cfg.n4_iterations, cfg.n4_convergence_threshold)
            steps.append("n4")

        # 3. intensity
        mode = resolve_mode(cfg.intensity, modality)
        arr, int_info = normalise(arr, mode, cfg.clip_percentiles, cfg.window_center, cfg.window_width,
                                  foreground)
        if mode != "none":
            steps.append("intensity")
        pad_value = float(cfg.pad_value) if cfg.pad_value is not None else float(arr.min())

        # 4. target spacing (reoriented axes)
        tx, ty = cfg.target_spacing_xy if cfg.target_spacing_xy is not None else grid.spacing[:2]
        tz = cfg.target_spacing_z if (cfg.target_spacing_z is not None and not two_d) else grid.spacing[2]
        resampled = geo.resampled_grid(grid, (tx, ty, tz))
        sigmas = [0.0, 0.0, 0.0]  # anti-alias along downsampled native axes (c = native axis of model axis a)
        if cfg.antialias and cfg.interpolation != "nearest":
            for a, c in enumerate(perm):
                s, factor = image.spacing[c], resampled.spacing[a] / image.spacing[c]
                if factor > 1.0 + 1e-6:
                    sigmas[c] = s * (factor - 1.0) / 2.0
            if any(v > 0 for v in sigmas):
                arr = smooth_axes(arr, image.spacing, tuple(sigmas))
                steps.append("antialias")
        steps.append("resample")

        # 5. crop / pad in-plane
        model, crop_info = resampled, {"mode": None, "resampled_size": list(resampled.size[:2])}
        if cfg.output_size_hw is not None:
            model, crop_info = _crop_pad(resampled, original, cfg, foreground if cfg.crop == "foreground"
                                         else None)
            steps.append("crop_pad")

        # 6. laterality: flip the model column axis
        lat_info = None
        if cfg.laterality == "tissue" or cfg.laterality == "meta_or_tissue" or (
                cfg.laterality == "auto" and modality == "MG"):
            lat_info = _laterality(image.meta, cfg, foreground, perm, flips)
            if lat_info["flipped"]:
                model = geo.flip_axis_grid(model, 0)
                steps.append("laterality_flip")

        # 7. the one resampling of the native voxels onto the model grid
        import SimpleITK as sitk

        out_img = geo.resample(geo.sitk_from_array(arr.astype(np.float32, copy=False), original), model,
                               sitk_interpolator(cfg.interpolation, "ImagePreprocessConfig.interpolation"),
                               pad_value, sitk.sitkFloat32)
        out = sitk.GetArrayFromImage(out_img).astype(np.float32, copy=False)

        if "info" in fg_state:
            int_info = dict(int_info, foreground=fg_state["info"])
        record = PreprocessRecord(
            original=original, model=model, steps=steps, config=cfg.to_dict(), modality=modality,
            reorientation=reo_info, bias_field=bias_info, intensity=int_info,
            resampling={"native_spacing": list(grid.spacing), "model_spacing": list(model.spacing),
                        "interpolation": cfg.interpolation, "antialias_sigma_mm_xyz_native": sigmas},
            crop_pad=crop_info, laterality=lat_info, pad_value=pad_value)
        record = PreprocessRecord.from_dict(record.to_dict())  # exactly what a JSON round trip gives
        return out, record


def _checked_array(image) -> np.ndarray:
    for attr in ("array", "spacing", "origin", "direction", "meta"):
        if not hasattr(image, attr):
            raise PreprocessingError(f"ImagePreprocessor.apply: expected an mmxai_core.io.Image, "
                                     f"got {type(image).__name__}")
    arr = np.asarray(image.array)
    if arr.ndim != 3 or min(arr.shape) < 1:
        raise PreprocessingError(f"ImagePreprocessor.apply: image array must be (Z, Y, X), got {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise PreprocessingError(f"ImagePreprocessor.apply: image array must be numeric, got {arr.dtype}")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise PreprocessingError("ImagePreprocessor.apply: image array contains NaN or infinite values")
    return arr


def _crop_pad(resampled: Grid, original: Grid, cfg: ImagePreprocessConfig,
              foreground) -> tuple[Grid, dict[str, Any]]:
    """Window of (H, W) on the resampled grid, centred on the image or on the foreground bounding box."""
    h, w = cfg.output_size_hw
    nx, ny = resampled.size[0], resampled.size[1]
    centre, bbox = (None, None), None
    if foreground is not None:
        mask = foreground()
        if mask.any():
            lo_hi = []
            for np_axis in (2, 1, 0):  # i, j, k
                other = tuple(a for a in range(3) if a != np_axis)
                nz = np.flatnonzero(mask.any(axis=other))
                lo_hi.append((int(nz[0]), int(nz[-1])))
            corners = np.array([[i, j, k] for i in lo_hi[0] for j in lo_hi[1] for k in lo_hi[2]], float)
            idx = geo.physical_to_index(resampled, geo.index_to_physical(original, corners))
            lo, hi = idx.min(axis=0), idx.max(axis=0)
            centre = ((lo[0] + hi[0]) / 2.0, (lo[1] + hi[1]) / 2.0)
            bbox = {"index_lo": lo[:2].round(3).tolist(), "index_hi": hi[:2].round(3).tolist()}
    i0 = geo.crop_start(nx, w, centre[0])
    j0 = geo.crop_start(ny, h, centre[1])
    model = geo.window_grid(resampled, (i0, j0, 0), (w, h, resampled.size[2]))
    info = {"mode": cfg.crop, "resampled_size": [nx, ny], "start": [i0, j0], "size": [w, h],
            "pad_before": [max(0, -i0), max(0, -j0)],
            "pad_after": [max(0, i0 + w - nx), max(0, j0 + h - ny)],
            "crop_before": [max(0, i0), max(0, j0)],
            "crop_after": [max(0, nx - i0 - w), max(0, ny - j0 - h)],
            "foreground_bbox_resampled": bbox}
    return model, info


def _laterality(meta: dict[str, Any], cfg: ImagePreprocessConfig, foreground, perm: list[int],
                flips: list[bool]) -> dict[str, Any]:
    """Decide whether the model column axis must be flipped so the breast looks like
    ``cfg.laterality_target`` (standard display: a left breast has its tissue on the left half)."""
    side, source, counts = None, None, None
    if cfg.laterality != "tissue":
        for key in LATERALITY_KEYS:
            value = str(meta.get(key, "") or "").strip().upper()
            if value[:1] in ("L", "R"):
                side, source = value[:1], f"meta:{key}"
                break
    if side is None:
        mask = foreground()
        np_axis = 2 - perm[0]  # native numpy axis that becomes the model column axis
        profile = mask.sum(axis=tuple(a for a in range(3) if a != np_axis)).astype(np.int64)
        if flips[0]:
            profile = profile[::-1]
        half = profile.size // 2
        left, right = int(profile[:half].sum()), int(profile[profile.size - half:].sum())
        side, source, counts = ("R" if right > left else "L"), "tissue", {"left": left, "right": right}
    return {"source": source, "laterality": side, "target": cfg.laterality_target,
            "flipped": side != cfg.laterality_target, "tissue_counts": counts}
