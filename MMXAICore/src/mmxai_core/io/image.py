"""The one image type of the package: voxels plus the geometry that places them in the patient.

Conventions (those of SimpleITK / ITK / DICOM):

* ``array`` is indexed ``[k, j, i]`` = (slice, row, column) = z-y-x, shape ``(Z, Y, X)``. A 2D image is
  ``(1, Y, X)`` with full 3D geometry.
* ``spacing`` is ``(sx, sy, sz)`` in mm, in index order i, j, k (x first, unlike ``array.shape``).
* ``origin`` is the physical position (mm, LPS) of the centre of voxel ``[0, 0, 0]``.
* ``direction`` is a 3x3 matrix whose column ``c`` is the unit LPS direction of index axis ``c``
  (SimpleITK's ``GetDirection()`` reshaped row-major).

So the physical (LPS) point of voxel index ``(i, j, k)`` is
``origin + direction @ diag(spacing) @ (i, j, k)``, and RAS = diag(-1, -1, 1) @ LPS.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class GridMethods:
    """Geometry methods shared by :class:`Image` and :class:`~mmxai_core.io.geometry.ImageGeometry`.

    Needs ``shape`` (Z, Y, X), ``spacing``, ``origin`` and ``direction`` on the instance.
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray

    @property
    def size_xyz(self) -> tuple[int, int, int]:
        """Grid size in index order (X, Y, Z), as SimpleITK's ``GetSize()``."""
        z, y, x = self.shape
        return (x, y, z)

    @property
    def is_2d(self) -> bool:
        """True for a single-slice grid (a mammogram, a photo)."""
        return self.shape[0] == 1

    def index_to_lps(self) -> np.ndarray:
        """4x4 matrix mapping homogeneous voxel index (i, j, k, 1) to LPS mm."""
        m = np.eye(4)
        m[:3, :3] = self.direction @ np.diag(self.spacing)
        m[:3, 3] = self.origin
        return m

    def ijk_to_ras(self) -> np.ndarray:
        """4x4 IJK-to-RAS matrix, as 3D Slicer's ``GetIJKToRASMatrix`` expects."""
        return LPS_TO_RAS @ self.index_to_lps()

    def same_geometry(self, other: "GridMethods", atol: float = 1e-4) -> bool:
        """True when ``other`` has the same grid size, spacing, origin and direction (within atol mm)."""
        return (tuple(self.shape) == tuple(other.shape)
                and np.allclose(self.spacing, other.spacing, atol=atol)
                and np.allclose(self.origin, other.origin, atol=atol)
                and np.allclose(self.direction, other.direction, atol=atol))


@dataclasses.dataclass
class Image(GridMethods):
    """Voxels with geometry and selected, non-identifying header fields.

    Attributes:
        array: voxel values, shape (Z, Y, X), any numeric dtype.
        spacing: (sx, sy, sz) voxel size in mm, index order i, j, k.
        origin: (x, y, z) LPS position in mm of the centre of voxel [0, 0, 0].
        direction: (3, 3) direction cosines; column c is the LPS direction of index axis c.
        meta: header fields safe to keep (Modality, PatientAge, ...), values as strings or numbers;
            never names, IDs, dates of birth; UIDs only as hashes.
    """

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = dataclasses.field(default_factory=lambda: np.eye(3))
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        arr = np.asarray(self.array)
        if arr.ndim == 2:
            arr = arr[np.newaxis]
        if arr.ndim != 3:
            raise ValueError(f"Image.array must be 2-D or 3-D (Z, Y, X), got shape {arr.shape}")
        self.array = arr
        self.spacing = tuple(float(s) for s in self.spacing)  # type: ignore[assignment]
        self.origin = tuple(float(o) for o in self.origin)  # type: ignore[assignment]
        direction = np.asarray(self.direction, dtype=np.float64)
        if direction.size != 9:
            raise ValueError(f"Image.direction must have 9 entries, got {direction.size}")
        self.direction = direction.reshape(3, 3)
        if len(self.spacing) != 3 or len(self.origin) != 3:
            raise ValueError("Image.spacing and Image.origin must have 3 entries (x, y, z)")
        if any(not np.isfinite(s) or s <= 0 for s in self.spacing):
            raise ValueError(f"Image.spacing must be positive and finite, got {self.spacing}")

    # ----------------------------------------------------------------------------------- geometry
    @property
    def shape(self) -> tuple[int, int, int]:  # type: ignore[override]
        """Array shape (Z, Y, X)."""
        return tuple(self.array.shape)  # type: ignore[return-value]

    def with_array(self, array: np.ndarray, meta: dict[str, Any] | None = None) -> "Image":
        """A new image on the same grid with other voxels (shape must match)."""
        array = np.asarray(array)
        if array.ndim == 2:
            array = array[np.newaxis]
        if array.shape != self.array.shape:
            raise ValueError(f"with_array: shape {array.shape} does not match the grid {self.array.shape}")
        return Image(array, self.spacing, self.origin, self.direction.copy(),
                     dict(self.meta) if meta is None else meta)

    # ---------------------------------------------------------------------------- SimpleITK bridge
    def to_sitk(self):
        """A ``SimpleITK.Image`` with the same voxels and geometry (meta is not copied)."""
        import SimpleITK as sitk

        img = sitk.GetImageFromArray(np.ascontiguousarray(self.array), isVector=False)
        img.SetSpacing(self.spacing)
        img.SetOrigin(self.origin)
        img.SetDirection(tuple(self.direction.reshape(-1)))
        return img

    @classmethod
    def from_sitk(cls, img, meta: dict[str, Any] | None = None) -> "Image":
        """Build from a 2-D or 3-D scalar ``SimpleITK.Image``; a 2-D image gets a z spacing of 1 mm."""
        arr = _sitk_array(img)
        dim = img.GetDimension()
        if dim == 3:
            return cls(arr, img.GetSpacing(), img.GetOrigin(),
                       np.array(img.GetDirection()).reshape(3, 3), dict(meta or {}))
        if dim == 2:
            d2 = np.array(img.GetDirection()).reshape(2, 2)
            d3 = np.eye(3)
            d3[:2, :2] = d2
            return cls(arr[np.newaxis], (*img.GetSpacing(), 1.0), (*img.GetOrigin(), 0.0), d3,
                       dict(meta or {}))
        raise ValueError(f"unsupported image dimension {dim}")

    def __repr__(self) -> str:  # keep it short: arrays can be huge
        return (f"Image(shape={self.shape}, dtype={self.array.dtype}, spacing={self.spacing}, "
                f"origin={self.origin}, direction={self.direction.round(4).tolist()}, "
                f"meta_keys={sorted(self.meta)})")


def _sitk_array(img) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(img)
