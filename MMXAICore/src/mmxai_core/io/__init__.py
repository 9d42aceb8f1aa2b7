"""Image input/output with geometry: DICOM (series, single, multi-frame), NIfTI, NRRD, PNG/JPEG/TIFF."""

from mmxai_core.io.image import Image

__all__ = ["Image"]
