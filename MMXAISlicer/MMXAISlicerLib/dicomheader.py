"""DICOM header fields of a volume, for prefilling the clinical form (e.g. PatientAge -> age).

A volume loaded by Slicer's DICOM module carries the attribute ``DICOM.instanceUIDs`` (space-separated SOP
instance UIDs); ``slicer.dicomDatabase.fileForInstance(uid)`` gives a file whose header is read. The database
and the file reader are pluggable so the lookup is tested without Slicer's DICOM browser. Which keywords are
read, and how a value maps to a field, is the checkpoint schema's business (the core's
``ClinicalSchema.prefill_from_dicom``).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

HeaderReader = Callable[[str, list[str]], dict]


def read_header_with_pydicom(path: str, keywords: list[str]) -> dict[str, Any]:
    """The values of ``keywords`` in the DICOM file ``path`` (pixels not read)."""
    import pydicom  # bundled with Slicer

    ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(keywords))
    out = {}
    for kw in keywords:
        value = getattr(ds, kw, None)
        if value is not None and str(value).strip():
            out[kw] = str(value)
    return out


class DicomHeaderSource:
    """``source(volume_node, keywords) -> {keyword: value}``; {} for a volume that did not come from DICOM."""

    def __init__(self, database_getter: Callable[[], Any], reader: HeaderReader = read_header_with_pydicom):
        self.database_getter = database_getter
        self.reader = reader

    def __call__(self, node, keywords: Iterable[str]) -> dict[str, Any]:
        keywords = [k for k in keywords if k]
        if node is None or not keywords:
            return {}
        uids = (node.GetAttribute("DICOM.instanceUIDs") or "").split()
        if not uids:
            return {}
        db = self.database_getter()
        if db is None:
            return {}
        for uid in uids[:3]:  # the first readable instance of the series
            path = db.fileForInstance(uid)
            if path:
                try:
                    return self.reader(str(path), keywords)
                except Exception:  # noqa: BLE001 - an unreadable header just means no prefill
                    continue
        return {}


def slicer_header_source() -> DicomHeaderSource:  # pragma: no cover - only real Slicer
    import slicer

    return DicomHeaderSource(lambda: getattr(slicer, "dicomDatabase", None))
