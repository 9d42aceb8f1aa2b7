"""Read one DICOM file (single-frame, classic or enhanced multi-frame, 2D mammogram) into an Image.

Headers are parsed with pydicom; voxels are decoded by :mod:`mmxai_core.io.dicom_pixels`; geometry comes
from :mod:`mmxai_core.io.dicom_geometry`; ``meta`` from :mod:`mmxai_core.io.meta`. Frames become the k
axis, ordered by position along the slice normal when per-frame positions exist.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmxai_core.errors import ImageReadError
from mmxai_core.io._util import MAX_VOXELS, check_voxel_count, one_line
from mmxai_core.io.dicom_geometry import DicomGeometry, DicomGeometryError, file_geometry, functional_group
from mmxai_core.io.dicom_pixels import PixelProblem, decode_pixels, has_pixels
from mmxai_core.io.geometry import ImageGeometry
from mmxai_core.io.image import Image
from mmxai_core.io.meta import clean_uid, dicom_meta, uid_hash, uid_matches, uid_shown

#: Elements that make a forced (preamble-less) parse plausibly DICOM.
_PLAUSIBLE = ("SOPClassUID", "Modality", "Rows", "PixelData", "StudyInstanceUID", "SeriesInstanceUID")


def load_dataset(path: Path, pixels: bool = True):
    """Parse a DICOM file with pydicom (``pixels=False``: large values, e.g. pixel data, are not loaded).

    Files without the 128-byte preamble and "DICM" prefix are accepted when they parse into recognisable
    DICOM elements. Raises :class:`ImageReadError` for anything else.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    defer = None if pixels else 4096
    try:
        return pydicom.dcmread(path, defer_size=defer)
    except InvalidDicomError:
        pass  # no preamble / 'DICM' prefix: try once more without that requirement, below
    except Exception as exc:  # truncated or corrupt header: EOFError, struct.error, ValueError, ...
        raise ImageReadError(path, f"cannot parse the DICOM header: {type(exc).__name__}: {one_line(exc, 200)}"
                             ) from exc
    why = "no recognisable DICOM elements"
    try:
        ds = pydicom.dcmread(path, force=True, defer_size=defer)
    except Exception as exc:  # not DICOM at all: say what the forced parse hit
        ds, why = None, f"forced parse failed: {type(exc).__name__}: {one_line(exc, 120)}"
    if ds is None or not any(k in ds for k in _PLAUSIBLE):
        raise ImageReadError(path, f"not a DICOM file (no 'DICM' prefix and {why})")
    return ds


def number_of_frames(path: Path, ds) -> int:
    """NumberOfFrames (1 when absent); refuses a malformed value."""
    value = ds.get("NumberOfFrames", 1)
    try:
        n = int(value if value not in (None, "") else 1)
    except (TypeError, ValueError):
        raise ImageReadError(path, f"invalid NumberOfFrames {value!r}") from None
    if n < 1:
        raise ImageReadError(path, f"invalid NumberOfFrames {n}")
    return n


def check_image_object(path: Path, ds, series_uid: str | None = None) -> None:
    """Refuse DICOM objects that are not images (no pixels, DICOMDIR) or belong to another series
    (``series_uid``: the SeriesInstanceUID or its hash; messages show UIDs only hashed)."""
    if len(ds) == 0:
        raise ImageReadError(path, "has a DICOM preamble but no readable data elements (truncated or corrupt "
                                   "file?)")
    if "DirectoryRecordSequence" in ds:
        raise ImageReadError(path, "is a DICOMDIR (an index of a DICOM medium), not an image; pass the "
                                   "folder of one series or one image file")
    if not has_pixels(ds):
        kind = getattr(ds.get("SOPClassUID"), "name", None) or "unknown SOP class"
        raise ImageReadError(path, f"contains no pixel data (Modality {ds.get('Modality', '?')}, {kind}): "
                                   "not an image")
    for keyword in ("Rows", "Columns"):
        value = ds.get(keyword)
        if not isinstance(value, int) or value <= 0:
            raise ImageReadError(path, f"has pixel data but an invalid or missing {keyword} ({value!r})")
    own = clean_uid(ds.get("SeriesInstanceUID", ""))
    if series_uid is not None and not uid_matches(series_uid, own):
        raise ImageReadError(path, f"series_uid {uid_shown(series_uid)} does not match this file's series "
                                   f"{uid_hash(own) if own else '(none)'} (UIDs shown hashed)")


def _geometry(path: Path, ds, n_frames: int) -> DicomGeometry:
    try:
        return file_geometry(ds, n_frames)
    except DicomGeometryError as exc:
        raise ImageReadError(path, str(exc)) from exc


def _meta(ds, geometry: DicomGeometry, extra: dict[str, Any], identifying: bool = False) -> dict[str, Any]:
    meta = dicom_meta(ds, identifying)
    if "SliceThickness" not in meta and geometry.spacing_source == "PixelMeasuresSequence":
        item = functional_group(ds, 0, "PixelMeasuresSequence")
        if item is not None and item.get("SliceThickness") not in (None, ""):
            meta["SliceThickness"] = float(item.SliceThickness)
    meta.update(geometry.meta())
    meta.update(extra)
    meta["source_format"] = "dicom"
    return meta


def read_dicom_file(path: Path, series_uid: str | None = None, *, color_to_luminance: bool = False,
                    max_voxels: int = MAX_VOXELS, identifying: bool = False) -> Image:
    """One DICOM file as an :class:`Image` of shape (frames, Rows, Columns) in modality values
    (``identifying``: see :func:`mmxai_core.io.meta.dicom_meta`)."""
    ds = load_dataset(path, pixels=True)
    check_image_object(path, ds, series_uid)
    n_frames = number_of_frames(path, ds)
    _check_size(path, ds, n_frames, max_voxels)
    geometry = _geometry(path, ds, n_frames)
    try:
        array, notes = decode_pixels(ds, path, n_frames, color_to_luminance)
    except PixelProblem as exc:
        raise ImageReadError(path, str(exc)) from exc
    if geometry.order is not None:
        array = array[geometry.order]
    return Image(array, geometry.spacing, geometry.origin, geometry.direction,
                 _meta(ds, geometry, notes, identifying))


def _check_size(path: Path, ds, n_frames: int, max_voxels: int) -> None:
    problem = check_voxel_count((n_frames, ds.Rows, ds.Columns, int(ds.get("SamplesPerPixel", 1) or 1)),
                                max_voxels)
    if problem:
        raise ImageReadError(path, problem)


def read_dicom_file_geometry(path: Path, series_uid: str | None = None, *, max_voxels: int = MAX_VOXELS,
                             identifying: bool = False) -> ImageGeometry:
    """The grid of one DICOM file from its header, without decoding the voxels."""
    ds = load_dataset(path, pixels=False)
    check_image_object(path, ds, series_uid)
    n_frames = number_of_frames(path, ds)
    _check_size(path, ds, n_frames, max_voxels)
    geometry = _geometry(path, ds, n_frames)
    return ImageGeometry((n_frames, ds.Rows, ds.Columns), geometry.spacing, geometry.origin,
                         geometry.direction, _meta(ds, geometry, {}, identifying))
