"""Tell which image format a file holds, from its first bytes and then its name.

Format names (also ``Image.meta['source_format']``): ``dicom``, ``dicom-series`` (a folder), ``nifti``,
``nrrd``, ``metaimage``, ``png``, ``jpeg``, ``tiff``, ``bmp``.
"""

from __future__ import annotations

from pathlib import Path

#: File-name endings and the format they announce (longest match wins, case-insensitive).
SUFFIX_FORMATS: dict[str, str] = {
    ".nii.gz": "nifti", ".nii": "nifti", ".nrrd": "nrrd", ".nhdr": "nrrd", ".mha": "metaimage",
    ".mhd": "metaimage", ".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".tif": "tiff", ".tiff": "tiff",
    ".bmp": "bmp", ".dcm": "dicom", ".dicom": "dicom", ".ima": "dicom",
}

ITK_FORMATS = ("nifti", "nrrd", "metaimage")
PHOTO_FORMATS = ("png", "jpeg", "tiff", "bmp")


def format_from_name(path: str | Path) -> str | None:
    """The format a file name announces by its ending, or None."""
    name = Path(path).name.lower()
    for suffix in sorted(SUFFIX_FORMATS, key=len, reverse=True):
        if name.endswith(suffix):
            return SUFFIX_FORMATS[suffix]
    return None


def format_from_bytes(head: bytes) -> str | None:
    """The format given away by a file's first 512 bytes (magic numbers), or None."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head.startswith(b"NRRD000"):
        return "nrrd"
    if len(head) >= 348 and head[344:348] in (b"n+1\x00", b"ni1\x00", b"n+2\x00", b"ni2\x00"):
        return "nifti"
    if head.startswith(b"BM") and len(head) >= 26:
        return "bmp"
    text = head.lstrip()
    if text.startswith((b"ObjectType", b"NDims")):
        return "metaimage"
    return None


def looks_like_text(head: bytes) -> bool:
    """True when the bytes decode as printable UTF-8 text."""
    if not head or b"\x00" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\r\n\t" for c in text)


def detect_format(path: Path) -> str | None:
    """The format of the file at ``path`` (magic bytes first, then the name), or None if unknown.

    A gzip file counts as NIfTI only when named ``*.nii.gz``. Unknown binary files may still be DICOM
    without a preamble: the DICOM reader decides (see :func:`mmxai_core.io.dicom_file.load_dataset`).
    """
    with open(path, "rb") as fh:
        head = fh.read(512)
    by_bytes = format_from_bytes(head)
    if by_bytes is not None:
        return by_bytes
    return format_from_name(path)
