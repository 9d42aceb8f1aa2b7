"""The Image type keeps geometry consistent with SimpleITK."""

import numpy as np
import pytest

from mmxai_core.io import Image


def _oblique_direction(angle_deg: float = 30.0) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(a / 2), -np.sin(a / 2)], [0, np.sin(a / 2), np.cos(a / 2)]])
    return rz @ rx


def test_index_to_lps_matches_simpleitk_for_oblique_anisotropic_grid():
    img = Image(np.zeros((4, 5, 6), np.int16), spacing=(0.7, 0.9, 3.0), origin=(10, -20, 5),
                direction=_oblique_direction())
    s = img.to_sitk()
    for ijk in [(0, 0, 0), (5, 4, 3), (2, 1, 3)]:
        expected = np.array(s.TransformIndexToPhysicalPoint(ijk))
        got = (img.index_to_lps() @ np.array([*ijk, 1.0]))[:3]
        np.testing.assert_allclose(got, expected, atol=1e-9)


def test_sitk_round_trip_keeps_voxels_and_geometry():
    rng = np.random.default_rng(0)
    img = Image(rng.normal(size=(3, 4, 5)).astype(np.float32), (0.5, 0.6, 2.5), (1, 2, 3),
                _oblique_direction(17))
    back = Image.from_sitk(img.to_sitk())
    assert back.same_geometry(img, atol=1e-12)
    np.testing.assert_array_equal(back.array, img.array)


def test_ijk_to_ras_flips_x_and_y():
    img = Image(np.zeros((1, 2, 2)), origin=(5, 6, 7))
    ras = img.ijk_to_ras()
    np.testing.assert_allclose(ras[:3, 3], [-5, -6, 7])


def test_2d_array_becomes_one_slice_and_bad_spacing_is_refused():
    assert Image(np.zeros((3, 4))).shape == (1, 3, 4)
    with pytest.raises(ValueError, match="spacing"):
        Image(np.zeros((1, 2, 2)), spacing=(1, 0, 1))
