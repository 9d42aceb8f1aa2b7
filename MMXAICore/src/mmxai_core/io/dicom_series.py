"""Read a folder of DICOM slices (one series) into an Image with SimpleITK's ImageSeriesReader.

The folder is scanned (not recursively) with pydicom, headers only. Files that are not DICOM Part 10
(including DICOM without the 128-byte preamble), hidden files and DICOM objects without an image
(RTSTRUCT, SR, DICOMDIR, ...) are ignored. Image files are grouped by
SeriesInstanceUID; a folder with several image series needs ``series_uid`` (the UID or its hash from
:func:`mmxai_core.io.meta.uid_hash`), and the error lists them by hash with number, description and slice
count. Messages never show a raw UID.
Slices are ordered by position along the slice normal (:func:`mmxai_core.io.dicom_geometry.series_geometry`)
and the voxels are read by ``SimpleITK.ImageSeriesReader`` (GDCM), which applies each slice's rescale
and inverts MONOCHROME1.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from mmxai_core.errors import ImageReadError
from mmxai_core.io._util import MAX_VOXELS, check_voxel_count, itk_reason, quiet_itk, rgb_to_luminance
from mmxai_core.io.dicom_file import read_dicom_file, read_dicom_file_geometry
from mmxai_core.io.dicom_geometry import DicomGeometry, DicomGeometryError, series_geometry
from mmxai_core.io.dicom_pixels import is_color, photometric
from mmxai_core.io.geometry import ImageGeometry
from mmxai_core.io.image import Image
from mmxai_core.io.meta import dicom_meta, uid_hash, uid_matches, uid_shown


@dataclasses.dataclass
class Series:
    """Image files of one series in a folder (in file-name order) and their headers."""

    uid: str
    files: list[Path] = dataclasses.field(default_factory=list)
    headers: list[Any] = dataclasses.field(default_factory=list)

    @property
    def label(self) -> str:
        """The series as messages name it: the hash of its UID (never the UID itself)."""
        return uid_hash(self.uid) if self.uid else "(no SeriesInstanceUID)"

    def n_slices(self) -> int:
        """Slices in the series: one per file, NumberOfFrames for a multi-frame file."""
        total = 0
        for ds in self.headers:
            try:
                total += max(int(ds.get("NumberOfFrames", 1) or 1), 1)
            except (TypeError, ValueError):
                total += 1
        return total

    def describe(self) -> str:
        """``HASH (number N, n slices, MODALITY, 'description')`` for error messages."""
        first = self.headers[0]
        desc = str(first.get("SeriesDescription", "") or "").strip()
        number = str(first.get("SeriesNumber", "") or "").strip()
        n = self.n_slices()
        parts = [f"number {number}"] if number else []
        parts += [f"{n} slice{'s' if n != 1 else ''}", str(first.get("Modality", "") or "?")]
        if desc:
            parts.append(repr(desc))
        return f"{self.label} ({', '.join(parts)})"


@dataclasses.dataclass
class FolderScan:
    """What a folder holds: image series by UID, and counts of what was skipped."""

    series: dict[str, Series]
    n_entries: int = 0
    n_subfolders: int = 0
    n_not_dicom: int = 0
    first_not_dicom: str = ""
    non_image_modalities: list[str] = dataclasses.field(default_factory=list)

    def why_empty(self) -> str:
        """Problem text for a folder without image series."""
        if self.n_entries == 0:
            return "empty folder (no DICOM series)"
        parts = []
        if self.n_not_dicom:
            parts.append(f"{self.n_not_dicom} non-DICOM file(s) (first: {self.first_not_dicom})")
        if self.non_image_modalities:
            kinds = ", ".join(sorted(set(self.non_image_modalities)))
            parts.append(f"{len(self.non_image_modalities)} DICOM object(s) without an image ({kinds})")
        if self.n_subfolders:
            parts.append(f"{self.n_subfolders} subfolder(s), not searched: pass the folder of one series")
        return "no DICOM image files in this folder" + (f": {'; '.join(parts)}" if parts else "")


def scan_folder(folder: Path) -> FolderScan:
    """Group the DICOM image files directly in ``folder`` by SeriesInstanceUID (headers only)."""
    import pydicom

    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise ImageReadError(folder, f"cannot list the folder: {exc.strerror or exc}") from exc
    scan = FolderScan(series={}, n_entries=len(entries))
    for entry in entries:
        if entry.is_dir():
            scan.n_subfolders += 1
            continue
        if entry.name.startswith(".") or not entry.is_file():
            continue
        try:
            ds = pydicom.dcmread(entry, stop_before_pixels=True)
        except Exception as exc:  # counted and named in the folder's error message, if it has no series
            scan.n_not_dicom += 1
            if not scan.first_not_dicom:
                scan.first_not_dicom = f"{entry.name}: {type(exc).__name__}"
            continue
        if "Rows" not in ds or "DirectoryRecordSequence" in ds:
            kind = "DICOMDIR" if "DirectoryRecordSequence" in ds else str(ds.get("Modality", "") or "?")
            scan.non_image_modalities.append(kind)
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or "").strip()
        series = scan.series.setdefault(uid, Series(uid))
        series.files.append(entry)
        series.headers.append(ds)
    return scan


def select_series(folder: Path, scan: FolderScan, series_uid: str | None) -> Series:
    """The series named by ``series_uid`` (its UID or the UID's hash), or the only one; else an error
    listing them all by hash, number, slice count, modality and description."""
    if not scan.series:
        raise ImageReadError(folder, scan.why_empty())
    listing = "; ".join(s.describe() for s in sorted(scan.series.values(), key=lambda s: s.label))
    if series_uid is not None:
        found = [s for uid, s in scan.series.items() if uid_matches(series_uid, uid)]
        if not found:
            raise ImageReadError(folder, f"series_uid {uid_shown(series_uid)} is not in this folder, which "
                                         f"holds {len(scan.series)} series (UIDs shown hashed; either form is "
                                         f"accepted): {listing}")
        return found[0]
    if len(scan.series) > 1:
        raise ImageReadError(folder, f"holds {len(scan.series)} DICOM series; choose one with series_uid "
                                     f"(--series-uid HASH, the UID's hash as listed, or the UID): {listing}")
    return next(iter(scan.series.values()))


def _checked_series(folder: Path, series: Series) -> DicomGeometry:
    multi = [f.name for f, ds in zip(series.files, series.headers) if int(ds.get("NumberOfFrames", 1) or 1) > 1]
    if multi:
        raise ImageReadError(folder, f"series {series.label} has {len(multi)} multi-frame file(s) (e.g. "
                                     f"{multi[0]}) among {len(series.files)}: read each file on its own")
    try:
        return series_geometry(series.headers)
    except DicomGeometryError as exc:
        raise ImageReadError(folder, f"series {series.label}: {exc}") from exc


def _check_size(folder: Path, series: Series, max_voxels: int) -> None:
    first = series.headers[0]
    problem = check_voxel_count((len(series.files), int(first.Rows), int(first.Columns),
                                 int(first.get("SamplesPerPixel", 1) or 1)), max_voxels)
    if problem:
        raise ImageReadError(folder, f"series {series.label}: {problem}")


def _find_unreadable_slice(series: Series) -> str | None:
    """After SimpleITK failed: name the first slice whose pixel data pydicom finds missing or short."""
    from mmxai_core.io.dicom_file import load_dataset
    from mmxai_core.io.dicom_pixels import PixelProblem, check_native_length, has_pixels

    for path in series.files:
        try:
            ds = load_dataset(path, pixels=True)
            if not has_pixels(ds):
                return f"slice {path.name} contains no pixel data"
            check_native_length(ds, 1)
        except (ImageReadError, PixelProblem) as exc:
            return f"slice {path.name}: {getattr(exc, 'problem', exc)}"
    return None


def _meta(series: Series, geometry: DicomGeometry, extra: dict[str, Any], identifying: bool = False
          ) -> dict[str, Any]:
    first = series.headers[geometry.order[0]] if geometry.order else series.headers[0]
    meta = dicom_meta(first, identifying)
    meta.update(geometry.meta())
    meta.pop("frames_reordered", None)  # a series is always ordered by position
    meta.update(extra)
    meta["n_files"] = len(series.files)
    meta["source_format"] = "dicom-series"
    return meta


def _rescale_pairs(series: Series) -> set[tuple[float, float]]:
    pairs = set()
    for ds in series.headers:
        slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
        pairs.add((float(slope) if slope not in (None, "") else 1.0,
                   float(intercept) if intercept not in (None, "") else 0.0))
    return pairs


def read_dicom_series(folder: Path, series_uid: str | None = None, *, color_to_luminance: bool = False,
                      max_voxels: int = MAX_VOXELS, identifying: bool = False) -> Image:
    """A DICOM series folder as an :class:`Image` of shape (slices, Rows, Columns) in modality values
    (``identifying``: see :func:`mmxai_core.io.meta.dicom_meta`)."""
    import SimpleITK as sitk

    scan = scan_folder(folder)
    series = select_series(folder, scan, series_uid)
    if len(series.files) == 1:
        return read_dicom_file(series.files[0], color_to_luminance=color_to_luminance, max_voxels=max_voxels,
                               identifying=identifying)
    geometry = _checked_series(folder, series)
    first = series.headers[0]
    color = any(is_color(ds) for ds in series.headers)
    if color and not color_to_luminance:
        raise ImageReadError(folder, f"series {series.label} is colour (PhotometricInterpretation "
                                     f"{photometric(first) or '?'}) where greyscale is expected; pass "
                                     "color_to_luminance=True to convert it to luminance")
    rows, cols = int(first.Rows), int(first.Columns)
    _check_size(folder, series, max_voxels)

    files = [str(series.files[i]) for i in geometry.order]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    pairs = _rescale_pairs(series)
    if not color and (len(pairs) > 1 or any(s != round(s) or i != round(i) for s, i in pairs)):
        reader.SetOutputPixelType(sitk.sitkFloat32)  # slices rescale differently: keep every value
    try:
        with quiet_itk():
            array = sitk.GetArrayFromImage(reader.Execute())
    except RuntimeError as exc:
        culprit = _find_unreadable_slice(series)
        raise ImageReadError(folder, f"cannot read series {series.label}: "
                                     f"{culprit or itk_reason(exc)}") from exc
    if array.shape[:3] != (len(files), rows, cols):
        raise ImageReadError(folder, f"series {series.label}: read voxels of shape {array.shape}, expected "
                                     f"{(len(files), rows, cols)}")
    extra: dict[str, Any] = {"pixel_decoder": "SimpleITK (GDCM)"}
    if array.ndim == 4:
        array = rgb_to_luminance(array)
        extra["converted_to_luminance"] = True
    elif photometric(first) == "MONOCHROME1":
        extra["monochrome1_inverted"] = True
    if pairs != {(1.0, 0.0)}:
        extra["rescale_applied"] = True
    return Image(np.ascontiguousarray(array), geometry.spacing, geometry.origin, geometry.direction,
                 _meta(series, geometry, extra, identifying))


def read_dicom_series_geometry(folder: Path, series_uid: str | None = None, *, max_voxels: int = MAX_VOXELS,
                               identifying: bool = False) -> ImageGeometry:
    """The grid of a DICOM series folder from the headers alone."""
    scan = scan_folder(folder)
    series = select_series(folder, scan, series_uid)
    if len(series.files) == 1:
        return read_dicom_file_geometry(series.files[0], max_voxels=max_voxels, identifying=identifying)
    geometry = _checked_series(folder, series)
    _check_size(folder, series, max_voxels)
    first = series.headers[0]
    return ImageGeometry((len(series.files), int(first.Rows), int(first.Columns)), geometry.spacing,
                         geometry.origin, geometry.direction, _meta(series, geometry, {}, identifying))
