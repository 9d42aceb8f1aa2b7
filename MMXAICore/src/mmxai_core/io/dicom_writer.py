"""Write small synthetic DICOM files and series (for tests, synthetic cohorts and adapter fixtures).

Research use only: the files are valid enough for pydicom, SimpleITK/GDCM and this package's readers, not
for a PACS. Geometry follows :mod:`mmxai_core.io.dicom_geometry` in reverse: ``direction`` columns i, j
become ImageOrientationPatient, ``spacing`` (sx, sy) becomes PixelSpacing (sy, sx), and slice k of a
series sits at ``origin + k * sz * direction[:, 2]``. Every file is written atomically.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from collections.abc import Callable, Sequence

import numpy as np

from mmxai_core.io.image import Image
from mmxai_core.utils.atomic import atomic_path

#: SOP classes used per modality (single-frame); anything else is Secondary Capture.
SOP_CLASS_BY_MODALITY = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "MG": "1.2.840.10008.5.1.4.1.1.1.2",
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",
}
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def _ds(value: float) -> str:
    """A float as a Decimal String of at most 16 characters, as precise as that allows."""
    for digits in range(12, 4, -1):
        text = f"{float(value):.{digits}g}"
        if len(text) <= 16:
            return text
    raise ValueError(f"cannot write {value!r} as a DICOM decimal string")


def dicom_dataset(pixels: np.ndarray, *, modality: str = "OT", photometric: str | None = None,
                  spacing: Sequence[float] | None = None, imager_spacing: bool = False,
                  origin: Sequence[float] | None = None, direction: np.ndarray | None = None,
                  slice_spacing: float | None = None, rescale: tuple[float, float] | None = None,
                  bits_stored: int | None = None, series_uid: str | None = None, study_uid: str | None = None,
                  frame_of_reference_uid: str | None = None, instance_number: int = 1,
                  tags: dict[str, Any] | None = None):
    """A pydicom ``Dataset`` holding one slice.

    Args:
        pixels: (Rows, Columns) uint8/uint16/int16 stored values, or (Rows, Columns, 3) uint8 RGB.
        modality: Modality; picks the SOP class (CT, MR, MG, DX, else Secondary Capture).
        photometric: PhotometricInterpretation (default MONOCHROME2, or RGB for 3 samples).
        spacing: (sx, sy) mm written as PixelSpacing (sy, sx), or as ImagerPixelSpacing when
            ``imager_spacing``; None writes neither.
        origin: ImagePositionPatient (LPS mm of the first voxel); None writes none.
        direction: (3, 3) whose columns 0 and 1 become ImageOrientationPatient; None writes none.
        slice_spacing: SpacingBetweenSlices and SliceThickness (mm), if given.
        rescale: (RescaleSlope, RescaleIntercept), if given.
        bits_stored: BitsStored (default: all allocated bits).
        series_uid, study_uid, frame_of_reference_uid: UIDs (new ones when None).
        instance_number: InstanceNumber.
        tags: further attributes by keyword (e.g. ``{"PatientAge": "054Y", "ImageLaterality": "L"}``).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    pixels = np.asarray(pixels)
    samples = 3 if pixels.ndim == 3 else 1
    if pixels.ndim not in (2, 3) or (samples == 3 and (pixels.shape[2] != 3 or pixels.dtype != np.uint8)):
        raise ValueError(f"pixels must be (Rows, Columns) or (Rows, Columns, 3) uint8, got {pixels.shape} "
                         f"{pixels.dtype}")
    if pixels.dtype not in (np.uint8, np.uint16, np.int16):
        raise ValueError(f"pixels must be uint8, uint16 or int16, got {pixels.dtype}")
    ds = Dataset()
    sop_class = SOP_CLASS_BY_MODALITY.get(modality, SECONDARY_CAPTURE)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.FrameOfReferenceUID = frame_of_reference_uid or generate_uid()
    ds.Modality = modality
    ds.InstanceNumber = int(instance_number)
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric or ("RGB" if samples == 3 else "MONOCHROME2")
    if samples == 3:
        ds.PlanarConfiguration = 0
    bits = pixels.dtype.itemsize * 8
    ds.BitsAllocated = bits
    ds.BitsStored = int(bits_stored or bits)
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    if spacing is not None:
        value = [_ds(spacing[1]), _ds(spacing[0])]
        if imager_spacing:
            ds.ImagerPixelSpacing = value
        else:
            ds.PixelSpacing = value
    if origin is not None:
        ds.ImagePositionPatient = [_ds(v) for v in origin]
    if direction is not None:
        d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
        ds.ImageOrientationPatient = [_ds(v) for v in (*d[:, 0], *d[:, 1])]
    if slice_spacing is not None:
        ds.SpacingBetweenSlices = ds.SliceThickness = _ds(slice_spacing)
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = _ds(rescale[0]), _ds(rescale[1])
    for keyword, value in (tags or {}).items():
        setattr(ds, keyword, value)
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    return ds


def write_dicom(ds, path: str | os.PathLike) -> Path:
    """Write a dataset as a DICOM Part 10 file (preamble + file meta), atomically."""
    dest = Path(path)
    with atomic_path(dest, suffix="") as tmp:
        try:
            ds.save_as(tmp, enforce_file_format=True)
        except TypeError:  # pydicom < 3
            ds.save_as(tmp, write_like_original=False)
    return dest


def write_dicom_series(image: Image, folder: str | os.PathLike, *, modality: str = "MR",
                       series_uid: str | None = None, study_uid: str | None = None,
                       rescale: tuple[float, float] | None = None,
                       name: Callable[[int], str] = lambda k: f"slice_{k:04d}.dcm",
                       tags: dict[str, Any] | None = None) -> list[Path]:
    """Write each slice k of ``image`` (stored values, uint8/uint16/int16) as one file of a new series.

    Slice k gets ImagePositionPatient ``origin + k * sz * direction[:, 2]``; the direction's third column
    must be the slice normal (columns 0 x 1) for readers to rebuild the same grid. ``name(k)`` gives the
    file name of slice k (use it to shuffle names). Returns the paths in slice order.
    """
    from pydicom.uid import generate_uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    frame_uid = generate_uid()
    step = image.direction[:, 2] * image.spacing[2]
    paths = []
    for k in range(image.shape[0]):
        ds = dicom_dataset(image.array[k], modality=modality, spacing=image.spacing[:2],
                           origin=np.asarray(image.origin) + k * step, direction=image.direction,
                           slice_spacing=image.spacing[2], rescale=rescale, series_uid=series_uid,
                           study_uid=study_uid, frame_of_reference_uid=frame_uid, instance_number=k + 1,
                           tags=tags)
        paths.append(write_dicom(ds, folder / name(k)))
    return paths
