"""PNG / JPEG / TIFF: greyscale kept as stored, colour converted to luminance, default geometry flagged."""

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image as PILImage

from mmxai_core.errors import ImageReadError
from mmxai_core.io import read_geometry, read_image


def test_png_grey_8_and_16_bit_keep_values(tmp_path):
    grey8 = np.random.default_rng(0).integers(0, 256, (7, 11), dtype=np.uint8)
    PILImage.fromarray(grey8).save(tmp_path / "g8.png")
    grey16 = np.random.default_rng(1).integers(0, 65536, (5, 6), dtype=np.uint16)
    PILImage.fromarray(grey16).save(tmp_path / "g16.png")
    image = read_image(tmp_path / "g8.png")
    assert image.shape == (1, 7, 11) and image.array.dtype == np.uint8
    np.testing.assert_array_equal(image.array[0], grey8)
    assert image.meta == {"source_format": "png", "geometry_defaulted": True, "spacing_source": "default"}
    assert image.spacing == (1.0, 1.0, 1.0)
    image16 = read_image(tmp_path / "g16.png")
    np.testing.assert_array_equal(image16.array[0], grey16)
    assert np.issubdtype(image16.array.dtype, np.integer) and image16.array.max() == grey16.max()


def test_colour_photo_becomes_luminance(tmp_path):
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 255, 128, 0
    PILImage.fromarray(rgb).save(tmp_path / "c.png")
    PILImage.fromarray(rgb).convert("RGBA").save(tmp_path / "c_alpha.png")
    expected = round(0.299 * 255 + 0.587 * 128)
    for name in ("c.png", "c_alpha.png"):
        image = read_image(tmp_path / name)
        assert image.shape == (1, 4, 6) and image.meta["converted_to_luminance"] is True
        assert np.all(image.array == expected)
    # a JPEG: lossy, so only close
    PILImage.fromarray(rgb).save(tmp_path / "c.jpg", quality=95)
    jpeg = read_image(tmp_path / "c.jpg")
    assert jpeg.meta["source_format"] == "jpeg" and abs(float(jpeg.array.mean()) - expected) < 3


def test_jpeg_exif_orientation_is_applied(tmp_path):
    grey = np.zeros((4, 10), np.uint8)
    grey[0, 0] = 255
    exif = PILImage.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    PILImage.fromarray(grey).save(tmp_path / "r.jpg", exif=exif, quality=100)
    image = read_image(tmp_path / "r.jpg")
    assert image.shape == (1, 10, 4)
    assert read_geometry(tmp_path / "r.jpg").shape == (1, 10, 4)


def test_multipage_tiff_is_a_stack_and_matches_simpleitk(tmp_path):
    pages = [PILImage.fromarray(np.full((3, 5), v, np.uint8)) for v in (10, 20, 30)]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:])
    image = read_image(tmp_path / "stack.tif")
    assert image.shape == (3, 3, 5) and list(image.array[:, 0, 0]) == [10, 20, 30]
    np.testing.assert_array_equal(image.array, sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "stack.tif"))))
    assert read_geometry(tmp_path / "stack.tif").shape == (3, 3, 5)


def test_wrong_extension_is_sniffed_by_content(tmp_path):
    PILImage.fromarray(np.ones((2, 3), np.uint8)).save(tmp_path / "x.png")
    (tmp_path / "x.png").rename(tmp_path / "scan.dcm")
    assert read_image(tmp_path / "scan.dcm").meta["source_format"] == "png"


def test_colour_nrrd_needs_luminance_flag(tmp_path):
    rgb = sitk.GetImageFromArray(np.full((2, 3, 3), 100, np.uint8), isVector=True)
    sitk.WriteImage(rgb, str(tmp_path / "rgb.nrrd"))
    with pytest.raises(ImageReadError, match="3 components per voxel"):
        read_image(tmp_path / "rgb.nrrd")
    image = read_image(tmp_path / "rgb.nrrd", color_to_luminance=True)
    assert image.shape == (1, 2, 3) and np.all(image.array == 100)
