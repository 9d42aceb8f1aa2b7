"""Public entry points :func:`read_image` and :func:`read_geometry`: pick the reader for a path.

Policies (the same for every format):

* Every problem with the input raises :class:`~mmxai_core.errors.ImageReadError` whose message names the
  file or folder and what is wrong; no raw pydicom / SimpleITK / Pillow exception escapes.
* Non-finite voxels (NaN, +-inf) are refused by default: a model or a statistic fed a NaN silently
  produces NaNs, and no scanner format stores them on purpose. ``allow_nonfinite=True`` keeps them and
  records their number in ``meta['n_nonfinite']``.
* Headers that declare more than ``max_voxels`` voxels (default :data:`MAX_VOXELS`) are refused before
  any voxel is allocated.
* Colour DICOM, NRRD, NIfTI and MetaImage are refused where greyscale is expected unless
  ``color_to_luminance=True``; photos (PNG/JPEG/TIFF/BMP) are always converted to luminance.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar
from collections.abc import Callable

import numpy as np

from mmxai_core.errors import ImageReadError, MMXAIError
from mmxai_core.io._util import MAX_VOXELS, one_line
from mmxai_core.io.dicom_file import read_dicom_file, read_dicom_file_geometry
from mmxai_core.io.dicom_series import read_dicom_series, read_dicom_series_geometry
from mmxai_core.io.formats import ITK_FORMATS, PHOTO_FORMATS, detect_format, looks_like_text
from mmxai_core.io.geometry import ImageGeometry
from mmxai_core.io.image import Image
from mmxai_core.io.itk_formats import read_itk_file, read_itk_geometry
from mmxai_core.io.photo import read_photo, read_photo_geometry

T = TypeVar("T")

SUPPORTED = "a DICOM file or series folder, NIfTI, NRRD, MetaImage, PNG, JPEG, TIFF or BMP"


def _file_format(path: Path, series_uid: str | None) -> str:
    """Validate a file path and return its format ("dicom" for unknown binaries: may lack a preamble)."""
    if not path.is_file():
        raise ImageReadError(path, "is not a regular file or folder")
    if path.stat().st_size == 0:
        raise ImageReadError(path, "empty file (0 bytes)")
    fmt = detect_format(path)
    if fmt is None:
        with open(path, "rb") as fh:
            head = fh.read(512)
        if looks_like_text(head):
            raise ImageReadError(path, f"is a text file, not an image (expected {SUPPORTED})")
        fmt = "dicom-or-unknown"
    if series_uid is not None and fmt not in ("dicom", "dicom-or-unknown"):
        raise ImageReadError(path, f"series_uid was given but this is a {fmt} file, not DICOM")
    return fmt


def _guarded(path: Path, work: Callable[[], T]) -> T:
    """Run ``work``; anything but an MMXAIError becomes an ImageReadError naming ``path``."""
    try:
        return work()
    except MMXAIError:
        raise
    except MemoryError as exc:
        raise ImageReadError(path, "not enough memory to load the voxels") from exc
    except OSError as exc:
        raise ImageReadError(path, f"cannot read: {exc.strerror or one_line(exc)}") from exc
    except Exception as exc:  # corrupt input makes parsers raise anything; never let it escape raw
        raise ImageReadError(path, f"cannot read: {type(exc).__name__}: {one_line(exc, 200)}") from exc


def _unknown_to_generic(path: Path, exc: ImageReadError) -> ImageReadError:
    if exc.problem.startswith("not a DICOM file"):
        return ImageReadError(path, f"not a recognised image file (expected {SUPPORTED})")
    return exc


def _existing(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise ImageReadError(p, "no such file or directory")
    return p


def read_image(path: str | os.PathLike, series_uid: str | None = None, *, color_to_luminance: bool = False,
               allow_nonfinite: bool = False, max_voxels: int = MAX_VOXELS, identifying: bool = False) -> Image:
    """Read an image file or DICOM series folder with its geometry and safe header fields.

    Args:
        path: a DICOM file (single or multi-frame), a folder of DICOM slices, or a NIfTI (.nii,
            .nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd), PNG, JPEG, TIFF or BMP file.
        series_uid: SeriesInstanceUID, or its hash (:func:`mmxai_core.io.meta.uid_hash`, as error
            messages list it), to pick from a folder holding several series (for a single DICOM file it
            must match the file's series).
        color_to_luminance: convert colour DICOM / vector NRRD, NIfTI, MetaImage to luminance instead of
            refusing them.
        allow_nonfinite: keep NaN/inf voxels instead of refusing the image.
        max_voxels: refuse headers that declare more voxels than this.
        identifying: DICOM only: add ``meta["identifiers"]`` (patient name, IDs, dates, raw UIDs, ...; see
            :mod:`mmxai_core.io.meta`). For showing them on request (``mmxai-inspect --identifiers``);
            never write such an image's meta to a file.

    Returns:
        :class:`Image` with ``array`` (Z, Y, X) (a 2-D image is (1, Y, X)), ``spacing`` (sx, sy, sz) mm,
        ``origin`` LPS mm, ``direction`` (3, 3) as SimpleITK reports them, and ``meta`` with
        ``source_format`` (dicom, dicom-series, nifti, nrrd, metaimage, png, jpeg, tiff, bmp),
        ``geometry_defaulted`` and, for DICOM, the allow-listed header fields of
        :mod:`mmxai_core.io.meta` (UIDs only as hashes). DICOM voxels are modality values
        (rescale applied, MONOCHROME1 inverted so that high = bright).

    Raises:
        ImageReadError: missing, empty, truncated, corrupt, unsupported, non-image, colour (see
            ``color_to_luminance``), ambiguous (several series) or non-finite input.
    """
    p = _existing(path)

    def work() -> Image:
        if p.is_dir():
            return read_dicom_series(p, series_uid, color_to_luminance=color_to_luminance,
                                     max_voxels=max_voxels, identifying=identifying)
        fmt = _file_format(p, series_uid)
        if fmt in ITK_FORMATS:
            return read_itk_file(p, fmt, color_to_luminance=color_to_luminance, max_voxels=max_voxels)
        if fmt in PHOTO_FORMATS:
            return read_photo(p, fmt, max_voxels=max_voxels)
        try:
            return read_dicom_file(p, series_uid, color_to_luminance=color_to_luminance,
                                   max_voxels=max_voxels, identifying=identifying)
        except ImageReadError as exc:
            raise (_unknown_to_generic(p, exc) if fmt != "dicom" else exc) from exc.__cause__

    image = _guarded(p, work)
    _check_finite(p, image, allow_nonfinite)
    return image


def _check_finite(path: Path, image: Image, allow_nonfinite: bool) -> None:
    if not np.issubdtype(image.array.dtype, np.floating):
        return
    bad = int(image.array.size - np.count_nonzero(np.isfinite(image.array)))
    if bad == 0:
        return
    if not allow_nonfinite:
        raise ImageReadError(path, f"contains {bad:,} non-finite voxels (NaN or inf) out of "
                                   f"{image.array.size:,}; refused (allow_nonfinite=True keeps them)")
    image.meta["n_nonfinite"] = bad


def read_geometry(path: str | os.PathLike, series_uid: str | None = None, *,
                  max_voxels: int = MAX_VOXELS, identifying: bool = False) -> ImageGeometry:
    """The grid of an image (size, spacing, origin, direction, header meta) without reading its voxels.

    Accepts the same paths as :func:`read_image` and reports the same geometry it would (the same code
    computes it), but reads only headers: ``SimpleITK.ImageFileReader.ReadImageInformation`` for NIfTI,
    NRRD and MetaImage, pydicom headers for DICOM, Pillow's lazy open for photos. Problems found only in
    the voxels (truncated pixel data, colour, NaN) are not detected here.

    ``identifying`` as for :func:`read_image`.

    Returns:
        :class:`~mmxai_core.io.geometry.ImageGeometry` (``shape`` (Z, Y, X), ``spacing``, ``origin``,
        ``direction``, ``meta``; ``same_geometry`` works against an Image or another geometry).

    Raises:
        ImageReadError: as :func:`read_image`, for problems visible in the headers (including sizes
            above ``max_voxels``).
    """
    p = _existing(path)

    def work() -> ImageGeometry:
        if p.is_dir():
            return read_dicom_series_geometry(p, series_uid, max_voxels=max_voxels, identifying=identifying)
        fmt = _file_format(p, series_uid)
        if fmt in ITK_FORMATS:
            return read_itk_geometry(p, fmt, max_voxels=max_voxels)
        if fmt in PHOTO_FORMATS:
            return read_photo_geometry(p, fmt, max_voxels=max_voxels)
        try:
            return read_dicom_file_geometry(p, series_uid, max_voxels=max_voxels, identifying=identifying)
        except ImageReadError as exc:
            raise (_unknown_to_generic(p, exc) if fmt != "dicom" else exc) from exc.__cause__

    return _guarded(p, work)
