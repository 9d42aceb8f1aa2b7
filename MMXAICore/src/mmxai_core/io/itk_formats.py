"""Read NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr) and MetaImage (.mha, .mhd) with SimpleITK.

Geometry is what SimpleITK reports (LPS; ITK converts NIfTI's RAS). A 2-D file becomes (1, Y, X) with a
z spacing of 1 mm and origin z 0, exactly as :meth:`Image.from_sitk`. The header is read first
(``ImageFileReader.ReadImageInformation``) so absurd sizes are refused before any voxel is allocated.

NIfTI voxels (single-component) are read with nibabel, not ITK: ITK before 6.0 silently replaces NaN and
inf voxels with 0 (ITK pull request #6683) and silently zero-fills a truncated .nii or .nii.gz. nibabel
keeps both visible; the values are cast to the pixel type SimpleITK would give (scl_slope/scl_inter
applied alike), and the index order is the same (NIfTI voxel (i, j, k) = ITK index (i, j, k)).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mmxai_core.errors import ImageReadError
from mmxai_core.io._util import MAX_VOXELS, check_voxel_count, itk_reason, one_line, quiet_itk, rgb_to_luminance
from mmxai_core.io.geometry import ImageGeometry
from mmxai_core.io.image import Image

_FORMAT_LABEL = {"nifti": "NIfTI", "nrrd": "NRRD", "metaimage": "MetaImage"}


#: Most dimensions a MetaImage header may declare (images, volumes, and a time or component axis).
META_MAX_DIMS = 4
#: Bytes of a MetaImage header read for the pre-check (a detached .mhd header is small; in a .mha the
#: header ends at "ElementDataFile = LOCAL").
META_HEADER_BYTES = 65536


def check_metaimage_header(path: Path) -> None:
    """Refuse a MetaImage header whose dimension fields ITK's MetaIO cannot survive.

    MetaIO (ITK 5.4) dereferences out of bounds, and the process dies with a segmentation fault, on a
    header declaring e.g. ``NDims = 2147483647`` (found by the loader fuzz test). So ``NDims`` must be an
    integer in 1..:data:`META_MAX_DIMS` and ``DimSize`` (and ``ElementSpacing`` / ``Offset`` when given)
    must list that many numbers, before the header reaches ITK.

    Raises:
        ImageReadError naming the file and the field.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(META_HEADER_BYTES)
    except OSError as exc:
        raise ImageReadError(path, f"cannot read the MetaImage header: {exc.strerror or exc}") from exc
    fields: dict[str, str] = {}
    for raw in head.split(b"\n"):
        key, sep, value = raw.partition(b"=")
        if not sep:
            continue
        name = key.strip().decode("latin-1")
        fields.setdefault(name, value.strip().decode("latin-1"))
        if name == "ElementDataFile":
            break
    ndims_text = fields.get("NDims")
    if ndims_text is None:
        return  # ITK reports a header without NDims itself
    try:
        ndims = int(ndims_text)
    except ValueError:
        raise ImageReadError(path, f"MetaImage header: NDims = {ndims_text[:20]!r} is not an integer") from None
    if not 1 <= ndims <= META_MAX_DIMS:
        raise ImageReadError(path, f"MetaImage header: NDims = {ndims} (expected 1 to {META_MAX_DIMS})")
    for name in ("DimSize", "ElementSpacing", "Offset", "Position"):
        if name not in fields:
            continue
        parts = fields[name].split()
        if len(parts) != ndims:
            raise ImageReadError(path, f"MetaImage header: {name} lists {len(parts)} value(s) for NDims = {ndims}")
        try:
            numbers = [float(v) for v in parts]
        except ValueError:
            raise ImageReadError(path, f"MetaImage header: {name} is not a list of numbers") from None
        if name == "DimSize" and any(not (v >= 1 and v == int(v)) for v in numbers):
            raise ImageReadError(path, f"MetaImage header: DimSize {fields[name][:40]!r} is not a list of "
                                       "positive integers")


def _reader(path: Path, fmt: str):
    import SimpleITK as sitk

    if fmt == "metaimage":
        check_metaimage_header(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        with quiet_itk():
            reader.ReadImageInformation()
    except RuntimeError as exc:
        label = _FORMAT_LABEL.get(fmt, fmt)
        reason = itk_reason(exc)
        if "Unable to determine ImageIO reader" in reason:
            reason = f"not a valid {label} file"
        elif "No such file or directory" in reason and path.is_file():  # MetaIO's stale errno: a bad header
            reason = f"not a valid {label} file (the header cannot be parsed)"
        raise ImageReadError(path, f"cannot read the {label} header: {reason}") from exc
    return reader


def _geometry(path: Path, fmt: str, reader) -> ImageGeometry:
    """Geometry lifted to 3-D from the header information of ``reader``."""
    dim = reader.GetDimension()
    size = list(reader.GetSize())
    if dim not in (2, 3):
        raise ImageReadError(path, f"is a {dim}-D image of size {tuple(size)}; only 2-D and 3-D images are "
                                   "supported (extract one 3-D volume first)")
    spacing = list(reader.GetSpacing())
    origin = list(reader.GetOrigin())
    direction = np.array(reader.GetDirection(), dtype=np.float64).reshape(dim, dim)
    if dim == 2:
        d3 = np.eye(3)
        d3[:2, :2] = direction
        direction, spacing, origin, size = d3, spacing + [1.0], origin + [0.0], size + [1]
    if any(not np.isfinite(s) or s <= 0 for s in spacing):
        raise ImageReadError(path, f"header has an invalid spacing {tuple(spacing)}")
    if not np.all(np.isfinite(origin)) or not np.all(np.isfinite(direction)) or abs(np.linalg.det(direction)) < 1e-6:
        raise ImageReadError(path, "header has an invalid origin or direction matrix")
    return ImageGeometry((size[2], size[1], size[0]), spacing, origin, direction, _meta(fmt, reader))


def _meta(fmt: str, reader) -> dict[str, Any]:
    keys = set(reader.GetMetaDataKeys())
    defaulted = False
    if fmt == "nifti":
        codes = [reader.GetMetaData(k).strip() for k in ("qform_code", "sform_code") if k in keys]
        defaulted = bool(codes) and all(c == "0" for c in codes)
    elif fmt == "nrrd":
        defaulted = "NRRD_space" not in keys
    return {"source_format": fmt, "geometry_defaulted": defaulted}


def read_itk_geometry(path: Path, fmt: str, *, max_voxels: int = MAX_VOXELS) -> ImageGeometry:
    """The grid of a NIfTI/NRRD/MetaImage file from its header."""
    reader = _reader(path, fmt)
    geometry = _geometry(path, fmt, reader)
    problem = check_voxel_count((*geometry.shape, reader.GetNumberOfComponents()), max_voxels)
    if problem:
        raise ImageReadError(path, problem)
    return geometry


@contextlib.contextmanager
def _nibabel_log_off() -> Iterator[None]:
    """nibabel logs header repairs ("sizeof_hdr should be 348; set sizeof_hdr to 348") through a handler of
    its own that prints to stderr; ITK has read and checked the header already, so they are silenced."""
    loggers = [logging.getLogger(name) for name in ("nibabel", "nibabel.global")]
    before = [lg.disabled for lg in loggers]
    for lg in loggers:
        lg.disabled = True
    try:
        yield
    finally:
        for lg, was in zip(loggers, before):
            lg.disabled = was


def _nifti_voxels(path: Path, shape: tuple[int, int, int], pixel_id: int) -> np.ndarray:
    """Scalar NIfTI voxels (Z, Y, X) via nibabel, in SimpleITK's pixel type, NaN/inf kept."""
    import nibabel as nib
    import SimpleITK as sitk

    try:
        with _nibabel_log_off():
            data = np.asanyarray(nib.load(str(path), mmap=False).dataobj)
    except Exception as exc:
        raise ImageReadError(path, f"cannot read the voxels: {one_line(exc, 200)}") from exc
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[:, :, np.newaxis]
    array = data.T
    if array.shape != tuple(shape):
        raise ImageReadError(path, f"voxel array of shape {array.shape} does not match the header {shape}")
    dtype = sitk.GetArrayViewFromImage(sitk.Image([1, 1], pixel_id)).dtype
    return np.ascontiguousarray(array, dtype=dtype)


def read_itk_file(path: Path, fmt: str, *, color_to_luminance: bool = False,
                  max_voxels: int = MAX_VOXELS) -> Image:
    """A NIfTI/NRRD/MetaImage file as an :class:`Image` (vector images only with ``color_to_luminance``)."""
    import SimpleITK as sitk

    reader = _reader(path, fmt)
    geometry = _geometry(path, fmt, reader)
    components = reader.GetNumberOfComponents()
    problem = check_voxel_count((*geometry.shape, components), max_voxels)
    if problem:
        raise ImageReadError(path, problem)
    if components > 1 and not (color_to_luminance and components in (3, 4)):
        raise ImageReadError(path, f"has {components} components per voxel (colour or vector image) where "
                                   "one is expected" + ("; pass color_to_luminance=True to convert RGB to "
                                                        "luminance" if components in (3, 4) else ""))
    if fmt == "nifti" and components == 1:
        array = _nifti_voxels(path, geometry.shape, reader.GetPixelID())
    else:
        try:
            with quiet_itk():
                img = reader.Execute()
        except RuntimeError as exc:
            raise ImageReadError(path, f"cannot read the voxels: {itk_reason(exc)}") from exc
        array = sitk.GetArrayFromImage(img)
    meta = dict(geometry.meta)
    if components > 1:
        array = rgb_to_luminance(array)
        meta["converted_to_luminance"] = True
    if array.ndim == 2:
        array = array[np.newaxis]
    return Image(array, geometry.spacing, geometry.origin, geometry.direction, meta)
