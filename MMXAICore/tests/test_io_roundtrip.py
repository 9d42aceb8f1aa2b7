"""write_image / read_image round trips keep voxels and geometry; writes are atomic."""

import numpy as np
import pytest
import SimpleITK as sitk

from mmxai_core.errors import ImageWriteError
from mmxai_core.io import Image, read_geometry, read_image, write_image


def rotation(angle_z_deg: float, angle_x_deg: float) -> np.ndarray:
    """Rotation about z, then about x: an oblique direction matrix (columns = i, j, k axes)."""
    a, b = np.deg2rad(angle_z_deg), np.deg2rad(angle_x_deg)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


def oblique_volume(dtype=np.int16, seed: int = 0) -> Image:
    """A (5, 6, 7) oblique (rotated about z and x), anisotropic (0.7 x 0.9 x 3.0 mm) volume."""
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.integer):
        array = rng.integers(-1000, 3000, size=(5, 6, 7)).astype(dtype)
    else:
        array = rng.normal(size=(5, 6, 7)).astype(dtype)
    return Image(array, spacing=(0.7, 0.9, 3.0), origin=(12.5, -30.25, 41.0), direction=rotation(30, 20),
                 meta={"Modality": "MR"})


@pytest.mark.parametrize("name", ["vol.nrrd", "vol.mha"])
@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_nrrd_and_mha_round_trip_is_exact(tmp_path, name, dtype):
    image = oblique_volume(dtype)
    path = write_image(image, tmp_path / name)
    back = read_image(path)
    assert back.array.dtype == image.array.dtype
    np.testing.assert_array_equal(back.array, image.array)
    np.testing.assert_allclose(back.spacing, image.spacing, atol=1e-6)
    np.testing.assert_allclose(back.origin, image.origin, atol=1e-6)
    np.testing.assert_allclose(back.direction, image.direction, atol=1e-6)
    np.testing.assert_allclose(back.ijk_to_ras(), image.ijk_to_ras(), atol=1e-6)
    assert back.meta["source_format"] == ("nrrd" if name.endswith("nrrd") else "metaimage")
    assert back.meta["geometry_defaulted"] is False


@pytest.mark.parametrize("name", ["vol.nii", "vol.nii.gz"])
@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_nifti_round_trip_within_float32(tmp_path, name, dtype):
    image = oblique_volume(dtype)
    path = write_image(image, tmp_path / name)
    back = read_image(path)
    assert back.array.dtype == image.array.dtype
    np.testing.assert_array_equal(back.array, image.array)
    np.testing.assert_array_equal(back.array, sitk.GetArrayFromImage(sitk.ReadImage(str(path))))
    np.testing.assert_allclose(back.spacing, image.spacing, atol=1e-4)
    np.testing.assert_allclose(back.origin, image.origin, atol=1e-4)
    np.testing.assert_allclose(back.direction, image.direction, atol=1e-5)
    assert back.meta["source_format"] == "nifti"


def test_read_geometry_matches_read_image_without_reading_voxels(tmp_path):
    image = oblique_volume()
    for name in ("g.nrrd", "g.nii.gz"):
        path = write_image(image, tmp_path / name)
        geometry = read_geometry(path)
        full = read_image(path)
        assert geometry.shape == full.shape == (5, 6, 7)
        assert geometry.same_geometry(full, atol=1e-9) and full.same_geometry(geometry, atol=1e-9)
        np.testing.assert_allclose(geometry.ijk_to_ras(), full.ijk_to_ras(), atol=1e-9)


def test_matches_simpleitk_physical_points(tmp_path):
    image = oblique_volume()
    path = write_image(image, tmp_path / "p.nrrd")
    ref = sitk.ReadImage(str(path))
    back = read_image(path)
    for ijk in [(0, 0, 0), (6, 5, 4), (3, 1, 2)]:
        expected = np.array(ref.TransformIndexToPhysicalPoint(ijk))
        np.testing.assert_allclose((back.index_to_lps() @ [*ijk, 1])[:3], expected, atol=1e-9)


def test_2d_image_and_bool_mask_round_trip(tmp_path):
    photo = Image(np.arange(12, dtype=np.uint8).reshape(3, 4), spacing=(0.1, 0.2, 1.0), origin=(1, 2, 0))
    back = read_image(write_image(photo, tmp_path / "two_d.nrrd"))
    assert back.shape == (1, 3, 4)
    np.testing.assert_array_equal(back.array, photo.array)
    mask = Image(oblique_volume().array > 0, (0.7, 0.9, 3.0))
    back = read_image(write_image(mask, tmp_path / "mask.nii.gz"))
    assert back.array.dtype == np.uint8
    np.testing.assert_array_equal(back.array, mask.array.astype(np.uint8))


@pytest.mark.parametrize("name", ["vol.png", "vol.dcm", "vol", "vol.nhdr", ".nrrd"])
def test_unsupported_endings_are_refused(tmp_path, name):
    with pytest.raises(ImageWriteError, match="unsupported file name ending"):
        write_image(oblique_volume(), tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_bad_destinations_are_refused(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ImageWriteError) as info:
        write_image(oblique_volume(), tmp_path / "afile" / "vol.nrrd")
    assert str(tmp_path / "afile" / "vol.nrrd") in str(info.value)
    (tmp_path / "adir.nrrd").mkdir()
    with pytest.raises(ImageWriteError, match="is a folder"):
        write_image(oblique_volume(), tmp_path / "adir.nrrd")
    with pytest.raises(ImageWriteError, match="dtype"):
        write_image(Image(np.zeros((2, 2, 2), np.complex64)), tmp_path / "c.nrrd")


def test_failed_write_leaves_no_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    dest = tmp_path / "vol.nrrd"
    write_image(oblique_volume(seed=1), dest)
    before = dest.read_bytes()

    def half_write(image, path, *args, **kwargs):
        with open(path, "wb") as fh:
            fh.write(b"NRRD0004\npartial")
        raise RuntimeError("Exception thrown in SimpleITK WriteImage: x.cxx:1:\nsitk::ERROR: disk full")

    monkeypatch.setattr(sitk, "WriteImage", half_write)
    with pytest.raises(ImageWriteError, match="disk full"):
        write_image(oblique_volume(seed=2), dest)
    with pytest.raises(ImageWriteError):
        write_image(oblique_volume(seed=2), tmp_path / "new.nii.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vol.nrrd"]
    assert dest.read_bytes() == before
