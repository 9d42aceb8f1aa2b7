"""Write synthetic images as DICOM with pydicom: Digital Mammography (For Presentation) single files and
MR image series (one file per slice).

Headers are plausible but fake: fake patient name and ID (``SYNTH^0001``), birth date, referring
physician and institution, so that privacy filters have something to remove. UIDs are derived from the
seed (:func:`._rng.make_uid`); dates are derived from the seed and patient, never from the clock, so the
same seed writes byte-identical files.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

from mmxai_core import RESEARCH_USE_NOTICE
from mmxai_core.data.synthetic._rng import make_uid
from mmxai_core.data.synthetic.cohort import ImageCase, PatientCase
from mmxai_core.data.synthetic.fields import dicom_age
from mmxai_core.data.synthetic.render import Rendered

MG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.2"  # Digital Mammography X-Ray Image Storage - For Presentation
MR_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.4"  # MR Image Storage
VIEW_CODES = {"CC": ("399162004", "cranio-caudal"), "MLO": ("399368009", "medio-lateral oblique")}
MG_ORIENTATION = {("L", "CC"): ["A", "R"], ("L", "MLO"): ["A", "FR"],
                  ("R", "CC"): ["P", "L"], ("R", "MLO"): ["P", "FL"]}
BASE_DATE = dt.date(2021, 1, 4)


def _ds(x: float, decimals: int = 6) -> str:
    """A DICOM Decimal String of at most 16 characters."""
    text = f"{x:.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "SCT"
    item.CodeMeaning = meaning
    return item


def _study_date(seed: int, patient: PatientCase) -> dt.date:
    return BASE_DATE + dt.timedelta(days=(patient.index * 37 + int(seed) * 11) % 1100)


def _common(seed: int, patient: PatientCase, image: ImageCase, sop_class: str, modality: str,
            series_number: int) -> Dataset:
    """Patient, study, series, equipment and SOP-common attributes shared by every file of a series."""
    ds = Dataset()
    study_date = _study_date(seed, patient)
    age = int(np.floor(patient.clinical["age"]))
    birth = study_date - dt.timedelta(days=round(age * 365.25) + patient.age_days)
    number = f"{patient.index + 1:04d}"
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY"] if modality == "MG" else ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.SOPClassUID = sop_class
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = study_date.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = f"{9 + patient.index % 8:02d}{(patient.index * 7) % 60:02d}00"
    ds.AccessionNumber = f"SYNACC{number}"
    ds.Modality = modality
    ds.Manufacturer = "MMXAI synthetic"
    ds.InstitutionName = "Synthetic General Hospital"
    ds.ReferringPhysicianName = "SYNTH^REFERRER"
    ds.StudyDescription = "MAMMOGRAPHY" if modality == "MG" else "MRI BREAST"
    ds.SeriesDescription = (f"{image.laterality}{image.view}" if modality == "MG"
                            else "ax T1 FS post" + (" oblique" if image.oblique else ""))
    ds.OperatorsName = "SYNTH^OPERATOR"
    ds.ManufacturerModelName = "mmxai-synth"
    ds.PatientName = f"SYNTH^{number}"
    ds.PatientID = f"SYNTH{number}"
    ds.PatientBirthDate = birth.strftime("%Y%m%d")
    ds.PatientSex = "F"
    ds.PatientAge = dicom_age(patient.clinical["age"])
    ds.BodyPartExamined = "BREAST"
    ds.SoftwareVersions = "mmxai-synth"
    ds.StudyInstanceUID = make_uid(seed, "study", patient.index)
    ds.SeriesInstanceUID = make_uid(seed, "series", patient.index, image.key if modality == "MR" else "MG")
    ds.StudyID = number
    ds.SeriesNumber = series_number
    ds.ImageComments = f"SYNTHETIC IMAGE. {RESEARCH_USE_NOTICE}"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.PixelRepresentation = 0
    return ds


def _finish(ds: Dataset, uid: str, path: Path) -> None:
    """Add file meta and SOP Instance UID and write ``ds`` to ``path``."""
    ds.file_meta = _file_meta(ds.SOPClassUID, uid)
    ds.SOPInstanceUID = uid
    ds.save_as(path, enforce_file_format=True)


def write_mammogram(path: Path, seed: int, patient: PatientCase, image_index: int, rendered: Rendered) -> None:
    """Write one MG view as a single DICOM file."""
    image = patient.images[image_index]
    ds = _common(seed, patient, image, MG_SOP_CLASS, "MG", 1)
    px = _ds(image.spacing[0])
    ds.KVP = "28"
    ds.BodyPartThickness = _ds(40 + (patient.index * 13) % 30)
    ds.CompressionForce = _ds(80 + (patient.index * 7) % 60)
    ds.ImagerPixelSpacing = [px, px]
    ds.EstimatedRadiographicMagnificationFactor = "1"
    ds.PositionerType = "MAMMOGRAPHIC"
    ds.ViewPosition = image.view
    ds.InstanceNumber = image_index + 1
    ds.PatientOrientation = MG_ORIENTATION[(image.laterality, image.view)]
    ds.ImageLaterality = image.laterality
    ds.AnatomicRegionSequence = Sequence([_code("76752008", "Breast")])
    ds.ViewCodeSequence = Sequence([_code(*VIEW_CODES[image.view])])
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = 1
    ds.BurnedInAnnotation = "NO"
    ds.Rows, ds.Columns = rendered.stored.shape[1:]
    ds.PixelSpacing = [px, px]
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.WindowCenter = "2048"
    ds.WindowWidth = "4096"
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    ds.PixelData = np.ascontiguousarray(rendered.stored[0], dtype="<u2").tobytes()
    _finish(ds, make_uid(seed, "sop", patient.index, image.key), path)


def slice_positions(rendered: Rendered) -> np.ndarray:
    """LPS position of voxel (0, 0, k) for every slice k, rounded as written to ImagePositionPatient."""
    sz = rendered.spacing[2]
    normal = rendered.direction[:, 2]
    k = np.arange(rendered.stored.shape[0])[:, None]
    return np.round(np.asarray(rendered.origin)[None, :] + k * sz * normal[None, :], 4)


def write_mr_series(folder: Path, seed: int, patient: PatientCase, image_index: int, rendered: Rendered,
                    names: list[str]) -> None:
    """Write one MR series into ``folder``, slice ``k`` to ``names[k]`` (names need not sort by k)."""
    base, slices = mr_series_datasets(seed, patient, image_index, rendered)
    writer = _SeriesWriter(base)
    for var, name in zip(slices, names):
        writer.write(folder / name, var)


def mr_series_datasets(seed: int, patient: PatientCase, image_index: int,
                       rendered: Rendered) -> tuple[Dataset, list[Dataset]]:
    """The elements shared by every slice of an MR series, and each slice's own elements
    (SOP Instance UID, Instance Number, Image Position, Slice Location, Pixel Data)."""
    image = patient.images[image_index]
    base = _common(seed, patient, image, MR_SOP_CLASS, "MR", 100 + image_index)
    sx, sy, sz = rendered.spacing
    rot = rendered.direction
    base.ScanningSequence = "GR"
    base.SequenceVariant = "SP"
    base.ScanOptions = "FS"
    base.MRAcquisitionType = "3D"
    base.SequenceName = "fl3d_fs"
    base.SliceThickness = _ds(sz)
    base.SpacingBetweenSlices = _ds(sz)
    base.RepetitionTime = "4.5"
    base.EchoTime = "1.8"
    base.FlipAngle = "10"
    base.MagneticFieldStrength = "3" if patient.index % 2 else "1.5"
    base.PatientPosition = "HFP"
    base.Laterality = image.laterality
    base.FrameOfReferenceUID = make_uid(seed, "for", patient.index)
    base.PositionReferenceIndicator = ""
    base.ImageOrientationPatient = [_ds(v, 8) for v in (*rot[:, 0], *rot[:, 1])]
    base.Rows, base.Columns = rendered.stored.shape[1:]
    base.PixelSpacing = [_ds(sy), _ds(sx)]  # row spacing (between rows), column spacing
    base.BitsStored = 16
    base.HighBit = 15
    lo, hi = np.percentile(rendered.values, [1, 99.5])
    base.WindowCenter = _ds((lo + hi) / 2, 1)
    base.WindowWidth = _ds(max(hi - lo, 1.0), 1)
    if (rendered.slope, rendered.intercept) != (1.0, 0.0):
        base.RescaleIntercept = _ds(rendered.intercept)
        base.RescaleSlope = _ds(rendered.slope)
    positions = slice_positions(rendered)
    normal = rot[:, 2]
    n = rendered.stored.shape[0]
    slices = []
    for k in range(n):
        var = Dataset()
        var.SOPInstanceUID = make_uid(seed, "sop", patient.index, image.key, k)
        var.InstanceNumber = (n - k) if image.descending else (k + 1)
        var.ImagePositionPatient = [_ds(v, 4) for v in positions[k]]
        var.SliceLocation = _ds(float(positions[k] @ normal), 4)
        var.PixelData = np.ascontiguousarray(rendered.stored[k], dtype="<u2").tobytes()
        var["PixelData"].VR = "OW"
        slices.append(var)
    return base, slices


class _SeriesWriter:
    """Writes many files that share most elements: the shared elements are encoded once, in chunks that
    sit between the per-file elements, and each file is the concatenation (the same bytes pydicom's
    ``save_as`` would write: Explicit VR Little Endian elements are encoded independently, in tag order).
    """

    VARYING = ("SOPInstanceUID", "InstanceNumber", "ImagePositionPatient", "SliceLocation", "PixelData")

    def __init__(self, base: Dataset):
        from pydicom.datadict import tag_for_keyword

        self.sop_class = base.SOPClassUID
        self.tags = sorted(tag_for_keyword(k) for k in self.VARYING)
        chunks = [Dataset() for _ in range(len(self.tags) + 1)]
        for elem in base:
            if elem.tag in self.tags:
                raise ValueError(f"shared dataset must not hold {elem.keyword}")
            chunks[sum(1 for t in self.tags if t < elem.tag)].add(elem)
        self.chunks = [_encode(c) for c in chunks]

    def write(self, path: Path, var: Dataset) -> None:
        """Write one file: shared chunks interleaved with ``var``'s elements (which must be exactly
        the ``VARYING`` ones)."""
        parts = [b"\x00" * 128, b"DICM", _encode_meta(self.sop_class, var.SOPInstanceUID)]
        for tag, chunk in zip(self.tags, self.chunks):
            parts.append(chunk)
            one = Dataset()
            one.add(var[tag])
            parts.append(_encode(one))
        parts.append(self.chunks[-1])
        path.write_bytes(b"".join(parts))


def _encode(ds: Dataset) -> bytes:
    """Explicit VR Little Endian encoding of the elements of ``ds`` (no preamble, no file meta)."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    write_dataset(fp, ds)
    return fp.getvalue()


def _file_meta(sop_class: str, uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "MMXAI_SYNTH"
    return meta


def _encode_meta(sop_class: str, uid: str) -> bytes:
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info

    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    write_file_meta_info(fp, _file_meta(sop_class, uid), enforce_standard=True)
    return fp.getvalue()
