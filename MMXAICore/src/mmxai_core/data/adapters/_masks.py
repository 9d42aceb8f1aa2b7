"""ROI masks: pick the binary mask among candidate files, fit it to the image grid, union, write NRRD.

A mask whose size differs from its image is resampled by nearest neighbour only when the two aspect
ratios (columns / rows) agree within ``ASPECT_TOLERANCE`` (1 %): a uniform rescale of the same field
of view. Otherwise it is refused with a :class:`DatasetError` naming the mask and image files: a mask
is never stretched or silently misaligned. The union is written as ``uint8`` (0/1) NRRD with the
image's grid (size, spacing, origin, direction) with :func:`mmxai_core.io.write_image`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from mmxai_core.data.adapters._dicom import read_pixels
from mmxai_core.errors import DatasetError
from mmxai_core.io.image import Image

ASPECT_TOLERANCE = 0.01


def is_binary(arr: np.ndarray) -> bool:
    """True when the array holds at most two values, one of them 0 (an all-zero mask counts)."""
    values = np.unique(arr)
    if values.size == 0 or values.size > 2:
        return False
    return bool(values[0] == 0)


def pick_mask(candidates: Sequence[Path], described_as: str) -> tuple[Path, np.ndarray]:
    """The first candidate file whose pixels are binary, with its boolean (rows, cols) array.

    ``described_as`` names the CSV row for the error when none is binary (e.g. the ROI folder holds
    only the cropped lesion)."""
    for path in candidates:
        arr = read_pixels(path)
        if is_binary(arr):
            return path, arr > 0
    names = ", ".join(str(p) for p in candidates[:3])
    raise DatasetError(f"{described_as}: no binary ROI mask among {len(candidates)} DICOM file(s) "
                       f"({names}): only grey-level images (cropped lesions?) found")


def fit_to_grid(mask: np.ndarray, rows: int, cols: int, *, mask_path: str | os.PathLike,
                image_path: str | os.PathLike) -> tuple[np.ndarray, bool]:
    """``mask`` on a (rows, cols) grid: (array, resampled?). Nearest-neighbour resampling when the
    aspect ratio matches within 1 %; otherwise a :class:`DatasetError` naming both files."""
    h, w = mask.shape
    if (h, w) == (rows, cols):
        return mask, False
    ratio = (w / h) / (cols / rows)
    if abs(ratio - 1.0) > ASPECT_TOLERANCE:
        raise DatasetError(f"{mask_path}: ROI mask is {h}x{w} (rows x columns) but its image {image_path} is "
                           f"{rows}x{cols}; the aspect ratios differ by {abs(ratio - 1) * 100:.1f}% (more than "
                           f"{ASPECT_TOLERANCE * 100:.0f}%), so the mask cannot be aligned; refusing it")
    # Nearest neighbour on pixel centres: output pixel r samples mask row floor((r + 0.5) * h / rows).
    r_idx = np.minimum(((np.arange(rows) + 0.5) * h / rows).astype(np.int64), h - 1)
    c_idx = np.minimum(((np.arange(cols) + 0.5) * w / cols).astype(np.int64), w - 1)
    return mask[np.ix_(r_idx, c_idx)], True


def write_mask(mask: np.ndarray, grid: Image, dest: str | os.PathLike) -> Path:
    """Write a (rows, cols) or (Z, Y, X) mask as uint8 NRRD on ``grid``'s geometry
    (:func:`mmxai_core.io.write_image`, atomic)."""
    from mmxai_core.io import write_image

    arr = np.asarray(mask, dtype=np.uint8).reshape(grid.shape)
    return write_image(grid.with_array(arr, meta={}), dest)
