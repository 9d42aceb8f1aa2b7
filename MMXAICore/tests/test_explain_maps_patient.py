"""Maps back onto the patient's grid: oblique anisotropic volumes, flipped mammograms, files, end to end.

Geometry is sacred: a hot spot at a known model voxel must land on the patient voxel at the same physical
(LPS) position, and every written file must have exactly the input's size, spacing, origin and direction.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from scipy.spatial.transform import Rotation
from torch import nn

from mmxai_core.data.image_preprocess import ImagePreprocessConfig, ImagePreprocessor, to_model_space
from mmxai_core.explain.binning import HeatmapBins
from mmxai_core.explain.gradcam import calibrate_cam_scale
from mmxai_core.explain.to_patient import (explain_image, heatmap_to_patient, map_to_patient,
                                           write_heatmap_files)
from mmxai_core.io import Image, read_image
from mmxai_core.model import create_model, model_config

OBLIQUE = Rotation.from_euler("xz", [20.0, 30.0], degrees=True).as_matrix() @ np.diag([-1.0, 1.0, -1.0])
FIELDS = [("age", "numeric", 0), ("grade", "categorical", 3), ("er", "categorical", 2), ("size", "numeric", 0)]
VALUES = np.array([0.4, 2.0, 1.0, 0.0], np.float32)
MISSING = np.array([False, False, False, True])


def points(image: Image) -> np.ndarray:
    """LPS mm of every voxel, (Z, Y, X, 3)."""
    k, j, i = np.indices(image.shape)
    ijk = np.stack([i, j, k], axis=-1).astype(np.float64)
    m = image.index_to_lps()
    return ijk @ m[:3, :3].T + m[:3, 3]


def lps_of(grid_matrix: np.ndarray, kji) -> np.ndarray:
    k, j, i = kji
    return (grid_matrix @ np.array([i, j, k, 1.0]))[:3]


def index_distance(image: Image, lps_a: np.ndarray, lps_b: np.ndarray) -> np.ndarray:
    """|a - b| in patient voxel units per index axis (i, j, k)."""
    return np.abs(np.linalg.inv(image.direction @ np.diag(image.spacing)) @ (lps_a - lps_b))


def assert_same_grid(a: Image, b: Image) -> None:
    assert a.shape == b.shape
    np.testing.assert_allclose(a.spacing, b.spacing, rtol=0, atol=1e-9)
    np.testing.assert_allclose(a.origin, b.origin, rtol=0, atol=1e-9)
    np.testing.assert_allclose(a.direction, b.direction, rtol=0, atol=1e-9)


def oblique_volume(shape=(10, 70, 60)) -> Image:
    """Oblique (rotated about two axes, flipped axes), anisotropic 0.7 x 0.9 x 3.0 mm MR-like volume with
    an ellipsoid body and a bright blob."""
    image = Image(np.zeros(shape, np.float32), (0.7, 0.9, 3.0), (-40.0, 25.0, -10.0), OBLIQUE, {"Modality": "MR"})
    pts = points(image)
    centre = pts.reshape(-1, 3).mean(axis=0)
    body = (((pts - centre) / np.array([18.0, 26.0, 20.0])) ** 2).sum(-1) <= 1.0
    blob = (((pts - centre - np.array([5.0, -4.0, 3.0])) / 5.0) ** 2).sum(-1) <= 1.0
    rng = np.random.default_rng(0)
    arr = np.where(body, 300.0, 5.0) + 400.0 * blob + rng.normal(0.0, 5.0, shape)
    return image.with_array(arr.astype(np.float32))


def right_mammogram():
    """(1, 150, 120) at 0.2 mm: a right breast (chest wall at the last column) with a dense lesion."""
    y, x = np.mgrid[:150, :120].astype(np.float64)
    breast = ((x - 119.0) / 95.0) ** 2 + ((y - 75.0) / 65.0) ** 2 <= 1.0
    lesion = (x - 75.0) ** 2 + (y - 62.0) ** 2 <= 9.0 ** 2
    arr = np.where(breast, 1500.0, 40.0) + 900.0 * lesion
    meta = {"Modality": "MG", "ImageLaterality": "R"}
    image = Image(arr[np.newaxis].astype(np.float32), (0.2, 0.2, 1.0), (12.0, -7.0, 0.0), np.eye(3), meta)
    return image, lesion[np.newaxis]


# ----------------------------------------------------------------------------------------- (a) oblique volume
def test_oblique_hot_spot_lands_on_the_same_physical_point_and_files_keep_the_grid(tmp_path):
    image = oblique_volume()
    cfg = ImagePreprocessConfig(target_spacing_xy=(1.0, 1.0), output_size_hw=(40, 40), n4="off")
    arr, record = ImagePreprocessor(cfg).apply(image)
    assert record.reorientation["flips"] != [False, False, False]
    assert sum(record.crop_pad["crop_before"]) + sum(record.crop_pad["pad_before"]) > 0
    model_m = record.model.index_to_lps()
    inv_patient = np.linalg.inv(image.index_to_lps())
    # model voxels whose physical position is well inside the patient's grid
    k, j, i = np.indices(arr.shape)
    ijk1 = np.stack([i, j, k, np.ones_like(i)], -1).reshape(-1, 4).astype(float)
    cont = (ijk1 @ model_m.T) @ inv_patient.T
    size = np.array(image.size_xyz)
    inside = np.all((cont[:, :3] >= 1) & (cont[:, :3] <= size - 2), axis=1)
    candidates = np.flatnonzero(inside)
    assert len(candidates) > 100
    rng = np.random.default_rng(1)
    for flat in rng.choice(candidates, 4, replace=False):
        kji = np.unravel_index(flat, arr.shape)
        heat = np.zeros(arr.shape, np.float32)
        heat[kji] = 1.0
        back = map_to_patient(heat, record)
        assert_same_grid(back, image)
        hit = np.unravel_index(np.argmax(back.array), back.shape)
        dist = index_distance(image, lps_of(image.index_to_lps(), hit), lps_of(model_m, kji))
        assert np.all(dist < 1.0), (kji, hit, dist)
    # written files: exactly the input's grid
    heat = np.zeros(arr.shape, np.float32)
    heat[kji] = 1.0
    bins = HeatmapBins()
    patient_heat, label = heatmap_to_patient(heat, record, bins)
    files = write_heatmap_files(tmp_path, patient_heat, label, bins)
    for key in ("heatmap", "heatmap_label"):
        read = read_image(files[key])
        assert_same_grid(read, image)
    read_heat, read_label = read_image(files["heatmap"]), read_image(files["heatmap_label"])
    assert read_heat.array.dtype == np.float32 and read_label.array.dtype == np.uint8
    np.testing.assert_array_equal(read_label.array, bins.label(read_heat.array))
    assert read_label.array.max() >= 1
    assert not list(tmp_path.glob(".*tmp*"))                               # atomic: no temp files left


# ----------------------------------------------------------------------------------------- (b) mammogram
def test_flipped_mammogram_hot_spot_lands_on_the_lesion_side():
    image, lesion = right_mammogram()
    cfg = ImagePreprocessConfig(target_spacing_xy=(0.4, 0.4), output_size_hw=(64, 64))
    arr, record = ImagePreprocessor(cfg).apply(image)
    assert record.laterality["flipped"] is True and "laterality_flip" in record.steps
    model_lesion = to_model_space(image.with_array(lesion.astype(np.uint8)), record)
    kji = tuple(int(round(v)) for v in np.argwhere(model_lesion).mean(axis=0))
    assert kji[2] < 32                                     # in model space the lesion is on the left half
    heat = np.zeros(arr.shape, np.float32)
    heat[kji] = 1.0
    back = map_to_patient(heat, record)
    assert_same_grid(back, image)
    hit = np.unravel_index(np.argmax(back.array), back.shape)
    assert hit[2] > 60 and lesion[hit]                     # back on the right half, on the lesion
    dist_mm = np.linalg.norm(lps_of(image.index_to_lps(), hit) - lps_of(record.model.index_to_lps(), kji))
    assert dist_mm <= 0.4                                  # within one model voxel (0.4 mm)


# ----------------------------------------------------------------------------------------- (c) end to end
def make_model():
    cfg = dict(embed_dim=32, depth=1, num_heads=4, fusion_heads=4, mil_hidden=16, trunk_out_index=2,
               image_size=64, dropout=0.0, slice_chunk=4)
    model = create_model(model_config("tiny", clinical_fields=FIELDS, **cfg), seed=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.reset_parameters()
    with torch.no_grad():
        model.head.fc.weight.mul_(50.0)
    return model.eval()


@pytest.fixture(scope="module")
def model():
    return make_model()


@pytest.mark.parametrize("kind", ["volume", "mammogram"])
def test_explain_image_end_to_end(model, tmp_path, kind):
    if kind == "volume":
        image = oblique_volume()
        cfg = ImagePreprocessConfig(target_spacing_xy=(1.0, 1.0), output_size_hw=(64, 64), n4="off")
    else:
        image, _ = right_mammogram()
        cfg = ImagePreprocessConfig(target_spacing_xy=(0.4, 0.4), output_size_hw=(64, 64))
    pre = ImagePreprocessor(cfg)
    arr, record = pre.apply(image)
    x = torch.from_numpy(arr)[None, :, None]
    scale = calibrate_cam_scale(model, [(x, torch.from_numpy(VALUES)[None], torch.from_numpy(MISSING)[None])])
    ex = explain_image(model, image, VALUES, MISSING, preprocessor=pre, cam_scale=scale,
                       class_names=["benign", "malignant"], out_dir=tmp_path, write_maps=True, slice_chunk=3)
    z = arr.shape[0]
    assert ex.heatmap_model.shape == (z, 64, 64) and ex.heatmap_raw_model.shape == (z, 64, 64)
    assert ex.target_class == 1 and ex.class_name == "malignant"
    with torch.no_grad():
        prob = model(x, None, None, torch.from_numpy(VALUES)[None], torch.from_numpy(MISSING)[None]).probs[0, 1]
    assert ex.probability == pytest.approx(float(prob), abs=1e-5)
    assert ex.normalisation["mode"] == "model" and ex.normalisation["scale"] == scale
    assert set(ex.timings) >= {"preprocess", "gradcam", "rollout", "crossmodal", "to_patient", "write", "total"}
    assert list(ex.crossmodal) == [f[0] for f in FIELDS] and ex.rollout is not None
    assert ex.slice_weights.shape == (z,)
    # without write_maps the patient-grid rollout and cross-modal maps are resampled only when read
    lean = explain_image(model, image, VALUES, MISSING, preprocessor=pre, cam_scale=scale, slice_chunk=3)
    assert not lean._on_patient_grid
    assert_same_grid(lean.crossmodal["er"], image)
    assert_same_grid(lean.rollout, image)
    np.testing.assert_array_equal(lean.crossmodal["er"].array, ex.crossmodal["er"].array)
    assert set(lean._on_patient_grid) == {"rollout", "crossmodal"}
    # files
    names = {"heatmap.nrrd", "heatmap_label.nrrd", "heatmap_bins.json", "overlay.png", "rollout.nrrd",
             "crossmodal_age.nrrd", "crossmodal_grade.nrrd", "crossmodal_er.nrrd", "crossmodal_size.nrrd"}
    assert {p.name for p in tmp_path.iterdir()} == names
    heat = read_image(tmp_path / "heatmap.nrrd")
    label = read_image(tmp_path / "heatmap_label.nrrd")
    for written in (heat, label, read_image(tmp_path / "rollout.nrrd"), read_image(tmp_path / "crossmodal_er.nrrd")):
        assert_same_grid(written, image)
    assert heat.array.dtype == np.float32 and np.isfinite(heat.array).all()
    assert heat.array.min() >= 0.0 and heat.array.max() <= 1.0 and heat.array.max() > 0
    np.testing.assert_array_equal(heat.array, ex.heatmap.array)
    np.testing.assert_array_equal(label.array, ex.bins.label(heat.array))
    bins = json.loads((tmp_path / "heatmap_bins.json").read_text())
    assert bins["normalisation"]["scale"] == scale and bins["bins"][0]["rgba"][3] == 0
    assert len(bins["edges"]) == bins["n_bins"] + 1
    png = PILImage.open(tmp_path / "overlay.png")
    assert png.size[0] > 200 and "Research use" in png.info.get("Description", "")


def test_explain_image_normalisation_choices(model):
    image, _ = right_mammogram()
    pre = ImagePreprocessor(ImagePreprocessConfig(target_spacing_xy=(0.4, 0.4), output_size_hw=(64, 64)))
    with pytest.raises(ValueError, match="cam scale"):
        explain_image(model, image, VALUES, MISSING, preprocessor=pre)
    arr, record = pre.apply(image)
    by_case = explain_image(model, image, VALUES, MISSING, model_array=arr, record=record, normalise="case",
                            rollout=False, crossmodal=False)
    assert by_case.heatmap_model.max() == pytest.approx(1.0) and by_case.rollout is None
    huge = explain_image(model, image, VALUES, MISSING, model_array=arr, record=record, cam_scale=1e9,
                         rollout=False, crossmodal=False)
    assert huge.heatmap_model.max() < 1e-3 and huge.heatmap_label.array.max() == 0   # little evidence, no heat
    with pytest.raises(ValueError, match="PreprocessRecord"):
        explain_image(model, image, VALUES, MISSING, model_array=arr, cam_scale=1.0)
