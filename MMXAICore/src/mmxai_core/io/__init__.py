"""Image input/output with geometry: DICOM (series, single, multi-frame), NIfTI, NRRD, MetaImage, PNG/JPEG/TIFF.

Public API::

    read_image(path, series_uid=None, *, color_to_luminance=False, allow_nonfinite=False,
               max_voxels=MAX_VOXELS, identifying=False) -> Image
    read_geometry(path, series_uid=None, *, max_voxels=MAX_VOXELS, identifying=False) -> ImageGeometry  # headers

``series_uid`` is a SeriesInstanceUID or its hash; ``identifying=True`` (DICOM) adds ``meta["identifiers"]``
for display only (see :mod:`mmxai_core.io.meta`).
    write_image(image, path, *, compress=True) -> Path         # .nrrd, .nii, .nii.gz, .mha; atomic

Errors are :class:`mmxai_core.errors.ImageReadError` / :class:`~mmxai_core.errors.ImageWriteError`.
Synthetic DICOM for tests and fixtures: :mod:`mmxai_core.io.dicom_writer`.
"""

from mmxai_core.io._util import MAX_VOXELS
from mmxai_core.io.geometry import ImageGeometry
from mmxai_core.io.image import Image
from mmxai_core.io.readers import read_geometry, read_image
from mmxai_core.io.writers import write_image

__all__ = ["MAX_VOXELS", "Image", "ImageGeometry", "read_geometry", "read_image", "write_image"]
