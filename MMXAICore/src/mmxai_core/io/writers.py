"""Write an :class:`Image` (voxels + geometry) as NRRD, NIfTI or MetaImage with SimpleITK, atomically.

* ``.nrrd`` and ``.mha``: voxels bit-exact, geometry in float64 (exact round trip).
* ``.nii`` / ``.nii.gz``: geometry goes through NIfTI's float32 qform/sform (about 1e-4 mm, 1e-5 in the
  direction cosines); voxels exact.
* The file is written to a temporary name beside the destination and renamed onto it only on success
  (:func:`mmxai_core.utils.atomic.atomic_path`): a failed write leaves no partial file.
* ``meta`` is not written. bool voxels are stored as uint8, float16 as float32.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mmxai_core.errors import ImageWriteError
from mmxai_core.io._util import itk_reason, quiet_itk
from mmxai_core.io.image import Image
from mmxai_core.utils.atomic import atomic_path

#: File-name endings write_image accepts (one file each, so the rename is atomic).
WRITE_SUFFIXES = (".nrrd", ".nii", ".nii.gz", ".mha")


def _suffix(path: Path) -> str | None:
    name = path.name.lower()
    for suffix in sorted(WRITE_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix) and len(name) > len(suffix):
            return suffix
    return None


def _storable(array: np.ndarray, path: Path) -> np.ndarray:
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if array.dtype == np.float16:
        return array.astype(np.float32)
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ImageWriteError(path, f"cannot store voxels of dtype {array.dtype} (use an integer or float type)")
    return array


def write_image(image: Image, path: str | os.PathLike, *, compress: bool = True) -> Path:
    """Write ``image`` to ``path`` (.nrrd, .nii, .nii.gz or .mha) and return the path.

    Args:
        image: the voxels (Z, Y, X) and geometry to store.
        path: destination; missing parent folders are created.
        compress: gzip the voxels of .nrrd and .mha (``.nii.gz`` is always compressed, ``.nii`` never).

    Raises:
        ImageWriteError: unsupported ending, destination is a folder or unwritable, dtype not storable,
            or SimpleITK fails; no file is left at ``path`` (an existing one is kept unchanged).
    """
    import SimpleITK as sitk

    dest = Path(path)
    suffix = _suffix(dest)
    if suffix is None:
        raise ImageWriteError(dest, f"unsupported file name ending; use one of {', '.join(WRITE_SUFFIXES)}")
    if dest.is_dir():
        raise ImageWriteError(dest, "is a folder; give a file name")
    array = _storable(np.asarray(image.array), dest)
    sitk_image = Image(array, image.spacing, image.origin, image.direction).to_sitk()
    use_compression = compress if suffix in (".nrrd", ".mha") else suffix == ".nii.gz"
    try:
        with atomic_path(dest, suffix=suffix) as tmp, quiet_itk():
            sitk.WriteImage(sitk_image, str(tmp), useCompression=use_compression)
    except RuntimeError as exc:
        raise ImageWriteError(dest, f"SimpleITK cannot write it: {itk_reason(exc)}") from exc
    except OSError as exc:
        raise ImageWriteError(dest, f"cannot write: {exc.strerror or exc}") from exc
    return dest
