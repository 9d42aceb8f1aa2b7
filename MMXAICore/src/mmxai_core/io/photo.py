"""Read PNG, JPEG, TIFF and BMP images with Pillow.

* Greyscale stays as stored: 8-bit -> uint8, 16-bit -> uint16, 32-bit integer -> int32, float -> float32.
* Colour (RGB, RGBA, palette, CMYK, ...) becomes luminance Y = 0.299 R + 0.587 G + 0.114 B, rounded,
  uint8; alpha is ignored. ``meta['converted_to_luminance']`` says so.
* The JPEG/TIFF EXIF orientation is applied, so the array looks as a photo viewer shows it.
* A multi-page TIFF becomes a stack (pages, H, W) when all pages have the same size.
* These formats carry no patient geometry: spacing 1 mm, origin 0, identity direction,
  ``meta['geometry_defaulted'] = True``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from mmxai_core.errors import ImageReadError
from mmxai_core.io._util import MAX_VOXELS, check_voxel_count, one_line, rgb_to_luminance
from mmxai_core.io.geometry import ImageGeometry
from mmxai_core.io.image import Image

_GREY_MODES = {"L": np.uint8, "I;16": np.uint16, "I;16L": np.uint16, "I;16B": np.uint16, "I;16N": np.uint16,
               "I": np.int32, "F": np.float32}


def _open(path: Path):
    from PIL import Image as PILImage

    try:
        with warnings.catch_warnings():
            # Our own voxel limit decides; Pillow still refuses > 2x its MAX_IMAGE_PIXELS at open.
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            return PILImage.open(path)
    except Exception as exc:
        raise ImageReadError(path, f"cannot open the image: {type(exc).__name__}: {one_line(exc, 200)}"
                             ) from exc


def _meta(fmt: str, converted: bool = False) -> dict:
    meta = {"source_format": fmt, "geometry_defaulted": True, "spacing_source": "default"}
    if converted:
        meta["converted_to_luminance"] = True
    return meta


def read_photo_geometry(path: Path, fmt: str, *, max_voxels: int = MAX_VOXELS) -> ImageGeometry:
    """Size of the image (pages, H, W) with the default geometry."""
    with _open(path) as im:
        width, height = im.size
        pages = int(getattr(im, "n_frames", 1) or 1) if fmt == "tiff" else 1
        exif_rotated = fmt in ("jpeg", "tiff") and im.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    if exif_rotated:
        width, height = height, width
    problem = check_voxel_count((pages, height, width), max_voxels)
    if problem:
        raise ImageReadError(path, problem)
    return ImageGeometry((pages, height, width), meta=_meta(fmt))


def _page_array(page) -> tuple[np.ndarray, bool]:
    """One page as a 2-D array, and whether it was converted from colour."""
    from PIL import ImageOps

    page = ImageOps.exif_transpose(page)
    if page.mode in _GREY_MODES:
        return np.asarray(page, dtype=_GREY_MODES[page.mode]), False
    if page.mode == "1":
        return np.asarray(page.convert("L"), dtype=np.uint8), False
    if page.mode == "LA":
        return np.asarray(page.getchannel(0), dtype=np.uint8), False
    rgb = np.asarray(page.convert("RGB"))
    return rgb_to_luminance(rgb), True


def read_photo(path: Path, fmt: str, *, max_voxels: int = MAX_VOXELS) -> Image:
    """A PNG/JPEG/TIFF/BMP file as an :class:`Image` of shape (pages, H, W)."""
    geometry = read_photo_geometry(path, fmt, max_voxels=max_voxels)
    pages, converted = [], False
    try:
        with _open(path) as im:
            for index in range(geometry.shape[0]):
                im.seek(index)
                im.load()
                page, was_colour = _page_array(im)
                pages.append(page)
                converted = converted or was_colour
    except ImageReadError:
        raise
    except Exception as exc:  # truncated or corrupt image data
        raise ImageReadError(path, f"cannot decode the image: {type(exc).__name__}: {one_line(exc, 200)}"
                             ) from exc
    if len({p.shape for p in pages}) > 1:
        raise ImageReadError(path, f"has {len(pages)} pages of different sizes; they do not form one stack")
    if len({p.dtype for p in pages}) > 1:
        pages = [p.astype(np.float32) for p in pages]
    return Image(np.stack(pages), meta=_meta(fmt, converted))
