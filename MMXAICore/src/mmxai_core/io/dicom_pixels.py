"""Decode the voxels of one DICOM object into modality values (high = bright), frames first.

* Decoding: pydicom (``Dataset.pixel_array``); for a compressed transfer syntax pydicom has no plugin for
  (e.g. JPEG-LS, 12-bit JPEG without pylibjpeg), SimpleITK/GDCM decodes instead.
* MONOCHROME1 (minimum = white) is inverted over the stored range given by BitsStored and
  PixelRepresentation, ``lo + hi - stored``, before the modality rescale: the same thing GDCM does, so
  both decoding routes give the same numbers.
* The modality LUT is applied: ``RescaleSlope`` / ``RescaleIntercept`` (per frame for enhanced objects,
  from ``PixelValueTransformationSequence``) or a ``ModalityLUTSequence``. Integral slope and intercept
  give the smallest of int16/int32 that holds the whole possible range (as GDCM), otherwise float32.
* Colour (RGB, YBR_*, PALETTE COLOR, several samples per pixel) is refused unless luminance conversion is
  asked for: Y = 0.299 R + 0.587 G + 0.114 B.

The problems raised here are :class:`PixelProblem` (a message without the path); the caller turns them
into :class:`~mmxai_core.errors.ImageReadError`.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mmxai_core.io._util import itk_reason, one_line, quiet_itk, rgb_to_luminance
from mmxai_core.io.dicom_geometry import functional_group, is_enhanced
from mmxai_core.utils.native_stderr import native_stderr_captured

GREYSCALE = ("MONOCHROME1", "MONOCHROME2")
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


class PixelProblem(ValueError):
    """The pixel data cannot be turned into an image (message names the problem, not the file)."""


def has_pixels(ds) -> bool:
    """True when the dataset carries pixel data of any kind."""
    return any(k in ds for k in PIXEL_KEYWORDS)


def photometric(ds) -> str:
    """PhotometricInterpretation, upper-case and stripped ("" if absent)."""
    return str(ds.get("PhotometricInterpretation", "") or "").strip().upper()


def is_color(ds) -> bool:
    """True for colour pixel data (several samples per pixel or a colour photometric interpretation)."""
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    pi = photometric(ds)
    return spp > 1 or (pi != "" and pi not in GREYSCALE)


def is_compressed(ds) -> bool:
    """True when the pixel data is encapsulated (compressed transfer syntax)."""
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        return bool(tsyntax is not None and tsyntax.is_compressed)
    except (AttributeError, ValueError):
        return False


def expected_bytes(ds, n_frames: int) -> int:
    """Bytes of native (uncompressed) PixelData the header announces."""
    bits = int(ds.get("BitsAllocated", 8) or 8)
    n = int(ds.Rows) * int(ds.Columns) * int(n_frames) * int(ds.get("SamplesPerPixel", 1) or 1)
    return math.ceil(n * bits / 8)


def check_native_length(ds, n_frames: int) -> None:
    """Refuse native PixelData shorter than the header announces (a truncated file)."""
    if "PixelData" not in ds or is_compressed(ds):
        return
    expected = expected_bytes(ds, n_frames)
    actual = len(ds.PixelData)
    if actual < expected:
        raise PixelProblem(f"pixel data is truncated: {actual:,} of {expected:,} bytes present (file cut "
                           "short or wrong Rows/Columns/BitsAllocated/NumberOfFrames)")


# ------------------------------------------------------------------------------------- decoding
def _decode_pydicom(ds) -> np.ndarray:
    return np.asarray(ds.pixel_array)


def _decode_sitk(path: Path) -> np.ndarray:
    import SimpleITK as sitk

    with quiet_itk():
        img = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(img)


@contextlib.contextmanager
def _decoder_messages(compressed: bool) -> Iterator[None]:
    """What a native codec (OpenJPEG, GDCM) prints to descriptor 2 while decoding compressed data: dropped
    when the decode fails (the PixelProblem says so), a warning each when it succeeds."""
    if not compressed:
        yield
        return
    with native_stderr_captured() as lines:
        yield  # an exception leaves here, and the lines with it
    for line in dict.fromkeys(lines):
        warnings.warn(f"pixel decoder: {line}", stacklevel=3)


def _frames_first(arr: np.ndarray, n_frames: int, spp: int) -> np.ndarray:
    """Reshape a decoded array to (F, R, C) or (F, R, C, S)."""
    single_ndim = 2 if spp == 1 else 3
    if arr.ndim == single_ndim:
        arr = arr[np.newaxis]
    if arr.shape[0] != n_frames:
        raise PixelProblem(f"decoded {arr.shape[0]} frames but the header announces {n_frames}")
    return arr


def _stored_range(ds) -> tuple[int, int]:
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)) or 16)
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def _invert_monochrome1(ds, arr: np.ndarray) -> np.ndarray:
    if np.issubdtype(arr.dtype, np.floating):
        return (arr.max() + arr.min() - arr).astype(arr.dtype)
    lo, hi = _stored_range(ds)
    info = np.iinfo(arr.dtype)
    return np.clip(lo + hi - arr.astype(np.int64), info.min, info.max).astype(arr.dtype)


def _rescale_per_frame(ds, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(slopes, intercepts), one per frame."""
    def pair(source) -> tuple[float, float]:
        slope = source.get("RescaleSlope") if source is not None else None
        intercept = source.get("RescaleIntercept") if source is not None else None
        return (float(slope) if slope not in (None, "") else 1.0,
                float(intercept) if intercept not in (None, "") else 0.0)

    top = pair(ds)
    if not is_enhanced(ds):
        return np.full(n_frames, top[0]), np.full(n_frames, top[1])
    slopes, intercepts = [], []
    for f in range(n_frames):
        item = functional_group(ds, f, "PixelValueTransformationSequence")
        s, i = pair(item) if item is not None and "RescaleSlope" in item else top
        slopes.append(s)
        intercepts.append(i)
    return np.array(slopes), np.array(intercepts)


def _integer_dtype_for(lo: float, hi: float) -> np.dtype | None:
    for dtype in (np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return np.dtype(dtype)
    return None


def _apply_modality(ds, arr: np.ndarray, n_frames: int) -> tuple[np.ndarray, bool]:
    """Modality LUT / rescale applied per frame; returns (values, whether anything changed)."""
    if "ModalityLUTSequence" in ds and not is_enhanced(ds):
        from pydicom.pixels import apply_modality_lut

        return np.asarray(apply_modality_lut(arr, ds)), True
    slopes, intercepts = _rescale_per_frame(ds, n_frames)
    if np.all(slopes == 1) and np.all(intercepts == 0):
        return arr, False
    if not (np.all(np.isfinite(slopes)) and np.all(np.isfinite(intercepts))) or np.any(slopes == 0):
        raise PixelProblem(f"invalid RescaleSlope/RescaleIntercept ({slopes[0]}, {intercepts[0]})")
    integral = np.all(slopes == np.round(slopes)) and np.all(intercepts == np.round(intercepts))
    out_dtype: np.dtype | None = None
    if integral and np.issubdtype(arr.dtype, np.integer):
        lo, hi = _stored_range(ds)
        ends = np.concatenate([slopes * lo + intercepts, slopes * hi + intercepts])
        out_dtype = _integer_dtype_for(float(ends.min()), float(ends.max()))
    if out_dtype is not None:
        out = (arr.astype(np.int64) * slopes.astype(np.int64)[:, None, None]
               + intercepts.astype(np.int64)[:, None, None]).astype(out_dtype)
    else:
        out = (arr.astype(np.float64) * slopes[:, None, None] + intercepts[:, None, None]).astype(np.float32)
    return out, True


def decode_pixels(ds, path: Path, n_frames: int, color_to_luminance: bool = False
                  ) -> tuple[np.ndarray, dict[str, Any]]:
    """Voxels of a DICOM object as modality values, shape (F, R, C), plus notes for ``meta``.

    Raises :class:`PixelProblem` for missing, truncated, undecodable or (unless ``color_to_luminance``)
    colour pixel data.
    """
    if not has_pixels(ds):
        raise PixelProblem("contains no pixel data")
    color = is_color(ds)
    pi = photometric(ds)
    if color and not color_to_luminance:
        raise PixelProblem(f"is a colour image (PhotometricInterpretation {pi or '?'}, SamplesPerPixel "
                           f"{ds.get('SamplesPerPixel', 1)}) where greyscale is expected; pass "
                           "color_to_luminance=True to convert it to luminance")
    check_native_length(ds, n_frames)
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    notes: dict[str, Any] = {}
    with _decoder_messages(is_compressed(ds)):
        try:
            arr = _decode_pydicom(ds)
            notes["pixel_decoder"] = "pydicom"
            by_gdcm = False
        except Exception as exc:  # no plugin for this syntax, or corrupt data
            if not is_compressed(ds):
                raise PixelProblem(f"cannot decode pixel data: {one_line(exc)}") from exc
            try:
                arr = _decode_sitk(path)
            except Exception as exc2:
                raise PixelProblem(f"cannot decode compressed pixel data "
                                   f"({ds.file_meta.TransferSyntaxUID.name}): pydicom: {one_line(exc, 150)}; "
                                   f"SimpleITK: {itk_reason(exc2)}") from exc2
            notes["pixel_decoder"] = "SimpleITK (GDCM)"
            by_gdcm = True  # GDCM has already inverted MONOCHROME1 and applied the modality rescale
        if color and pi == "PALETTE COLOR" and arr.ndim == 3:
            raise PixelProblem("compressed PALETTE COLOR pixel data cannot be converted here")
    if color:
        if pi == "PALETTE COLOR" and not by_gdcm:
            from pydicom.pixels import apply_color_lut

            arr = np.asarray(apply_color_lut(arr, ds))
        arr = _frames_first(arr, n_frames, 3)  # (F, R, C, 3) RGB by now
        arr = rgb_to_luminance(arr)
        notes["converted_to_luminance"] = True
        return arr, notes
    arr = _frames_first(arr, n_frames, spp)
    if by_gdcm:
        if pi == "MONOCHROME1":
            notes["monochrome1_inverted"] = True
        return arr, notes
    if pi == "MONOCHROME1":
        arr = _invert_monochrome1(ds, arr)
        notes["monochrome1_inverted"] = True
    arr, rescaled = _apply_modality(ds, arr, n_frames)
    if rescaled:
        notes["rescale_applied"] = True
    return arr, notes
