"""SSIM equals scikit-image's structural_similarity (2D, 3D, per-slice, both windows, both covariance
normalisations); behaves as a similarity; Pearson flags constant vectors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity as sk_ssim

from mmxai_core.explain.metrics.ssim import SSIMSettings, pearson, ssim, ssim_map, volume_ssim


def smooth_pair(shape, seed=0, noise=0.1):
    rng = np.random.default_rng(seed)
    a = rng.random(shape)
    from scipy.ndimage import gaussian_filter

    a = gaussian_filter(a, 2.0)
    a = (a - a.min()) / (a.max() - a.min())
    return a, a + noise * rng.standard_normal(shape)


@pytest.mark.parametrize("gaussian", [True, False])
@pytest.mark.parametrize("sample_cov", [True, False])
@pytest.mark.parametrize("shape", [(40, 33), (64, 64)])
def test_2d_equals_skimage(gaussian, sample_cov, shape):
    a, b = smooth_pair(shape, seed=shape[1])
    settings = SSIMSettings(gaussian_weights=gaussian, use_sample_covariance=sample_cov)
    ours = ssim(a, b, data_range=1.5, settings=settings)
    ref = sk_ssim(a, b, data_range=1.5, gaussian_weights=gaussian, use_sample_covariance=sample_cov)
    assert abs(ours - ref) < 1e-6
    assert isinstance(ours, float)


def test_nondefault_sigma_window_and_constants_equal_skimage():
    a, b = smooth_pair((50, 45), seed=3, noise=0.3)
    ours = ssim(a, b, data_range=1.0, settings=SSIMSettings(sigma=1.0, k1=0.02, k2=0.05))
    ref = sk_ssim(a, b, data_range=1.0, gaussian_weights=True, sigma=1.0, K1=0.02, K2=0.05)
    assert abs(ours - ref) < 1e-6
    ours = ssim(a, b, data_range=1.0, settings=SSIMSettings(gaussian_weights=False, win_size=9))
    assert abs(ours - sk_ssim(a, b, data_range=1.0, win_size=9)) < 1e-6


def test_3d_window_equals_skimage_nd():
    a, b = smooth_pair((13, 30, 28), seed=1, noise=0.2)
    for gaussian in (True, False):
        ours = volume_ssim(a, b, data_range=2.0, mode="3d", settings=SSIMSettings(gaussian_weights=gaussian))
        ref = sk_ssim(a, b, data_range=2.0, gaussian_weights=gaussian)
        assert abs(ours - ref) < 1e-6


def test_slicewise_volume_is_mean_of_2d_skimage_over_real_slices():
    a, b = smooth_pair((6, 32, 32), seed=2, noise=0.15)
    per = [sk_ssim(a[i], b[i], data_range=1.0, gaussian_weights=True) for i in range(6)]
    assert abs(volume_ssim(a, b, data_range=1.0) - np.mean(per)) < 1e-6
    real = np.array([True, True, False, True, False, True])
    ours = volume_ssim(a, b, data_range=1.0, slice_mask=real)
    assert abs(ours - np.mean(np.asarray(per)[real])) < 1e-6


def test_batched_equals_one_by_one_and_torch_float32_input():
    a, b = smooth_pair((5, 36, 36), seed=4, noise=0.2)
    batched = ssim(a, b, data_range=1.0)
    assert batched.shape == (5,)
    for i in range(5):
        assert abs(batched[i] - ssim(a[i], b[i], data_range=1.0)) < 1e-12
    t = ssim(torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32), data_range=1.0)
    assert np.allclose(t, batched, atol=1e-5)


def test_self_similarity_is_one_and_decreases_with_noise():
    a, _ = smooth_pair((64, 64), seed=5)
    assert ssim(a, a, data_range=1.0) == pytest.approx(1.0, abs=1e-12)
    assert volume_ssim(np.stack([a] * 12), np.stack([a] * 12), data_range=1.0, mode="3d") == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    values = [ssim(a, a + s * rng.standard_normal(a.shape), data_range=1.0) for s in (0.01, 0.05, 0.2, 0.5)]
    assert all(x > y for x, y in zip(values, values[1:])), values
    # two equal constant maps (e.g. two empty heatmaps) are identical
    assert ssim(np.zeros((20, 20)), np.zeros((20, 20)), data_range=1.0) == pytest.approx(1.0)


def test_mask_restricts_the_average_to_window_centres():
    a, b = smooth_pair((40, 40), seed=6, noise=0.2)
    full = ssim_map(a, b, data_range=1.0).numpy()              # (30, 30) valid centres
    mask = np.zeros((40, 40), bool)
    mask[:, :20] = True                                        # centres in columns 5..19 of the image
    ours = ssim(a, b, data_range=1.0, mask=mask)
    assert ours == pytest.approx(full[:, :15].mean(), abs=1e-12)
    assert ssim(a, b, data_range=1.0, mask=np.ones((40, 40), bool)) == pytest.approx(full.mean(), abs=1e-12)
    assert np.isnan(ssim(a, b, data_range=1.0, mask=np.zeros((40, 40), bool)))


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="window"):
        ssim(np.zeros((8, 8)), np.zeros((8, 8)), data_range=1.0)
    with pytest.raises(ValueError, match="shape"):
        ssim(np.zeros((20, 20)), np.zeros((20, 21)), data_range=1.0)
    with pytest.raises(ValueError, match="data_range"):
        ssim(np.zeros((20, 20)), np.zeros((20, 20)), data_range=0.0)
    with pytest.raises(ValueError, match="slices"):
        volume_ssim(np.zeros((4, 20, 20)), np.zeros((4, 20, 20)), data_range=1.0, mode="3d")
    with pytest.raises(ValueError):
        SSIMSettings(gaussian_weights=True, win_size=7)


def test_settings_state_their_parameters():
    d = SSIMSettings().to_dict()
    assert d == {"window": "gaussian", "sigma": 1.5, "win_size": 11, "K1": 0.01, "K2": 0.03,
                 "use_sample_covariance": True, "reference": "skimage.metrics.structural_similarity"}


def test_pearson_matches_numpy_and_flags_constant_vectors():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(10), rng.standard_normal(10)
    r, constant = pearson(a, b)
    assert r == pytest.approx(np.corrcoef(a, b)[0, 1], abs=1e-12) and constant is False
    r, constant = pearson(a, np.full(10, 3.0))
    assert np.isnan(r) and constant is True
    r, constant = pearson([1.0], [2.0])
    assert np.isnan(r) and constant is True
    rows, flags = pearson(np.stack([a, np.zeros(10), a]), np.stack([b, b, 2 * a + 1]))
    assert flags.tolist() == [False, True, False]
    assert np.isnan(rows[1]) and rows[2] == pytest.approx(1.0)
