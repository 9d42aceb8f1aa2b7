"""Image geometry (spacing, origin, direction, slice order) from DICOM headers, in LPS mm.

Rules (those of DICOM PS3.3 C.7.6.2 and of GDCM as used by SimpleITK):

* ``ImageOrientationPatient`` = (row direction, column direction): the LPS direction of index i (along
  a row, increasing column) and of index j (down a column, increasing row). The slice normal
  row x column is the direction of index k.
* ``PixelSpacing`` = (spacing between rows, spacing between columns) = (sy, sx). Projection radiographs
  (mammograms) often have only ``ImagerPixelSpacing`` (at the detector, not corrected for magnification):
  it is used then and ``meta['spacing_source']`` says so.
* ``ImagePositionPatient`` is the LPS centre of the first voxel of a slice/frame.
* Enhanced multi-frame objects keep these per frame (``PerFrameFunctionalGroupsSequence``) or shared
  (``SharedFunctionalGroupsSequence``).
* Slices/frames are ordered by their position along the slice normal (ascending), so the k axis is the
  normal, the spacing is positive and the direction matrix is right-handed. The slice spacing of a stack
  is (last - first) / (n - 1) along the normal; uneven gaps and in-plane drift (gantry tilt) are reported
  as warnings, duplicate positions are refused.
* A single slice's k spacing is ``SpacingBetweenSlices`` (classic objects) or the functional groups'
  value (enhanced), else 1 mm, as SimpleITK reports it.
* Anything absent gets a default (spacing 1 mm, origin 0, identity direction) and is listed in
  ``defaulted``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any
from collections.abc import Sequence

import numpy as np


class DicomGeometryError(ValueError):
    """The headers describe a geometry that cannot be turned into one regular grid."""


@dataclasses.dataclass
class DicomGeometry:
    """Geometry of a DICOM volume (see module docstring).

    Attributes:
        spacing: (sx, sy, sz) mm.
        origin: LPS mm of voxel [0, 0, 0] (after reordering).
        direction: (3, 3), columns = LPS directions of i, j, k.
        order: indices of frames/slices in grid order (k = 0, 1, ...), or None for the stored order.
        defaulted: which parts were not in the header: "pixel_spacing", "origin", "direction",
            "slice_spacing".
        warnings: human-readable notes about doubtful geometry.
        spacing_source: the header attribute the in-plane spacing came from (or "default").
        n_slices: number of slices/frames on the k axis.
    """

    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray
    order: list[int] | None = None
    defaulted: list[str] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)
    spacing_source: str = "default"
    n_slices: int = 1

    def meta(self) -> dict[str, Any]:
        """Entries for ``Image.meta`` describing how the geometry was obtained."""
        # A single slice's k spacing is a convention, not a missing measurement.
        conventions = {"slice_spacing"} if self.n_slices == 1 else set()
        out: dict[str, Any] = {
            "geometry_defaulted": bool(set(self.defaulted) - conventions),
            "spacing_source": self.spacing_source,
        }
        if self.defaulted:
            out["geometry_defaulted_fields"] = list(self.defaulted)
        if self.warnings:
            out["geometry_warnings"] = list(self.warnings)
        if self.order is not None and list(self.order) != sorted(self.order):
            out["frames_reordered"] = True
        return out


# --------------------------------------------------------------------------------------- parsing
def _floats(value: Any, n: int) -> list[float] | None:
    """``n`` finite floats from a header value, or None if absent or malformed."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        value = [value]
    try:
        items = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    if len(items) != n or not all(math.isfinite(v) for v in items):
        return None
    return items


def _positive(value: Any) -> float | None:
    v = _floats(value, 1)
    return v[0] if v and v[0] > 0 else None


def functional_group(ds, frame: int, keyword: str):
    """First item of functional group ``keyword`` for ``frame`` (per-frame first, then shared)."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and frame < len(per_frame):
        seq = per_frame[frame].get(keyword)
        if seq:
            return seq[0]
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        seq = shared[0].get(keyword)
        if seq:
            return seq[0]
    return None


def is_enhanced(ds) -> bool:
    """True for enhanced (functional-group) multi-frame objects."""
    if "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds:
        return True
    name = getattr(ds.get("SOPClassUID"), "name", "") or ""
    return "Enhanced" in name


def _orientation(iop: Any, where: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(row, column) direction cosines from an ImageOrientationPatient value; refuses nonsense."""
    values = _floats(iop, 6)
    if values is None:
        return None
    row, col = np.array(values[:3]), np.array(values[3:])
    if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(col) - 1) > 1e-3 or abs(row @ col) > 1e-3:
        raise DicomGeometryError(f"{where} ImageOrientationPatient {values} is not two orthogonal unit "
                                 "vectors")
    return row, col


def _in_plane_spacing(ds, measures) -> tuple[tuple[float, float] | None, str, str | None]:
    """((sx, sy) or None, source, warning)."""
    candidates = []
    if measures is not None:
        candidates.append(("PixelMeasuresSequence", measures.get("PixelSpacing")))
    candidates += [("PixelSpacing", ds.get("PixelSpacing")), ("ImagerPixelSpacing", ds.get("ImagerPixelSpacing"))]
    warning = None
    for source, value in candidates:
        if value is None:
            continue
        values = _floats(value, 2)
        if values is None or min(values) <= 0:
            warning = f"{source} {list(value) if hasattr(value, '__iter__') else value} is invalid; ignored"
            continue
        row_spacing, col_spacing = values  # between rows (sy), between columns (sx)
        return (col_spacing, row_spacing), source, warning
    return None, "default", warning


# ----------------------------------------------------------------------------------------- stacks
def stack_order(positions: np.ndarray, normal: np.ndarray, what: str = "slices"
                ) -> tuple[list[int], float, list[str]]:
    """Order, slice spacing (mm) and warnings of positions (N, 3) stacked along ``normal``.

    Raises :class:`DicomGeometryError` if two positions coincide along the normal.
    """
    unit = normal / np.linalg.norm(normal)
    proj = positions @ unit
    order = np.argsort(proj, kind="stable")
    ordered = proj[order]
    gaps = np.diff(ordered)
    n = len(positions)
    if (gaps < 1e-3).any():
        distinct = int((gaps >= 1e-3).sum()) + 1
        raise DicomGeometryError(
            f"{n} {what} but only {distinct} distinct positions along the slice normal (several echoes, "
            f"time points or duplicate files in one series?); pass a folder or file holding one volume")
    spacing = float((ordered[-1] - ordered[0]) / (n - 1))
    warnings = []
    tol = max(1e-3, 0.01 * spacing)
    if np.abs(gaps - spacing).max() > tol:
        warnings.append(f"{what} are unevenly spaced (gaps {gaps.min():.4g} to {gaps.max():.4g} mm, missing "
                        f"{what}?); the grid uses their mean {spacing:.4g} mm")
    offsets = positions[order] - positions[order[0]]
    in_plane = offsets - np.outer(ordered - ordered[0], unit)
    drift = float(np.linalg.norm(in_plane, axis=1).max())
    if drift > tol:
        warnings.append(f"{what} positions drift {drift:.4g} mm in-plane away from the slice normal (gantry "
                        "tilt or shear?); the grid ignores the drift")
    return [int(i) for i in order], spacing, warnings


# ------------------------------------------------------------------------------------ single file
def file_geometry(ds, n_frames: int) -> DicomGeometry:
    """Geometry of one DICOM object with ``n_frames`` frames (classic or enhanced)."""
    enhanced = is_enhanced(ds)
    defaulted: list[str] = []
    warnings: list[str] = []

    measures = functional_group(ds, 0, "PixelMeasuresSequence") if enhanced else None
    in_plane, spacing_source, warning = _in_plane_spacing(ds, measures)
    if warning:
        warnings.append(warning)
    if in_plane is None:
        in_plane = (1.0, 1.0)
        defaulted.append("pixel_spacing")

    if enhanced:
        orientations = []
        for f in range(n_frames):
            item = functional_group(ds, f, "PlaneOrientationSequence")
            orientations.append(_orientation(item.get("ImageOrientationPatient"), f"frame {f + 1}")
                                if item is not None else None)
        positions = []
        for f in range(n_frames):
            item = functional_group(ds, f, "PlanePositionSequence")
            positions.append(_floats(item.get("ImagePositionPatient"), 3) if item is not None else None)
        slice_spacing = _positive(measures.get("SpacingBetweenSlices")) if measures is not None else None
    else:
        orientations = [_orientation(ds.get("ImageOrientationPatient"), "the")]
        positions = [_floats(ds.get("ImagePositionPatient"), 3)]
        slice_spacing = _positive(ds.get("SpacingBetweenSlices"))

    present = [o for o in orientations if o is not None]
    if present:
        row, col = present[0]
        for other in present[1:]:
            if not (np.allclose(other[0], row, atol=1e-4) and np.allclose(other[1], col, atol=1e-4)):
                raise DicomGeometryError("frames have different orientations (ImageOrientationPatient); "
                                         "they do not form one volume")
        if len(present) < len(orientations):
            warnings.append("some frames lack an orientation; the first one found is used for all")
    else:
        row, col = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
        defaulted.append("direction")
    normal = np.cross(row, col)
    direction = np.column_stack([row, col, normal])

    offsets = _floats(ds.get("GridFrameOffsetVector"), n_frames) if not enhanced and n_frames > 1 else None
    if offsets is not None and positions[0] is not None:
        # RT Dose style: one position, frame offsets (mm) along the slice normal.
        unit = normal / np.linalg.norm(normal)
        positions = [list(np.array(positions[0]) + off * unit) for off in offsets]
    per_frame_positions = enhanced or offsets is not None
    order = None
    if n_frames > 1 and per_frame_positions and all(p is not None for p in positions):
        order, slice_spacing, stack_warnings = stack_order(np.array(positions), normal, "frames")
        warnings += stack_warnings
        origin = positions[order[0]]
    else:
        if positions[0] is not None:
            origin = positions[0]
            if n_frames > 1 and len(positions) > 1:
                warnings.append("some frames lack a position; frames kept in stored order")
        else:
            origin = [0.0, 0.0, 0.0]
            defaulted.append("origin")
        if slice_spacing is None:
            slice_spacing = 1.0
            defaulted.append("slice_spacing")
    return DicomGeometry((in_plane[0], in_plane[1], slice_spacing), tuple(origin), direction, order,
                         defaulted, warnings, spacing_source, n_frames)


# ----------------------------------------------------------------------------------------- series
def series_geometry(headers: Sequence[Any]) -> DicomGeometry:
    """Geometry of a series of single-frame DICOM slices (pydicom datasets, any order).

    ``order`` gives the slices in grid order. Slices must agree in size, orientation and pixel spacing.
    """
    first = headers[0]
    shape = (first.get("Rows"), first.get("Columns"))
    for ds in headers[1:]:
        if (ds.get("Rows"), ds.get("Columns")) != shape:
            raise DicomGeometryError(f"slices differ in size ({shape[0]}x{shape[1]} and "
                                     f"{ds.get('Rows')}x{ds.get('Columns')}); they do not form one volume")
    one = file_geometry(first, 1)
    for ds in headers[1:]:
        g = file_geometry(ds, 1)
        if not np.allclose(g.spacing[:2], one.spacing[:2], rtol=1e-4, atol=1e-6):
            raise DicomGeometryError(f"slices differ in pixel spacing ({one.spacing[:2]} and {g.spacing[:2]})")
        if not np.allclose(g.direction, one.direction, atol=1e-4):
            raise DicomGeometryError("slices differ in orientation (ImageOrientationPatient); they do not "
                                     "form one volume")
    defaulted = [d for d in one.defaulted if d != "slice_spacing"]
    warnings = list(one.warnings)
    positions = [_floats(ds.get("ImagePositionPatient"), 3) for ds in headers]
    if all(p is not None for p in positions) and "direction" not in one.defaulted:
        order, slice_spacing, stack_warnings = stack_order(np.array(positions), one.direction[:, 2])
        warnings += stack_warnings
        origin = tuple(positions[order[0]])
    else:
        def instance(i: int) -> float:
            value = _floats(headers[i].get("InstanceNumber"), 1)
            return value[0] if value else float(i)

        order = sorted(range(len(headers)), key=instance)
        slice_spacing = one.spacing[2]
        origin = (0.0, 0.0, 0.0)
        if "origin" not in defaulted:
            defaulted.append("origin")
        if "slice_spacing" in one.defaulted:
            defaulted.append("slice_spacing")
        warnings.append("slices lack ImagePositionPatient/ImageOrientationPatient; ordered by InstanceNumber "
                        "with a default geometry")
    return DicomGeometry((one.spacing[0], one.spacing[1], slice_spacing), origin, one.direction, order,
                         defaulted, warnings, one.spacing_source, len(headers))
