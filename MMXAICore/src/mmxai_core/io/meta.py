"""Selected, non-identifying DICOM header fields for ``Image.meta``.

Only the keywords in :data:`DICOM_META_KEYWORDS` are copied (an allow-list, never a deny-list), so names,
IDs, dates, institution, accession numbers, free-text descriptions and device serial numbers cannot leak.
UIDs are kept only as :func:`uid_hash` values, which let one check that a mask and an image come from the
same series or frame of reference without revealing the UID (a hash of a known UID can still be matched:
treat hashes as pseudonymous, not anonymous).
"""

from __future__ import annotations

import hashlib
from typing import Any

#: Header keywords copied into ``meta`` when present and not empty.
DICOM_META_KEYWORDS: tuple[str, ...] = (
    # what and where
    "Modality", "BodyPartExamined", "ImageType", "ViewPosition", "ImageLaterality", "Laterality",
    "FrameLaterality", "PatientOrientation", "PatientPosition", "PresentationIntentType",
    "BreastImplantPresent",
    # the person, coarse and non-identifying (used to prefill clinical fields)
    "PatientAge", "PatientSex",
    # device
    "Manufacturer", "ManufacturerModelName", "MagneticFieldStrength", "KVP", "ConvolutionKernel",
    "DetectorType", "EstimatedRadiographicMagnificationFactor", "BodyPartThickness", "CompressionForce",
    # acquisition
    "SliceThickness", "SpacingBetweenSlices", "ScanningSequence", "SequenceVariant", "MRAcquisitionType",
    "RepetitionTime", "EchoTime", "InversionTime", "FlipAngle", "PulseSequenceName", "AcquisitionContrast",
    # pixels
    "PhotometricInterpretation", "SamplesPerPixel", "BitsAllocated", "BitsStored", "PixelRepresentation",
    "RescaleSlope", "RescaleIntercept", "RescaleType", "WindowCenter", "WindowWidth", "NumberOfFrames",
    "Rows", "Columns", "LossyImageCompression",
)

#: Header UIDs reported as ``<name>_uid_hash``.
DICOM_HASHED_UIDS: dict[str, str] = {
    "SeriesInstanceUID": "series",
    "StudyInstanceUID": "study",
    "FrameOfReferenceUID": "frame_of_reference",
}

UID_HASH_LENGTH = 16


def uid_hash(uid: str) -> str:
    """First 16 hex digits of the SHA-256 of a UID string (surrounding spaces and NULs removed)."""
    return hashlib.sha256(str(uid).strip().strip("\x00").encode("ascii", "replace")).hexdigest()[
        :UID_HASH_LENGTH]


def plain_value(value: Any) -> Any:
    """A header value as str / int / float / list of those (None for empty or binary values)."""
    from pydicom.multival import MultiValue
    from pydicom.valuerep import DSdecimal, DSfloat, IS

    if value is None or isinstance(value, (bytes, bytearray)):
        return None
    if isinstance(value, (MultiValue, list, tuple)):
        items = [plain_value(v) for v in value]
        items = [v for v in items if v is not None]
        return items or None
    if isinstance(value, IS):
        return int(value)
    if isinstance(value, (DSfloat, DSdecimal, float)):
        return float(value)
    if isinstance(value, int):
        return int(value)
    text = str(value).strip().strip("\x00")
    return text or None


def dicom_meta(ds) -> dict[str, Any]:
    """Safe header fields of a pydicom ``Dataset`` (see module docstring), plus UID hashes and SOP class."""
    meta: dict[str, Any] = {}
    for keyword in DICOM_META_KEYWORDS:
        if keyword in ds:
            try:
                value = plain_value(ds[keyword].value)
            except Exception:  # an unparsable value is skipped, never fatal
                continue
            if value is not None:
                meta[keyword] = value
    for keyword, name in DICOM_HASHED_UIDS.items():
        uid = ds.get(keyword)
        if uid:
            meta[f"{name}_uid_hash"] = uid_hash(uid)
    sop_class = ds.get("SOPClassUID")
    if sop_class:
        # The class UID names a kind of object (e.g. "CT Image Storage"); it identifies nobody.
        meta["SOPClassName"] = getattr(sop_class, "name", str(sop_class))
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if tsyntax:
        meta["TransferSyntax"] = getattr(tsyntax, "name", str(tsyntax))
    return meta
