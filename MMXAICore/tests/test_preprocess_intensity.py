"""Intensity steps of the image preprocessing (window, z-score, percentile) and N4 bias correction.

The configs here keep the native grid (no reorientation, resampling or crop), so the output array is the
normalised native array and can be compared voxel for voxel with the input.
"""

from __future__ import annotations

import numpy as np
import pytest

from mmxai_core.data.image_preprocess import ImagePreprocessConfig, ImagePreprocessor
from mmxai_core.errors import PreprocessingError
from mmxai_core.io import Image

NATIVE = dict(orientation=None, target_spacing_xy=None, output_size_hw=None, antialias=False, n4="off",
              laterality="off")


def _blob(shape=(12, 64, 64), inside=300.0, outside=10.0, noise=20.0, seed=0):
    z, y, x = np.indices(shape)
    c = (np.asarray(shape) - 1) / 2.0
    r = np.sqrt(((z - c[0]) / (shape[0] * 0.4)) ** 2 + ((y - c[1]) / (shape[1] * 0.35)) ** 2
                + ((x - c[2]) / (shape[2] * 0.35)) ** 2)
    obj = r <= 1.0
    rng = np.random.default_rng(seed)
    arr = np.where(obj, inside, outside) + rng.normal(0.0, noise, shape)
    return arr.astype(np.float32), obj


def test_ct_window_maps_to_unit_interval():
    arr = np.linspace(-1000.0, 3000.0, 8 * 32 * 32, dtype=np.float32).reshape(8, 32, 32)
    arr[0, 0, 0] = 40.0                                               # the window centre
    image = Image(arr, (0.5, 0.5, 2.0), meta={"Modality": "CT"})
    out, record = ImagePreprocessor(ImagePreprocessConfig(window_center=40.0, window_width=400.0,
                                                          **NATIVE)).apply(image)
    assert record.intensity["mode"] == "window"                       # auto: CT -> window
    assert record.intensity["lo"] == -160.0 and record.intensity["hi"] == 240.0
    assert out.min() == 0.0 and out.max() == 1.0
    assert out[0, 0, 0] == pytest.approx(0.5)
    expected = np.clip((arr + 160.0) / 400.0, 0.0, 1.0)
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_mr_zscore_over_foreground_with_recorded_percentiles():
    arr, obj = _blob()
    arr[obj.nonzero()[0][0], obj.nonzero()[1][0], obj.nonzero()[2][0]] = 5000.0   # an outlier, clipped
    image = Image(arr, (0.8, 0.8, 3.0), meta={"Modality": "MR"})
    out, record = ImagePreprocessor(ImagePreprocessConfig(**NATIVE)).apply(image)
    info = record.intensity
    assert info["mode"] == "zscore" and info["percentiles"] == [0.5, 99.5]
    fg = arr > info["foreground"]["threshold"]
    assert info["foreground"]["method"] == "otsu" and info["foreground"]["voxels"] == fg.sum() == obj.sum()
    lo, hi = np.percentile(arr[fg], (0.5, 99.5))
    assert info["clip_lo"] == pytest.approx(lo) and info["clip_hi"] == pytest.approx(hi)
    assert abs(float(out[fg].mean())) < 1e-4
    assert float(out[fg].std()) == pytest.approx(1.0, abs=1e-4)
    assert out.max() <= (hi - info["mean"]) / info["std"] + 1e-5    # the outlier was clipped


def test_robust_mode_median_and_iqr_of_the_foreground_and_a_lesion_does_not_rescale_the_tissue():
    arr, obj = _blob()
    image = Image(arr, (0.8, 0.8, 3.0), meta={"Modality": "MR"})
    out, record = ImagePreprocessor(ImagePreprocessConfig(intensity="robust", **NATIVE)).apply(image)
    info = record.intensity
    fg = arr > info["foreground"]["threshold"]
    q25, med, q75 = np.percentile(arr[fg], (25, 50, 75))
    assert info["mode"] == "robust" and info["median"] == pytest.approx(med) and info["iqr"] == pytest.approx(q75 - q25)
    np.testing.assert_allclose(out, (arr - med) / (q75 - q25), rtol=1e-5, atol=1e-5)   # not clipped
    # a bright "lesion" (2 % of the object, 3x its intensity) is added: the tissue away from it keeps its
    # normalised values with "robust"; "zscore" and "percentile" rescale every voxel
    lesion = np.zeros_like(obj)
    zz, yy, xx = np.nonzero(obj)
    centre = (zz.mean(), yy.mean(), xx.mean())
    dist = (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2
    keep = np.argsort(dist)[: int(0.02 * obj.sum())]
    lesion[zz[keep], yy[keep], xx[keep]] = True
    with_lesion = np.where(lesion, 900.0, arr).astype(np.float32)
    tissue = obj & ~lesion
    shift = {}
    for mode in ("robust", "zscore", "percentile"):
        cfg = ImagePreprocessConfig(intensity=mode, **NATIVE)
        base, _ = ImagePreprocessor(cfg).apply(image)
        new, _ = ImagePreprocessor(cfg).apply(Image(with_lesion, image.spacing, meta=image.meta))
        spread = float(np.percentile(base[tissue], 75) - np.percentile(base[tissue], 25))
        shift[mode] = float(np.median(np.abs(new[tissue] - base[tissue]))) / spread   # in tissue IQRs
    assert shift["robust"] < 0.06
    assert shift["zscore"] > 2 * shift["robust"] and shift["percentile"] > 2 * shift["robust"], shift


def test_percentile_mode_clips_and_scales_to_unit_interval():
    arr, _ = _blob(shape=(1, 200, 160), inside=1500.0, outside=50.0, noise=100.0)
    image = Image(arr, (0.1, 0.1, 1.0), meta={"Modality": "MG"})
    cfg = ImagePreprocessConfig(clip_percentiles=(1.0, 99.0), **NATIVE)
    out, record = ImagePreprocessor(cfg).apply(image)
    info = record.intensity
    assert info["mode"] == "percentile" and info["percentiles"] == [1.0, 99.0]
    lo, hi = np.percentile(arr, (1.0, 99.0))
    assert info["lo"] == pytest.approx(lo) and info["hi"] == pytest.approx(hi)
    assert out.min() == 0.0 and out.max() == 1.0
    inner = (arr > lo) & (arr < hi)
    np.testing.assert_allclose(out[inner], (arr[inner] - lo) / (hi - lo), atol=1e-5)


@pytest.mark.parametrize("modality,mode", [("CT", "window"), ("MR", "zscore"), ("MG", "percentile"),
                                           ("", "percentile"), ("US", "percentile")])
def test_auto_intensity_by_modality(modality, mode):
    arr, _ = _blob(shape=(4, 32, 32))
    meta = {"Modality": modality} if modality else {}
    _, record = ImagePreprocessor(ImagePreprocessConfig(**NATIVE)).apply(Image(arr, meta=meta))
    assert record.intensity["mode"] == mode


def test_explicit_intensity_overrides_modality_and_none_keeps_values():
    arr, _ = _blob(shape=(4, 32, 32))
    out, record = ImagePreprocessor(ImagePreprocessConfig(**dict(NATIVE, n4="off"), intensity="none")).apply(
        Image(arr, meta={"Modality": "CT"}))
    assert record.intensity == {"mode": "none"} and "intensity" not in record.steps
    np.testing.assert_array_equal(out, arr)


def _cv(values: np.ndarray) -> float:
    return float(values.std() / values.mean())


def test_n4_reduces_a_multiplicative_bias_field():
    shape = (16, 64, 64)
    arr, obj = _blob(shape=shape, inside=100.0, outside=0.0, noise=1.0, seed=2)
    z, y, x = np.indices(shape) / np.asarray(shape).reshape(3, 1, 1, 1)
    bias = np.exp(0.8 * (x - 0.5) + 1.2 * (y - 0.5) ** 2 - 0.3 * (z - 0.5)).astype(np.float32)
    biased = np.clip(arr, 0.0, None) * bias
    image = Image(biased, (1.0, 1.0, 2.5), meta={"Modality": "MR"})
    core = obj & (np.indices(shape)[0] > 2) & (np.indices(shape)[0] < shape[0] - 3)
    out, record = ImagePreprocessor(ImagePreprocessConfig(**dict(NATIVE, n4="auto"),
                                                          intensity="none")).apply(image)
    assert "n4" in record.steps and record.bias_field["shrink_factors"] == [2, 2, 1]
    assert record.bias_field["bias_max"] > record.bias_field["bias_min"]
    before, after = _cv(biased[core]), _cv(out[core])
    assert before > 0.1
    print(f"CV inside the object: {before:.4f} -> {after:.4f}")
    assert after < 0.5 * before
    # off for other modalities in auto mode
    _, rec_ct = ImagePreprocessor(ImagePreprocessConfig(**dict(NATIVE, n4="auto"))).apply(
        Image(biased, meta={"Modality": "CT"}))
    assert rec_ct.bias_field is None and "n4" not in rec_ct.steps


def test_antialias_smooths_only_downsampled_axes():
    rng = np.random.default_rng(5)
    image = Image(rng.normal(size=(6, 64, 64)).astype(np.float32), (0.25, 1.0, 3.0), meta={"Modality": "CT"})
    cfg = ImagePreprocessConfig(orientation=None, target_spacing_xy=(1.0, 1.0), output_size_hw=None,
                                intensity="none", n4="off")
    out, record = ImagePreprocessor(cfg).apply(image)
    sig = record.resampling["antialias_sigma_mm_xyz_native"]
    assert sig[0] == pytest.approx(0.25 * 1.5) and sig[1] == 0.0 and sig[2] == 0.0
    assert "antialias" in record.steps and out.shape == (6, 64, 16)
    assert out.std() < 0.7            # white noise averaged over ~4 columns


@pytest.mark.parametrize("mode", ["zscore", "robust"])
def test_foreground_statistics_refuse_an_empty_foreground(mode):
    arr, _ = _blob()
    image = Image(arr, (0.8, 0.8, 3.0), meta={"Modality": "MR"})
    cfg = ImagePreprocessConfig(intensity=mode, foreground_threshold=float(arr.max()) + 1.0, **NATIVE)
    with pytest.raises(PreprocessingError, match=f"intensity {mode}: the foreground mask is \\(almost\\) empty"):
        ImagePreprocessor(cfg).apply(image)
