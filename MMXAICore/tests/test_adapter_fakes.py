"""Small fake files in the real public-dataset formats, for the adapter tests (no tests in here).

* :func:`write_dicom`: a tiny single-frame DICOM (pydicom) with the header fields the adapters read.
* :func:`cbis_csv`: a CBIS-DDSM case-description CSV with the real column names of the mass or calc
  files (the calc files spell ``breast density`` with a blank, the mass files ``breast_density``).
* :func:`tcia_path`: where a TCIA download puts a file whose CSV path starts with a case folder.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

MASS_COLUMNS = ["patient_id", "breast_density", "left or right breast", "image view", "abnormality id",
                "abnormality type", "mass shape", "mass margins", "assessment", "pathology", "subtlety",
                "image file path", "cropped image file path", "ROI mask file path"]
CALC_COLUMNS = ["patient_id", "breast density", "left or right breast", "image view", "abnormality id",
                "abnormality type", "calc type", "calc distribution", "assessment", "pathology", "subtlety",
                "image file path", "cropped image file path", "ROI mask file path"]


def write_dicom(path: Path, pixels: np.ndarray, *, age: str | None = None, modality: str = "MG",
                series_description: str | None = None, series_number: int | None = None,
                series_uid: str | None = None, study_uid: str | None = None,
                pixel_spacing=(0.2, 0.1), position=None, instance: int = 1) -> Path:
    """Write ``pixels`` (rows, cols; uint8 or uint16) as an uncompressed DICOM file."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sop_class = "1.2.840.10008.5.1.4.1.1.1.2" if modality == "MG" else "1.2.840.10008.5.1.4.1.1.4"
    uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = uid
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.Modality = modality
    ds.PatientID = "anon"
    ds.InstanceNumber = instance
    if age is not None:
        ds.PatientAge = age
    if series_description is not None:
        ds.SeriesDescription = series_description
    if series_number is not None:
        ds.SeriesNumber = series_number
    if position is not None:
        ds.ImagePositionPatient = [float(v) for v in position]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.SliceThickness = 2.0
    pixels = np.asarray(pixels)
    bits = 8 if pixels.dtype == np.uint8 else 16
    pixels = pixels.astype(np.uint8 if bits == 8 else np.uint16)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    spacing = [float(pixel_spacing[0]), float(pixel_spacing[1])]  # (row, column) spacing in mm
    if modality == "MG":
        ds.ImagerPixelSpacing = spacing  # what mammography headers carry (and GDCM reads for MG)
    else:
        ds.PixelSpacing = spacing
    ds.PixelData = pixels.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def cbis_csv(path: Path, kind: str, rows: list[dict]) -> Path:
    """Write a case-description CSV; each row gives the columns it cares about (others empty)."""
    columns = MASS_COLUMNS if kind == "mass" else CALC_COLUMNS
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for r in rows:
            writer.writerow([r.get(c, "") for c in columns])
    return path


def tcia_path(root: Path, case_folder: str, series: str, name: str = "1-1.dcm") -> Path:
    """``root/CBIS-DDSM/<case>/<study-ish>/<series>/<name>``: the layout of a TCIA download."""
    return root / "CBIS-DDSM" / case_folder / "07-20-2016-DDSM-NA-74994" / series / name


def csv_image_path(case_folder: str, name: str = "000000.dcm") -> str:
    """A CSV-style path (UID folders that a download does not have)."""
    return f"{case_folder}/1.3.6.1.4.1.9590.100.1.2.1234/1.3.6.1.4.1.9590.100.1.2.5678/{name}"
