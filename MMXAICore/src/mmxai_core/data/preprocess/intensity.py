"""Intensity normalisation of a native-grid array; each mode returns the statistics it used."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from mmxai_core.errors import PreprocessingError

MODALITY_INTENSITY = {"CT": "window", "MR": "zscore"}


def resolve_mode(mode: str, modality: str) -> str:
    """``"auto"`` -> by modality (CT window, MR zscore, anything else percentile); else ``mode``."""
    if mode != "auto":
        return mode
    return MODALITY_INTENSITY.get(modality.upper(), "percentile")


def normalise(array: np.ndarray, mode: str, percentiles: tuple[float, float], window_center: float,
              window_width: float, foreground: Callable[[], np.ndarray]) -> tuple[np.ndarray, dict[str, Any]]:
    """Normalise intensities.

    Args:
        array: (Z, Y, X) values in input units (HU for CT).
        mode: ``window`` | ``zscore`` | ``robust`` | ``percentile`` | ``none`` (already resolved, not
            ``auto``).
        percentiles: (low, high) in [0, 100] for ``zscore`` (of the foreground) and ``percentile``
            (of all voxels).
        window_center, window_width: CT window (input units).
        foreground: callable giving the (Z, Y, X) bool foreground mask (computed only when needed).

    Returns:
        (float32 array of the same shape, info dict with ``mode`` and the statistics used):
        window -> [0, 1] (``lo``, ``hi``); zscore -> mean 0, std 1 over the foreground of the clipped
        values (``clip_lo``, ``clip_hi``, ``mean``, ``std``); robust -> median 0, interquartile range 1
        over the foreground, not clipped (``median``, ``iqr``); percentile -> [0, 1] (``lo``, ``hi``).

    Why ``robust``: with ``zscore`` and ``percentile`` a bright lesion moves the statistics (the standard
    deviation, the upper clip percentile), so the lesion's size and brightness change the normalised
    intensity of every other voxel. A model can then read the lesion from the tissue and the background,
    and gradient maps point there (measured on the synthetic cohort: README, "Heatmap localisation").
    """
    a = array.astype(np.float32, copy=False)
    if mode == "none":
        return a.astype(np.float32, copy=True), {"mode": "none"}
    if mode == "window":
        lo = float(window_center) - float(window_width) / 2.0
        hi = float(window_center) + float(window_width) / 2.0
        out = np.clip((a - lo) / (hi - lo), 0.0, 1.0)
        return out.astype(np.float32), {"mode": "window", "center": float(window_center),
                                        "width": float(window_width), "lo": lo, "hi": hi}
    if mode == "zscore":
        values = _foreground_values(a, foreground, mode)
        clip_lo, clip_hi = (float(v) for v in np.percentile(values, percentiles))
        clipped = np.clip(values, clip_lo, clip_hi)
        mean, std = float(clipped.mean()), float(clipped.std())
        if not std > 0:
            std = 1.0
        out = (np.clip(a, clip_lo, clip_hi) - np.float32(mean)) / np.float32(std)
        return out.astype(np.float32), {"mode": "zscore", "percentiles": list(percentiles),
                                        "clip_lo": clip_lo, "clip_hi": clip_hi, "mean": mean, "std": std,
                                        "foreground_voxels": int(values.size)}
    if mode == "robust":
        values = _foreground_values(a, foreground, mode)
        q25, median, q75 = (float(v) for v in np.percentile(values, (25.0, 50.0, 75.0)))
        iqr = q75 - q25
        if not iqr > 0:
            iqr = float(values.std()) or 1.0
        out = (a - np.float32(median)) / np.float32(iqr)
        return out.astype(np.float32), {"mode": "robust", "median": median, "iqr": iqr,
                                        "foreground_voxels": int(values.size)}
    if mode == "percentile":
        lo, hi = (float(v) for v in np.percentile(a, percentiles))
        scale = hi - lo if hi > lo else 1.0
        out = np.clip((a - np.float32(lo)) / np.float32(scale), 0.0, 1.0)
        return out.astype(np.float32), {"mode": "percentile", "percentiles": list(percentiles),
                                        "lo": lo, "hi": hi}
    raise PreprocessingError(f"ImagePreprocessConfig.intensity: unknown mode {mode!r}")


def _foreground_values(a: np.ndarray, foreground: Callable[[], np.ndarray], mode: str) -> np.ndarray:
    """The values of ``a`` inside the foreground mask; a clear error when the mask is (almost) empty."""
    values = a[foreground()]
    if values.size < 2:
        raise PreprocessingError(f"intensity {mode}: the foreground mask is (almost) empty; "
                                 "set foreground_threshold or use intensity 'percentile'")
    return values
