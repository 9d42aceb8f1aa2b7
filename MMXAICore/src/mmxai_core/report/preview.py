"""Preview figure of the preprocessing: original slice, model-space slice, mask sent back.

Each row is one case; columns: the original image at the lesion's central slice with its mask outline
(green), the preprocessed model-space slice with the mask carried to model space (yellow), and the
original again with the mask after the round trip model space -> patient grid (magenta) over the
original mask (green). Every figure carries the research-use notice.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from mmxai_core import RESEARCH_USE_NOTICE
from mmxai_core.utils.atomic import atomic_path

Panel = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]
"""(original (Z,Y,X), original mask (Z,Y,X) bool, model array (Z,H,W), model mask (Z,H,W) bool,
round-trip mask (Z,Y,X) bool, title)."""


def _lesion_slice(mask: np.ndarray) -> int:
    """Index of the slice with the most mask voxels (the middle slice when the mask is empty)."""
    per_slice = mask.reshape(mask.shape[0], -1).sum(axis=1)
    return int(per_slice.argmax()) if per_slice.any() else mask.shape[0] // 2


def _normalised(a: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(a, [0.5, 99.5])
    return np.clip((a - lo) / (hi - lo + 1e-12), 0, 1)


def write_preprocessing_preview(panels: Sequence[Panel], path: str | os.PathLike) -> Path:
    """Draw ``panels`` (one row each) into a PNG at ``path`` (written atomically)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = max(len(panels), 1)
    fig = Figure(figsize=(9, 3 * rows + 0.6), dpi=90)
    FigureCanvasAgg(fig)
    for r, (orig, mask, model, model_mask, back, title) in enumerate(panels):
        k = _lesion_slice(mask)
        km = _lesion_slice(model_mask)
        views = [
            (orig[k], [(mask[k], "lime")], f"original, slice {k}"),
            (model[km], [(model_mask[km], "yellow")], f"model space, slice {km}"),
            (orig[k], [(mask[k], "lime"), (back[k], "magenta")], "mask after round trip"),
        ]
        for c, (img, outlines, label) in enumerate(views):
            ax = fig.add_subplot(rows, 3, r * 3 + c + 1)
            ax.imshow(_normalised(img), cmap="gray", interpolation="nearest")
            for m, colour in outlines:
                if m.any():
                    ax.contour(m.astype(float), levels=[0.5], colors=colour, linewidths=1.0)
            ax.set_title(label if c else f"{title}\n{label}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"MMXAI preprocessing preview - {RESEARCH_USE_NOTICE}", fontsize=10, color="darkred")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Description": RESEARCH_USE_NOTICE})
    return Path(path)
