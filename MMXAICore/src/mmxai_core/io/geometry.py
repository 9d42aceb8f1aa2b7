"""The grid of an image without its voxels: what :func:`mmxai_core.io.read_geometry` returns.

An :class:`ImageGeometry` has the same geometry attributes and methods as :class:`~mmxai_core.io.Image`
(``shape``, ``size_xyz``, ``spacing``, ``origin``, ``direction``, ``index_to_lps()``, ``ijk_to_ras()``,
``same_geometry()``) but no ``array``, so a manifest validator can check that a mask sits on its image's
grid without loading either. ``Image.same_geometry(geometry)`` and ``geometry.same_geometry(image)`` both
work.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from mmxai_core.io.image import GridMethods, Image


@dataclasses.dataclass(eq=False)
class ImageGeometry(GridMethods):
    """Grid size, spacing, origin and direction of an image (conventions of :class:`Image`).

    Attributes:
        shape: (Z, Y, X) number of voxels, as ``Image.array.shape`` would be.
        spacing: (sx, sy, sz) voxel size in mm, index order i, j, k.
        origin: (x, y, z) LPS position in mm of the centre of voxel [0, 0, 0].
        direction: (3, 3); column c is the LPS direction of index axis c.
        meta: the header fields :func:`read_image` would report that need no voxels.
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = dataclasses.field(default_factory=lambda: np.eye(3))
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.shape = tuple(int(s) for s in self.shape)  # type: ignore[assignment]
        if len(self.shape) != 3 or any(s <= 0 for s in self.shape):
            raise ValueError(f"ImageGeometry.shape must be 3 positive sizes (Z, Y, X), got {self.shape}")
        self.spacing = tuple(float(s) for s in self.spacing)  # type: ignore[assignment]
        self.origin = tuple(float(o) for o in self.origin)  # type: ignore[assignment]
        self.direction = np.asarray(self.direction, dtype=np.float64).reshape(3, 3)
        if len(self.spacing) != 3 or len(self.origin) != 3:
            raise ValueError("ImageGeometry.spacing and origin must have 3 entries (x, y, z)")
        if any(not np.isfinite(s) or s <= 0 for s in self.spacing):
            raise ValueError(f"ImageGeometry.spacing must be positive and finite, got {self.spacing}")

    @classmethod
    def from_image(cls, image: Image) -> ImageGeometry:
        """The geometry of an :class:`Image` (meta copied)."""
        return cls(image.shape, image.spacing, image.origin, image.direction.copy(), dict(image.meta))

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON description (lists of floats)."""
        return {"shape": list(self.shape), "spacing": list(self.spacing), "origin": list(self.origin),
                "direction": self.direction.tolist(), "ijk_to_ras": self.ijk_to_ras().tolist(),
                "meta": dict(self.meta)}

    def __repr__(self) -> str:
        return (f"ImageGeometry(shape={self.shape}, spacing={self.spacing}, origin={self.origin}, "
                f"direction={self.direction.round(4).tolist()})")
