"""DICOM helpers for the adapters: header fields, PatientAge in years, series folders, pixels and grid.

Headers are read with pydicom (``stop_before_pixels``). Pixels and the grid of an image come from
:func:`mmxai_core.io.read_image` / :func:`mmxai_core.io.read_geometry`, so a mask written on that grid
is exactly what ``read_image`` and ``load_manifest`` later expect.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from mmxai_core.data.schema import dicom_age_to_years
from mmxai_core.errors import DatasetError, SchemaError
from mmxai_core.io.image import Image


def parse_age(value: Any) -> float | None:
    """DICOM Age String (``"057Y"``, ``"006M"``, ``"012W"``, ``"030D"``; a bare number = years) in years
    (:func:`mmxai_core.data.schema.dicom_age_to_years`); None when absent or unreadable."""
    try:
        return dicom_age_to_years(value)
    except SchemaError:
        return None


def read_header(path: str | os.PathLike, tags: list[str] | None = None):
    """The header of one DICOM file (no pixels); a :class:`DatasetError` naming the file if unreadable."""
    import pydicom

    try:
        return pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=tags, force=False)
    except Exception as exc:  # InvalidDicomError, OSError, struct errors on truncated files
        raise DatasetError(f"{path}: not a readable DICOM file: {type(exc).__name__}: {exc}") from None


def header_text(ds, keyword: str) -> str:
    """A header element as stripped text (``""`` when absent)."""
    value = getattr(ds, keyword, None)
    return "" if value is None else str(value).strip()


def dicom_files(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """``*.dcm`` files (any case) in ``folder`` (and below with ``recursive``), sorted by path."""
    folder = Path(folder)
    if recursive:
        found = [Path(d) / f for d, _, files in os.walk(folder) for f in files if f.lower().endswith(".dcm")]
    else:
        found = [p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(".dcm")]
    return sorted(found)


@dataclasses.dataclass(frozen=True)
class SeriesFolder:
    """A folder of DICOM files (one series, as TCIA downloads store them)."""

    path: Path
    description: str
    number: int | None
    n_files: int


def series_folders(root: str | os.PathLike) -> list[SeriesFolder]:
    """Every folder under ``root`` (itself included) that holds ``*.dcm`` files, with the
    SeriesDescription and SeriesNumber of its first file, sorted by path."""
    out = []
    for d, _, files in sorted(os.walk(root)):
        dcm = sorted(f for f in files if f.lower().endswith(".dcm"))
        if not dcm:
            continue
        ds = read_header(Path(d) / dcm[0], ["SeriesDescription", "SeriesNumber"])
        num = getattr(ds, "SeriesNumber", None)
        out.append(SeriesFolder(Path(d), header_text(ds, "SeriesDescription"),
                                int(num) if num not in (None, "") else None, len(dcm)))
    return out


def read_pixels(path: str | os.PathLike) -> np.ndarray:
    """Pixel array of a single-frame image as (rows, columns) (:func:`mmxai_core.io.read_image`)."""
    from mmxai_core.io import read_image

    arr = np.squeeze(read_image(path).array)
    if arr.ndim != 2:
        raise DatasetError(f"{path}: expected a single 2-D image, got pixel array shape {arr.shape}")
    return arr


def image_grid(path: str | os.PathLike) -> Image:
    """The grid of the image at ``path`` (:func:`mmxai_core.io.read_geometry`, headers only) as an
    :class:`Image` holding an all-zero ``uint8`` array of the image's shape (Z, Y, X)."""
    from mmxai_core.io import read_geometry

    geo = read_geometry(path)
    return Image(np.zeros(geo.shape, np.uint8), geo.spacing, geo.origin, np.asarray(geo.direction))
