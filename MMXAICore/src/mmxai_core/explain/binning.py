"""Continuous heatmap in [0, 1] -> integer label bins for a labelmap overlay, plus their colours.

Rule (recorded in ``heatmap_bins.json``): label 0 = below ``threshold`` (or not finite), drawn transparent;
labels 1..n = ``n_bins`` equal-width bins of [threshold, 1]: label k holds values in
[edges[k-1], edges[k]) and the last bin also holds 1 (values above 1 are clipped into it). Labels are
monotone in the value. Each bin's colour is the colormap (default ``turbo``) at the bin's centre value,
so the overlay PNG (continuous, same colormap, 0..1) and the labelmap agree; opacity rises with the bin.
Research use, not for diagnosis.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from mmxai_core.utils.atomic import write_json_atomic

BINS_FORMAT = "mmxai.heatmap_bins.v1"


@dataclasses.dataclass(frozen=True)
class HeatmapBins:
    """Binning parameters.

    Attributes:
        threshold: values below it get label 0 (transparent); in [0, 1).
        n_bins: number of equal-width bins over [threshold, 1]; labels 1..n_bins (at most 254).
        colormap: matplotlib colormap name for the bin colours (and the overlay PNG).
        alpha_min, alpha_max: opacity of bin 1 and bin n_bins (linear in between), in [0, 1].
    """

    threshold: float = 0.2
    n_bins: int = 10
    colormap: str = "turbo"
    alpha_min: float = 0.35
    alpha_max: float = 0.85

    def __post_init__(self) -> None:
        if not (isinstance(self.threshold, (int, float)) and 0.0 <= float(self.threshold) < 1.0):
            raise ValueError(f"bins threshold must be in [0, 1), got {self.threshold!r}")
        if isinstance(self.n_bins, bool) or not isinstance(self.n_bins, int) or not 1 <= self.n_bins <= 254:
            raise ValueError(f"n_bins must be an integer in 1..254, got {self.n_bins!r}")
        for name in ("alpha_min", "alpha_max"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        object.__setattr__(self, "threshold", float(self.threshold))

    @property
    def edges(self) -> np.ndarray:
        """(n_bins + 1,) float64 bin edges from ``threshold`` to 1."""
        return np.linspace(self.threshold, 1.0, self.n_bins + 1)

    def label(self, values: np.ndarray) -> np.ndarray:
        """uint8 labels of ``values`` (any shape): see the module docstring."""
        v = np.asarray(values, dtype=np.float64)
        inner = self.edges[1:-1]
        labels = 1 + np.searchsorted(inner, v, side="right")
        labels = np.where(np.isfinite(v) & (v >= self.threshold), labels, 0)
        return labels.astype(np.uint8)

    def colours(self) -> np.ndarray:
        """(n_bins + 1, 4) uint8 RGBA per label; label 0 is (0, 0, 0, 0)."""
        from matplotlib import colormaps

        cmap = colormaps[self.colormap]
        e = self.edges
        centres = (e[:-1] + e[1:]) / 2.0
        rgba = np.zeros((self.n_bins + 1, 4))
        rgba[1:, :3] = np.asarray([cmap(float(c))[:3] for c in centres])
        rgba[1:, 3] = np.linspace(self.alpha_min, self.alpha_max, self.n_bins) if self.n_bins > 1 \
            else self.alpha_max
        return np.round(rgba * 255).astype(np.uint8)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (docs/WORKER.md): ``threshold``, ``edges``, ``colors`` (RGBA 0-255, one per
        label index, label 0 transparent), the parameters, and one named entry per label (for a Slicer colour
        table)."""
        e, rgba = self.edges, self.colours()
        entries = [{"label": 0, "name": f"below {self.threshold:g}", "range": [0.0, self.threshold],
                    "rgba": rgba[0].tolist()}]
        for k in range(1, self.n_bins + 1):
            entries.append({"label": k, "name": f"{e[k - 1]:.2f}-{e[k]:.2f}", "range": [float(e[k - 1]),
                            float(e[k])], "rgba": rgba[k].tolist()})
        return {"format": BINS_FORMAT, "threshold": self.threshold, "n_bins": self.n_bins,
                "colormap": self.colormap, "alpha_min": self.alpha_min, "alpha_max": self.alpha_max,
                "edges": [float(x) for x in e],
                "colors": rgba.tolist(),
                "rule": "0 = value < threshold (transparent); k = edges[k-1] <= value < edges[k], "
                        "the last bin includes 1; values are the heatmap on the model's fixed scale",
                "bins": entries}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "HeatmapBins":
        keys = ("threshold", "n_bins", "colormap", "alpha_min", "alpha_max")
        return cls(**{k: data[k] for k in keys if k in data})


def bin_heatmap(values: np.ndarray, bins: HeatmapBins | None = None) -> np.ndarray:
    """uint8 labels of a heatmap (any shape) with ``bins`` (default :class:`HeatmapBins`)."""
    return (bins or HeatmapBins()).label(values)


def write_bins_json(path: str | os.PathLike, bins: HeatmapBins, extra: Mapping[str, Any] | None = None) -> Path:
    """Write :meth:`HeatmapBins.to_dict` (plus ``extra`` keys, e.g. the normalisation) atomically."""
    data = bins.to_dict()
    if extra:
        data.update(dict(extra))
    return write_json_atomic(path, data)


__all__ = ["HeatmapBins", "bin_heatmap", "write_bins_json", "BINS_FORMAT"]
