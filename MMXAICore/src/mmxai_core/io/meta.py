"""Selected, non-identifying DICOM header fields for ``Image.meta``.

Only the keywords in :data:`DICOM_META_KEYWORDS` are copied (an allow-list, never a deny-list), so names,
IDs, dates, institution, accession numbers, free-text descriptions and device serial numbers cannot leak.
UIDs are kept only as :func:`uid_hash` values, which let one check that a mask and an image come from the
same series or frame of reference without revealing the UID (a hash of a known UID can still be matched:
treat hashes as pseudonymous, not anonymous).

Identifying fields (:data:`DICOM_IDENTIFYING_KEYWORDS`: names, IDs, dates, institution, descriptions) and the
raw UIDs are copied only on request (``identifying=True``), into the separate dict ``meta["identifiers"]``.
Only ``mmxai-inspect --identifiers`` asks for them, to show them on the terminal; no command writes them to a
file, and every other reader leaves them out.
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

#: Identifying header keywords, copied into ``meta["identifiers"]`` only with ``identifying=True``.
DICOM_IDENTIFYING_KEYWORDS: tuple[str, ...] = (
    "PatientName", "PatientID", "IssuerOfPatientID", "OtherPatientIDs", "OtherPatientNames",
    "PatientBirthDate", "PatientBirthTime", "PatientAddress", "PatientTelephoneNumbers",
    "AccessionNumber", "StudyID", "StudyDate", "StudyTime", "SeriesDate", "SeriesTime", "AcquisitionDate",
    "ContentDate", "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
    "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName", "StationName", "DeviceSerialNumber",
    "StudyDescription", "SeriesDescription", "SeriesNumber",
)

#: Raw UIDs, copied into ``meta["identifiers"]`` only with ``identifying=True`` (hashed otherwise).
DICOM_RAW_UIDS: tuple[str, ...] = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")

UID_HASH_LENGTH = 16


def uid_hash(uid: str) -> str:
    """First 16 hex digits of the SHA-256 of a UID string (surrounding spaces and NULs removed)."""
    return hashlib.sha256(clean_uid(uid).encode("ascii", "replace")).hexdigest()[:UID_HASH_LENGTH]


def clean_uid(uid: Any) -> str:
    """A UID as text without surrounding spaces and NULs ("" for None)."""
    return "" if uid is None else str(uid).strip().strip("\x00")


def is_uid_hash(text: str) -> bool:
    """Whether ``text`` has the form of a :func:`uid_hash` value (16 hex digits)."""
    text = text.strip()
    return len(text) == UID_HASH_LENGTH and all(c in "0123456789abcdefABCDEF" for c in text)


def uid_matches(given: str, uid: Any) -> bool:
    """Whether ``given`` names ``uid``: the UID itself or its :func:`uid_hash` (any letter case)."""
    given, uid = clean_uid(given), clean_uid(uid)
    if not uid:
        return False
    return given == uid or (is_uid_hash(given) and given.lower() == uid_hash(uid))


def uid_shown(given: str) -> str:
    """How a UID the user gave is echoed in a message: a UID (digits and dots) as its hash, anything else
    (a hash, a typo) as typed, so no raw UID is printed."""
    text = clean_uid(given)
    if "." in text and text.replace(".", "").isdigit():
        return f"with hash {uid_hash(text)}"
    return repr(text)


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


def _copy_fields(ds, keywords: tuple[str, ...], into: dict[str, Any]) -> None:
    """Copy the non-empty values of ``keywords`` from ``ds`` (as :func:`plain_value`) into ``into``."""
    for keyword in keywords:
        if keyword in ds:
            try:
                value = plain_value(ds[keyword].value)
            except Exception:  # an unparsable value is skipped, never fatal
                continue
            if value is not None:
                into[keyword] = value


def dicom_meta(ds, identifying: bool = False) -> dict[str, Any]:
    """Safe header fields of a pydicom ``Dataset`` (see module docstring), plus UID hashes and SOP class.

    ``identifying=True`` adds ``meta["identifiers"]``: the :data:`DICOM_IDENTIFYING_KEYWORDS` present and
    the raw :data:`DICOM_RAW_UIDS`. Only for showing them to the user on request; never write them to a file.
    """
    meta: dict[str, Any] = {}
    _copy_fields(ds, DICOM_META_KEYWORDS, meta)
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
    if identifying:
        identifiers: dict[str, Any] = {}
        _copy_fields(ds, DICOM_IDENTIFYING_KEYWORDS + DICOM_RAW_UIDS, identifiers)
        meta["identifiers"] = identifiers
    return meta
