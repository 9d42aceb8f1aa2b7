"""Grid arithmetic of the preprocessing: every step maps a :class:`Grid` to a new grid in the SAME patient
space, so physical positions never move and the inverse is a single resampling.

* reorientation: a permutation / flip of index axes (what SimpleITK's ``DICOMOrient`` does);
* resampling: new spacing over the same field of view (voxel corners aligned);
* crop/pad: a window of the resampled grid, i.e. a shifted origin and a new size;
* laterality flip: the column axis reversed, its direction column negated, the origin moved to the old
  last column.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mmxai_core.data.preprocess.record import Grid
from mmxai_core.errors import PreprocessingError

_OPPOSITE = {"L": "R", "R": "L", "P": "A", "A": "P", "S": "I", "I": "S"}
_PAIR = {"L": 0, "R": 0, "P": 1, "A": 1, "S": 2, "I": 2}


def orientation_code(direction: np.ndarray) -> str:
    """SimpleITK's 3-letter code of a (3, 3) direction matrix (letter c = where index axis c points)."""
    import SimpleITK as sitk

    return sitk.DICOMOrientImageFilter_GetOrientationFromDirectionCosines(
        tuple(float(v) for v in np.asarray(direction).reshape(-1)))


def reorient_grid(grid: Grid, target: str, in_plane_only: bool = False) -> tuple[Grid, dict[str, Any]]:
    """The grid that ``sitk.DICOMOrient(image, target)`` would give (same voxels, permuted / flipped axes).

    Args:
        grid: the input grid.
        target: 3-letter code, e.g. ``"LPS"``.
        in_plane_only: keep index axis k in place (for a single-slice image) and only permute / flip i, j,
            ordering them as their anatomical axes appear in ``target``.

    Returns:
        (reoriented grid, info) with info ``{"from_code", "to_code", "permutation", "flips"}``:
        new axis a is old axis ``permutation[a]``, reversed when ``flips[a]``.
    """
    d = grid.direction_matrix
    code = orientation_code(d)
    if sorted(_PAIR[c] for c in code) != [0, 1, 2]:
        raise PreprocessingError(f"reorientation: direction {d.round(4).tolist()} has no unique "
                                 f"orientation code (got {code!r})")
    axes = [0, 1] if in_plane_only else [0, 1, 2]
    wanted = [letter for letter in target if _PAIR[letter] in {_PAIR[code[c]] for c in axes}]
    perm = list(range(3))
    flips = [False, False, False]
    for a, letter in zip(axes, wanted):
        c = next(c for c in axes if _PAIR[code[c]] == _PAIR[letter])
        perm[a] = c
        flips[a] = code[c] != letter
    size = [grid.size[c] for c in perm]
    spacing = [grid.spacing[c] for c in perm]
    new_d = np.stack([d[:, c] * (-1.0 if f else 1.0) for c, f in zip(perm, flips)], axis=1)
    origin = np.asarray(grid.origin, dtype=np.float64).copy()
    for c, f in zip(perm, flips):
        if f:
            origin += d[:, c] * grid.spacing[c] * (grid.size[c] - 1)
    new = Grid(size, spacing, origin, new_d.reshape(-1))
    info = {"from_code": code, "to_code": orientation_code(new_d), "permutation": perm,
            "flips": flips, "in_plane_only": in_plane_only}
    return new, info


def resampled_grid(grid: Grid, spacing: tuple[float, float, float]) -> Grid:
    """Same field of view (outer voxel corners kept) at a new spacing; sizes rounded, at least 1.

    An axis whose spacing does not change keeps its voxel centres exactly.
    """
    size, origin = [], np.asarray(grid.origin, dtype=np.float64).copy()
    d = grid.direction_matrix
    for a in range(3):
        s, t, n = grid.spacing[a], float(spacing[a]), grid.size[a]
        if t == s:
            size.append(n)
            continue
        size.append(max(1, int(round(n * s / t))))
        origin += d[:, a] * (t - s) / 2.0
    return Grid(size, spacing, origin, grid.direction)


def window_grid(grid: Grid, start: tuple[int, int, int], size: tuple[int, int, int]) -> Grid:
    """The sub-/super-grid starting at integer index ``start`` (negative = padding) with ``size``."""
    shift = grid.direction_matrix @ (np.asarray(grid.spacing) * np.asarray(start, dtype=np.float64))
    return Grid(size, grid.spacing, np.asarray(grid.origin) + shift, grid.direction)


def flip_axis_grid(grid: Grid, axis: int) -> Grid:
    """The grid with index axis ``axis`` reversed: same voxel positions, array reversed along that axis."""
    d = grid.direction_matrix.copy()
    origin = np.asarray(grid.origin) + d[:, axis] * grid.spacing[axis] * (grid.size[axis] - 1)
    d[:, axis] = -d[:, axis]
    return Grid(grid.size, grid.spacing, origin, d.reshape(-1))


def physical_to_index(grid: Grid, points: np.ndarray) -> np.ndarray:
    """Continuous indices (N, 3) (i, j, k) on ``grid`` of LPS points (N, 3) in mm."""
    m = np.linalg.inv(grid.index_to_lps())
    pts = np.c_[np.asarray(points, dtype=np.float64), np.ones(len(points))]
    return (pts @ m.T)[:, :3]


def index_to_physical(grid: Grid, index: np.ndarray) -> np.ndarray:
    """LPS points (N, 3) in mm of continuous indices (N, 3) (i, j, k) on ``grid``."""
    m = grid.index_to_lps()
    idx = np.c_[np.asarray(index, dtype=np.float64), np.ones(len(index))]
    return (idx @ m.T)[:, :3]


def crop_start(n: int, window: int, centre: float | None) -> int:
    """Start index of a ``window``-long crop/pad of an axis of ``n`` voxels.

    ``centre`` (continuous index) centres the window on it, kept inside the axis when the window fits;
    ``None`` centres it on the axis. Negative starts mean padding.
    """
    if centre is None or window >= n:
        return (n - window) // 2
    start = int(np.floor(centre - (window - 1) / 2.0 + 0.5))
    return int(min(max(start, 0), n - window))


def resample(image, grid: Grid, interpolator: int, default_value: float, pixel_type: int):
    """``sitk.Resample`` of a SimpleITK image onto ``grid`` with the identity transform (physical space)."""
    import SimpleITK as sitk

    return sitk.Resample(image, grid.size, sitk.Transform(), interpolator, grid.origin, grid.spacing,
                         grid.direction, float(default_value), pixel_type)


def sitk_from_array(array: np.ndarray, grid: Grid):
    """A SimpleITK image of ``array`` (Z, Y, X) placed on ``grid``."""
    import SimpleITK as sitk

    if tuple(array.shape) != grid.shape_zyx:
        raise PreprocessingError(f"array shape {tuple(array.shape)} does not match the grid "
                                 f"{grid.shape_zyx} (Z, Y, X)")
    img = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=False)
    img.SetSpacing(grid.spacing)
    img.SetOrigin(grid.origin)
    img.SetDirection(grid.direction)
    return img
