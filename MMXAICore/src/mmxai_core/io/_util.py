"""Small helpers shared by the readers and writers: quiet SimpleITK calls, one-line error reasons, limits.

Nothing here is public API.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import numpy as np

#: Largest number of voxels (all frames x rows x columns x samples) a reader allocates. A header that
#: declares more is refused before any voxel is read (2**31 voxels = 8 GiB as float32).
MAX_VOXELS = 2**31


@contextlib.contextmanager
def quiet_itk() -> Iterator[None]:
    """Silence ITK/GDCM warnings printed straight to stderr while SimpleITK reads or writes.

    Besides ITK's own warning switch, what ITK's format libraries (MetaIO, niftilib, GDCM) print to file
    descriptor 2 is captured and dropped (echoed with ``MMXAI_DEBUG``): a damaged file otherwise adds
    lines such as "MetaImage: M_Read: Error parsing file" to a CLI's one-line refusal. The previous global
    setting is restored afterwards. Errors still raise as exceptions.
    """
    import SimpleITK as sitk

    from mmxai_core.utils.native_stderr import native_stderr_captured

    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        with native_stderr_captured():
            yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)


_ITK_PREFIX = re.compile(r"^.*?sitk::ERROR:\s*", re.DOTALL)


def itk_reason(exc: BaseException) -> str:
    """The human part of a SimpleITK/ITK exception message, on one line, without C++ file:line noise."""
    text = str(exc)
    if "sitk::ERROR:" in text:
        text = _ITK_PREFIX.sub("", text)
    text = re.sub(r"Exception thrown in SimpleITK \w+:\s*", "", text)
    # ITK exceptions often repeat "itk::ERROR: ImageIO(0x...): " before the description.
    text = re.sub(r"(itk::|ITK )ERROR:\s*(\w+\(0x[0-9a-fA-F]+\):\s*)?", "", text)
    text = re.sub(r"\S+\.(cxx|hxx|h|cpp|txx):\d+:?", "", text)
    return one_line(text)


def one_line(text: str, limit: int = 300) -> str:
    """Collapse whitespace and newlines, strip, and cut to ``limit`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_voxel_count(dims: tuple[int, ...] | list[int], max_voxels: int) -> str | None:
    """A problem string when ``dims`` (any order, including samples per pixel) are absurd, else None."""
    dims = [int(d) for d in dims]
    if any(d <= 0 for d in dims):
        return f"header declares an empty or negative image size {tuple(dims)}"
    total = int(np.prod(np.array(dims, dtype=object)))
    if total > max_voxels:
        return (f"header declares {' x '.join(map(str, dims))} = {total:,} voxels, more than the limit of "
                f"{max_voxels:,} (corrupt header?); refused before reading the voxels")
    return None


def rgb_to_luminance(rgb: np.ndarray) -> np.ndarray:
    """Luminance Y = 0.299 R + 0.587 G + 0.114 B (ITU-R BT.601) of an array (..., 3 or 4).

    Integer input gives the same integer dtype, rounded; float input gives float32. An alpha channel is
    ignored.
    """
    rgb = np.asarray(rgb)
    y = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    if np.issubdtype(rgb.dtype, np.integer):
        info = np.iinfo(rgb.dtype)
        return np.clip(np.rint(y), info.min, info.max).astype(rgb.dtype)
    return y.astype(np.float32)
