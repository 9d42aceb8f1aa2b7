"""Geometry of the image preprocessing: masks to model space and back, exact original grid, JSON records.

Inputs are synthetic: an oblique (rotated about two axes, axis flips), anisotropic MR-like volume, a 2-D
mammogram-like right breast, and volumes smaller / larger than the model window.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from mmxai_core.data.image_preprocess import (Grid, ImagePreprocessConfig, ImagePreprocessor,
                                              PreprocessRecord, to_model_space, to_original_grid)
from mmxai_core.data.preprocess.geometry import reorient_grid, resampled_grid
from mmxai_core.errors import PreprocessingError
from mmxai_core.io import Image

OBLIQUE = Rotation.from_euler("xz", [20.0, 30.0], degrees=True).as_matrix() @ np.diag([-1.0, 1.0, -1.0])


def _points(image: Image) -> np.ndarray:
    """LPS mm of every voxel, shape (Z, Y, X, 3)."""
    k, j, i = np.indices(image.shape)
    ijk = np.stack([i, j, k], axis=-1).astype(np.float64)
    m = image.index_to_lps()
    return ijk @ m[:3, :3].T + m[:3, 3]


def _ellipsoid(image: Image, centre_mm, radii_mm) -> np.ndarray:
    p = (_points(image) - np.asarray(centre_mm)) / np.asarray(radii_mm)
    return (p ** 2).sum(axis=-1) <= 1.0


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return 2.0 * (a & b).sum() / (a.sum() + b.sum())


def _centroid_index(mask: np.ndarray) -> np.ndarray:
    return np.argwhere(mask.astype(bool)).mean(axis=0)  # (k, j, i)


def _assert_exact_grid(back: Image, image: Image) -> None:
    assert back.shape == image.shape
    np.testing.assert_allclose(back.spacing, image.spacing, rtol=0, atol=1e-6)
    np.testing.assert_allclose(back.origin, image.origin, rtol=0, atol=1e-6)
    np.testing.assert_allclose(back.direction, image.direction, rtol=0, atol=1e-6)


def _assert_round_trip(image: Image, mask: np.ndarray, record: PreprocessRecord) -> np.ndarray:
    """Mask -> model space -> original grid: Dice >= 0.95, centroid within one voxel, exact grid."""
    model_mask = to_model_space(image.with_array(mask.astype(np.uint8)), record)
    assert model_mask.shape == record.model_shape and model_mask.dtype == np.uint8
    assert model_mask.sum() > 0
    back = to_original_grid(model_mask, record, interpolation="nearest")
    _assert_exact_grid(back, image)
    assert _dice(back.array, mask) >= 0.95
    assert np.all(np.abs(_centroid_index(back.array) - _centroid_index(mask)) < 1.0)
    return model_mask


@pytest.fixture(scope="module")
def oblique_case():
    shape = (24, 160, 140)                    # Z, Y, X
    image = Image(np.zeros(shape, np.float32), (0.7, 0.9, 3.0), (-40.0, 25.0, -10.0), OBLIQUE,
                  {"Modality": "MR"})
    pts = _points(image)
    centre = pts.reshape(-1, 3).mean(axis=0)
    body = _ellipsoid(image, centre, (40.0, 50.0, 60.0))
    lesion = _ellipsoid(image, centre + np.array([8.0, -6.0, 5.0]), (14.0, 10.0, 9.0))
    rng = np.random.default_rng(0)
    arr = np.where(body, 300.0, 5.0) + 200.0 * lesion + rng.normal(0.0, 5.0, shape)
    return image.with_array(arr.astype(np.float32)), lesion


def test_oblique_anisotropic_mask_round_trip_with_crop(oblique_case):
    image, lesion = oblique_case
    cfg = ImagePreprocessConfig(target_spacing_xy=(1.0, 1.0), output_size_hw=(96, 96), n4="off")
    out, record = ImagePreprocessor(cfg).apply(image)
    assert out.dtype == np.float32 and out.shape == record.model_shape
    assert out.shape[1:] == (96, 96)
    assert record.reorientation["flips"] != [False, False, False]           # the flips are exercised
    assert sum(record.crop_pad["crop_before"]) + sum(record.crop_pad["crop_after"]) > 0
    assert record.steps[:2] == ["reorient", "intensity"] and "crop_pad" in record.steps
    np.testing.assert_allclose(record.model.spacing[:2], (1.0, 1.0))
    model_mask = _assert_round_trip(image, lesion, record)
    # the image and the mask went through the same geometry: the bright lesion is under the model mask
    inside, outside = out[model_mask.astype(bool)].mean(), out[~model_mask.astype(bool)].mean()
    assert inside > outside + 1.0


def test_model_grid_keeps_physical_positions(oblique_case):
    """A field linear in LPS mm, interpolated linearly, must read the same at each model voxel's
    physical position: checks reorientation, resampling, crop offsets and flips together."""
    image, _ = oblique_case
    coeff = np.array([1.0, -2.0, 0.5])
    ramp = (_points(image) @ coeff + 1000.0).astype(np.float32)
    cfg = ImagePreprocessConfig(target_spacing_xy=(1.3, 1.1), target_spacing_z=2.0, output_size_hw=(80, 120),
                                n4="off", intensity="none", antialias=False, laterality="tissue")
    out, record = ImagePreprocessor(cfg).apply(image.with_array(ramp))
    k, j, i = np.indices(out.shape)
    ijk = np.stack([i, j, k], axis=-1).reshape(-1, 3).astype(np.float64)
    m = record.model.index_to_lps()
    pts = ijk @ m[:3, :3].T + m[:3, 3]
    # keep the model voxels inside the original grid (continuous index within [0, n - 1])
    cont = (pts - np.asarray(image.origin)) @ np.linalg.inv(image.direction @ np.diag(image.spacing)).T
    inside = np.all((cont >= 0) & (cont <= np.asarray(image.size_xyz) - 1), axis=1)
    assert inside.mean() > 0.2
    np.testing.assert_allclose(out.reshape(-1)[inside], pts[inside] @ coeff + 1000.0, atol=2e-3)


def test_reorientation_matches_sitk_dicomorient():
    rng = np.random.default_rng(3)
    for _ in range(6):
        rot = Rotation.from_euler("xyz", rng.uniform(-35, 35, 3), degrees=True).as_matrix()
        perm = rng.permutation(3)
        signs = rng.choice([-1.0, 1.0], 3)
        direction = rot[:, perm] * signs
        image = Image(np.zeros((5, 7, 9), np.float32), (0.7, 0.9, 3.0), (1.0, -2.0, 3.0), direction)
        for code in ("LPS", "RAS", "SPL"):
            ref = sitk.DICOMOrient(image.to_sitk(), code)
            grid, _ = reorient_grid(Grid.of(image), code)
            assert grid.size == ref.GetSize()
            np.testing.assert_allclose(grid.spacing, ref.GetSpacing(), atol=1e-9)
            np.testing.assert_allclose(grid.origin, ref.GetOrigin(), atol=1e-9)
            np.testing.assert_allclose(grid.direction, ref.GetDirection(), atol=1e-9)


def _mammogram(side: str, meta_laterality: str | None):
    """(1, 300, 240) image at 0.1 mm: a half-ellipse breast against the chest wall on ``side`` and a
    dense round lesion inside it; returns (image, lesion mask)."""
    y, x = np.mgrid[:300, :240].astype(np.float64)
    wall_x = 239.0 if side == "R" else 0.0
    breast = ((x - wall_x) / 190.0) ** 2 + ((y - 150.0) / 130.0) ** 2 <= 1.0
    lesion_x = wall_x - 80.0 if side == "R" else wall_x + 80.0
    lesion = (x - lesion_x) ** 2 + (y - 130.0) ** 2 <= 30.0 ** 2
    arr = np.where(breast, 1500.0, 40.0) + 800.0 * lesion
    arr[10:25, 20:60] = 4000.0 if side == "R" else arr[10:25, 20:60]   # a burned-in label on the far side
    meta = {"Modality": "MG"}
    if meta_laterality:
        meta["ImageLaterality"] = meta_laterality
    image = Image(arr[np.newaxis].astype(np.float32), (0.1, 0.1, 1.0), (12.0, -7.0, 0.0), np.eye(3), meta)
    return image, lesion[np.newaxis]


@pytest.mark.parametrize("meta_laterality", ["R", None])
def test_mammogram_right_breast_is_flipped_and_round_trips(meta_laterality):
    image, lesion = _mammogram("R", meta_laterality)
    cfg = ImagePreprocessConfig(target_spacing_xy=(0.2, 0.2), output_size_hw=(128, 128))
    out, record = ImagePreprocessor(cfg).apply(image)
    assert out.shape == (1, 128, 128)
    assert record.intensity["mode"] == "percentile"
    assert record.laterality["flipped"] is True
    assert record.laterality["source"] == ("meta:ImageLaterality" if meta_laterality else "tissue")
    assert "laterality_flip" in record.steps
    # the resampled image is 120 columns x 150 rows: padded in x, cropped in y
    assert record.crop_pad["pad_before"][0] > 0 and record.crop_pad["crop_before"][1] > 0
    # the breast now faces the canonical way: tissue on the left half of the array
    half = out.shape[2] // 2
    assert out[0, :, :half].sum() > 2 * out[0, :, half:].sum()
    model_mask = _assert_round_trip(image, lesion, record)
    assert np.argwhere(model_mask[0])[:, 1].mean() < half  # the lesion moved with the flip


def test_laterality_flip_is_an_exact_mirror_of_the_unflipped_window():
    image, _ = _mammogram("R", "R")
    cfg = dict(target_spacing_xy=(0.2, 0.2), output_size_hw=(128, 128))
    flipped, rec_f = ImagePreprocessor(ImagePreprocessConfig(**cfg)).apply(image)
    plain, rec_p = ImagePreprocessor(ImagePreprocessConfig(laterality="off", **cfg)).apply(image)
    assert rec_f.laterality["flipped"] and rec_p.laterality is None
    np.testing.assert_allclose(flipped, plain[..., ::-1], atol=1e-5)


def test_resampling_keeps_the_field_of_view():
    """Outer voxel corners of the resampled grid coincide with the native ones (sizes divide evenly)."""
    grid = Grid((240, 300, 10), (0.1, 0.1, 2.0), (12.0, -7.0, 3.0), OBLIQUE.reshape(-1))
    new = resampled_grid(grid, (0.4, 0.3, 5.0))
    assert new.size == (60, 100, 4)

    def corners(g: Grid) -> np.ndarray:
        lo = np.full(3, -0.5)
        hi = np.asarray(g.size) - 0.5
        m = g.index_to_lps()
        return np.array([m[:3, :3] @ c + m[:3, 3] for c in (lo, hi)])

    np.testing.assert_allclose(corners(new), corners(grid), atol=1e-9)


def test_left_breast_is_not_flipped():
    image, lesion = _mammogram("L", "L")
    out, record = ImagePreprocessor(ImagePreprocessConfig(target_spacing_xy=(0.2, 0.2),
                                                          output_size_hw=(128, 128))).apply(image)
    assert record.laterality["flipped"] is False and "laterality_flip" not in record.steps
    _assert_round_trip(image, lesion, record)


def test_laterality_off_for_mr_in_auto_mode(oblique_case):
    image, _ = oblique_case
    _, record = ImagePreprocessor(ImagePreprocessConfig(n4="off", output_size_hw=(32, 32))).apply(image)
    assert record.laterality is None


@pytest.mark.parametrize("shape,target_hw,kind", [((6, 40, 50), (96, 80), "pad"),
                                                   ((6, 150, 170), (64, 72), "crop")])
@pytest.mark.parametrize("crop", ["center", "foreground"])
def test_crop_and_pad_round_trip(shape, target_hw, kind, crop):
    direction = Rotation.from_euler("yz", [15.0, -25.0], degrees=True).as_matrix()
    image = Image(np.zeros(shape, np.float32), (0.8, 0.8, 2.5), (5.0, 6.0, 7.0), direction, {"Modality": "CT"})
    pts = _points(image).reshape(-1, 3)
    centre = pts.mean(axis=0) + np.array([3.0, -2.0, 0.0])
    lesion = _ellipsoid(image, centre, (9.0, 7.0, 6.0))
    arr = np.where(_ellipsoid(image, centre, (60.0, 50.0, 40.0)), 40.0, -1000.0) + 100.0 * lesion
    image = image.with_array(arr.astype(np.float32))
    cfg = ImagePreprocessConfig(target_spacing_xy=(1.0, 1.0), output_size_hw=target_hw, crop=crop)
    out, record = ImagePreprocessor(cfg).apply(image)
    assert out.shape == (shape[0], *target_hw)                          # z untouched
    cp = record.crop_pad
    if kind == "pad":
        assert min(cp["pad_before"]) > 0 and min(cp["pad_after"]) > 0 and max(cp["crop_before"]) == 0
        assert out[:, 0, 0].tolist() == [record.pad_value] * shape[0]
    else:
        assert min(cp["crop_before"]) > 0 and max(cp["pad_before"]) == 0
    model_lesion = _assert_round_trip(image, lesion, record)
    if kind == "crop" and crop == "foreground":   # the window is centred on the body (lesion = its centre)
        centre = (np.asarray(target_hw) - 1) / 2.0
        assert np.all(np.abs(_centroid_index(model_lesion)[1:] - centre) <= 1.5)


def test_heatmap_back_on_original_grid_is_float_and_zero_outside(oblique_case):
    image, _ = oblique_case
    _, record = ImagePreprocessor(ImagePreprocessConfig(n4="off", output_size_hw=(48, 48))).apply(image)
    heat = np.ones(record.model_shape, np.float32)
    back = to_original_grid(heat, record)                                # linear by default
    _assert_exact_grid(back, image)
    assert back.array.dtype == np.float32
    assert back.array.max() == pytest.approx(1.0) and back.array.min() == 0.0  # cropped-away voxels are 0
    assert back.meta == {"Modality": "MR"}


def test_record_json_round_trip_gives_identical_results(oblique_case, tmp_path):
    image, lesion = oblique_case
    cfg = ImagePreprocessConfig(target_spacing_xy=(1.2, 0.8), output_size_hw=(64, 80), n4="off")
    out, record = ImagePreprocessor(cfg).apply(image)
    again = PreprocessRecord.from_dict(json.loads(json.dumps(record.to_dict())))
    assert again == record
    record.save(tmp_path / "rec.json")
    loaded = PreprocessRecord.load(tmp_path / "rec.json")
    assert loaded == record
    heat = np.random.default_rng(1).random(record.model_shape).astype(np.float32)
    a, b = to_original_grid(heat, record), to_original_grid(heat, loaded)
    assert np.array_equal(a.array, b.array) and a.same_geometry(b, atol=0.0)
    m = lesion.astype(np.uint8)
    assert np.array_equal(to_model_space(m, record), to_model_space(m, loaded))
    # the same config applied again gives the same array and record
    out2, record2 = ImagePreprocessor(ImagePreprocessConfig.from_dict(record.config)).apply(image)
    assert np.array_equal(out, out2) and record2 == record


def test_bool_mask_and_shape_errors(oblique_case):
    image, lesion = oblique_case
    _, record = ImagePreprocessor(ImagePreprocessConfig(n4="off", output_size_hw=(40, 40))).apply(image)
    model_mask = to_model_space(lesion, record)
    assert model_mask.dtype == bool
    assert to_original_grid(model_mask, record, interpolation="nearest").array.dtype == bool
    with pytest.raises(PreprocessingError, match="model_array"):
        to_original_grid(np.zeros((3, 40, 40)), record)
    with pytest.raises(PreprocessingError, match="interpolation"):
        to_original_grid(model_mask, record, interpolation="cubic")
    shifted = Image(lesion, image.spacing, (0.0, 0.0, 0.0), image.direction)
    with pytest.raises(PreprocessingError, match="geometry"):
        to_model_space(shifted, record)
