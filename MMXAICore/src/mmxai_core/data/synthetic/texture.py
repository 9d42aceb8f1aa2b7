"""Background tissue: smooth random fields and fibroglandular texture whose amount follows breast
density. Works on 2-D (Y, X) and 3-D (Z, Y, X) grids; ``sigma_mm`` is converted per axis with the
spacing, so anisotropic volumes get isotropic texture in millimetres."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

DENSE_FRACTION = (0.12, 0.30, 0.52, 0.72)
"""Approximate fraction of the breast that is fibroglandular tissue, for density A, B, C, D."""


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma_mm: float,
                 spacing_zyx: tuple[float, ...]) -> np.ndarray:
    """Gaussian-filtered white noise, scaled to zero mean and unit SD.

    Wide kernels are applied on a coarser grid (about 2 samples per sigma) and interpolated back, which
    keeps large 3-D fields cheap."""
    sig = np.array([max(sigma_mm / s, 0.3) for s in spacing_zyx])
    step = np.maximum(np.floor(sig / 2.0), 1.0)
    coarse_shape = tuple(int(np.ceil(n / f)) + 2 for n, f in zip(shape, step))
    field = gaussian_filter(rng.standard_normal(coarse_shape).astype(np.float32), sig / step,
                            mode="reflect", truncate=3.0)
    if np.any(step > 1):
        coords = [np.arange(n, dtype=np.float32) / f for n, f in zip(shape, step)]
        field = _linear_resample(field, coords)
    field = field[tuple(slice(0, n) for n in shape)]
    field = field - field.mean()
    sd = float(field.std())
    return field / sd if sd > 0 else field


def _linear_resample(field: np.ndarray, coords: list[np.ndarray]) -> np.ndarray:
    """Separable linear interpolation of ``field`` at fractional indices ``coords`` (one array per axis)."""
    for axis, c in enumerate(coords):
        lo = np.floor(c).astype(int)
        lo = np.clip(lo, 0, field.shape[axis] - 2)
        t = (c - lo).reshape([-1 if a == axis else 1 for a in range(field.ndim)])
        a = np.take(field, lo, axis=axis)
        b = np.take(field, lo + 1, axis=axis)
        field = a + (b - a) * t
    return field


def glandular_tissue(rng: np.random.Generator, shape: tuple[int, ...], spacing_zyx: tuple[float, ...],
                     density_code: int, weight: np.ndarray) -> np.ndarray:
    """Soft fibroglandular mask in 0..1: coarse and fine smooth noise, biased by ``weight`` (where glands
    gather, e.g. behind the nipple), thresholded so that about ``DENSE_FRACTION[density]`` is dense."""
    field = (0.7 * smooth_noise(rng, shape, 6.0, spacing_zyx) + 0.35 * smooth_noise(rng, shape, 2.0, spacing_zyx)
             + 0.15 * smooth_noise(rng, shape, 0.8, spacing_zyx))
    field = field + 1.2 * (weight - 0.5)
    inside = weight > 0
    if not inside.any():
        return np.zeros(shape, np.float32)
    q = 1.0 - DENSE_FRACTION[int(np.clip(density_code, 0, 3))]
    threshold = float(np.quantile(field[inside], q))
    return (1.0 / (1.0 + np.exp(-(field - threshold) / 0.3))).astype(np.float32)
