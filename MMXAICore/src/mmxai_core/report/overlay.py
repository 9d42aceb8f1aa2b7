"""Overlay PNG of a heatmap on the input image. Research use only - not for diagnosis.

One panel for a 2D image (the slice itself); for a volume a mosaic of the slices around the slice that
holds the heatmap's maximum (up to ``n_slices``, in slice order). The grey image is windowed at its 0.5 /
99.5 percentiles over the shown slices; the heatmap is drawn on its fixed 0..1 scale (values below the
threshold are transparent) with the colormap of the label bins, a colour bar, a title with the class and
probability, and the research-use notice as visible text and PNG metadata. Pixels are shown with their
physical aspect ratio (row spacing / column spacing). Built on :class:`matplotlib.figure.Figure` with the
Agg canvas (no pyplot); written atomically.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from mmxai_core import RESEARCH_USE_NOTICE
from mmxai_core.utils.atomic import atomic_path

MAX_DISPLAY_PIXELS = 1024
"""Longest displayed side; larger slices are shown subsampled (display only)."""


def max_slice(heat: np.ndarray) -> int:
    """Index of the slice holding the heatmap's maximum (the middle slice when the map is all zero)."""
    h = np.nan_to_num(np.asarray(heat, dtype=np.float64), nan=0.0)
    if not np.any(h > 0):
        return h.shape[0] // 2
    return int(np.unravel_index(np.argmax(h), h.shape)[0])


def slices_around(center: int, count: int, n_slices: int) -> list[int]:
    """Up to ``n_slices`` consecutive slice indices of a ``count``-slice volume around ``center``."""
    n = max(1, min(int(n_slices), count))
    start = min(max(center - (n - 1) // 2, 0), count - n)
    return list(range(start, start + n))


def overlay_figure(image: np.ndarray, heat: np.ndarray, *, title: str, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                   threshold: float = 0.2, colormap: str = "turbo", n_slices: int = 9,
                   heat_label: str = "Grad-CAM++ (model scale)", alpha: float = 0.55):
    """The overlay figure.

    Args:
        image: (Z, Y, X) input voxels (any units).
        heat: (Z, Y, X) heatmap on the same grid, in [0, 1].
        title: e.g. ``"malignant - probability 0.873"``.
        spacing: (sx, sy, sz) mm, for the pixel aspect ratio.
        threshold: heat below it is not drawn.
        colormap: matplotlib colormap of the heat (use the bins' colormap).
        n_slices: slices in a volume's mosaic.
        heat_label: colour bar label.
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    image = np.asarray(image, dtype=np.float32)
    heat = np.asarray(heat, dtype=np.float32)
    if image.ndim == 2:
        image, heat = image[None], heat[None]
    if image.shape != heat.shape or image.ndim != 3:
        raise ValueError(f"image {image.shape} and heat {heat.shape} must be the same (Z, Y, X) grid")
    z = image.shape[0]
    k_max = max_slice(heat)
    ks = slices_around(k_max, z, n_slices) if z > 1 else [0]
    step = max(1, int(math.ceil(max(image.shape[1:]) / MAX_DISPLAY_PIXELS)))
    shown = image[ks][:, ::step, ::step]
    lo, hi = np.percentile(shown, [0.5, 99.5]) if shown.size else (0.0, 1.0)
    grey = np.clip((shown - lo) / (hi - lo + 1e-12), 0.0, 1.0)
    hot = heat[ks][:, ::step, ::step]
    cmap = colormaps[colormap]
    norm = Normalize(0.0, 1.0)
    aspect = float(spacing[1]) / float(spacing[0])

    ncols = int(math.ceil(math.sqrt(len(ks))))
    nrows = int(math.ceil(len(ks) / ncols))
    fig = Figure(figsize=(3.2 * ncols + 1.6, 3.2 * nrows + 1.2), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for n, k in enumerate(ks):
        ax = axes.ravel()[n]
        ax.imshow(grey[n], cmap="gray", vmin=0, vmax=1, interpolation="nearest", aspect=aspect)
        masked = np.ma.masked_where(~(hot[n] >= threshold), hot[n])
        ax.imshow(masked, cmap=cmap, norm=norm, alpha=alpha, interpolation="nearest", aspect=aspect)
        label = f"slice {k} of {z}" + (" (max)" if k == k_max else "") if z > 1 else "image"
        ax.set_title(label, fontsize=8)
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=axes, fraction=0.05, pad=0.02, shrink=0.9)
    bar.set_label(heat_label, fontsize=8)
    bar.ax.axhline(threshold, color="k", linewidth=1.0)
    peak = float(np.nanmax(heat)) if heat.size else 0.0
    fig.suptitle(f"{title}\nheat max {peak:.2f}, shown from {threshold:g}", fontsize=10)
    fig.supxlabel(RESEARCH_USE_NOTICE, fontsize=9, color="darkred")
    return fig


def write_overlay(path: str | os.PathLike, image: np.ndarray, heat: np.ndarray, **kwargs) -> Path:
    """Draw :func:`overlay_figure` (same keyword arguments) and save it as PNG at ``path`` (atomic), with
    the research-use notice in the PNG metadata (``Description``)."""
    fig = overlay_figure(image, heat, **kwargs)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Description": RESEARCH_USE_NOTICE, "Software": "mmxai-core"})
    return Path(path)


__all__ = ["overlay_figure", "write_overlay", "max_slice", "slices_around", "MAX_DISPLAY_PIXELS"]
