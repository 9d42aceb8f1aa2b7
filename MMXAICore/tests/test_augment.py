"""Seeded training augmentation (torchvision.transforms.v2) on (S, 1, H, W) slice stacks."""

from __future__ import annotations

import json

import pytest
import torch

from mmxai_core.data.augment import AugmentConfig, Augmenter
from mmxai_core.errors import PreprocessingError

ALL_ON = AugmentConfig(p_affine=1.0, p_elastic=1.0, p_gamma=1.0, p_contrast=1.0, p_noise=1.0)
ALL_OFF = AugmentConfig(p_affine=0.0, p_elastic=0.0, p_gamma=0.0, p_contrast=0.0, p_noise=0.0)


def _volume(s=6, h=48, w=40, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(s, 1, h, w, generator=g) * 0.5 + torch.linspace(-1, 1, w)


@pytest.mark.parametrize("shape", [(6, 1, 48, 40), (1, 1, 64, 64)])
def test_shape_dtype_and_seed(shape):
    x = _volume(*shape[:1], *shape[2:])
    aug = Augmenter(ALL_ON)
    a = aug(x, seed=7)
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, aug(x, seed=7))                               # same seed -> identical
    assert not torch.equal(a, aug(x, seed=8))                           # other seed -> different
    assert not torch.equal(a, x)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(aug(x, generator=g1), aug(x, generator=g2))     # generator seeding


def test_global_rng_untouched_and_float64_kept():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    Augmenter(ALL_ON)(_volume().double(), seed=1)
    assert torch.equal(torch.rand(3), expected)
    assert Augmenter(ALL_ON)(_volume().double(), seed=1).dtype == torch.float64
    torch.manual_seed(42)
    a = Augmenter(ALL_ON)(_volume())                                    # no seed: one global draw
    torch.manual_seed(42)
    assert torch.equal(a, Augmenter(ALL_ON)(_volume()))


def test_identity_when_all_probabilities_are_zero():
    x = _volume()
    out = Augmenter(ALL_OFF)(x, seed=1)
    assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()      # a copy, not the input


def test_same_spatial_transform_for_every_slice():
    one = _volume(s=1)
    stack = one.repeat(5, 1, 1, 1)
    cfg = AugmentConfig(p_affine=1.0, p_elastic=1.0, p_gamma=1.0, p_contrast=0.0, p_noise=0.0)
    out = Augmenter(cfg)(stack, seed=11)
    assert not torch.equal(out[0], one[0])
    for s in range(1, 5):
        torch.testing.assert_close(out[s], out[0])


def test_mask_follows_the_image_and_keeps_labels():
    x = torch.zeros(3, 1, 64, 64)
    x[:, :, 20:40, 25:45] = 1.0
    mask = (x > 0.5).to(torch.uint8) * 2
    cfg = AugmentConfig(p_affine=1.0, p_elastic=1.0, p_gamma=0.0, p_contrast=0.0, p_noise=1.0, noise_std=0.01)
    out, out_mask = Augmenter(cfg).with_mask(x, mask, seed=4)
    assert out_mask.dtype == torch.uint8 and set(out_mask.unique().tolist()) <= {0, 2}
    inside = out[out_mask == 2].mean()
    outside = out[out_mask == 0].mean()
    assert inside > 0.8 and outside < 0.2
    out_b, mask_b = Augmenter(cfg).with_mask(x, mask.bool(), seed=4)
    assert mask_b.dtype == torch.bool and torch.equal(mask_b, out_mask == 2) and torch.equal(out_b, out)


def test_thin_line_stays_roughly_in_place_under_small_affine():
    x = torch.zeros(1, 1, 64, 64)
    x[..., :, 32] = 1.0                                                  # one-voxel-wide vertical line
    cfg = AugmentConfig(p_affine=1.0, degrees=2.0, translate=0.02, scale=(0.98, 1.02), p_elastic=0.0,
                        p_gamma=0.0, p_contrast=0.0, p_noise=0.0, fill=0.0)
    for seed in range(5):
        out = Augmenter(cfg)(x, seed=seed)[0, 0]
        rows = out[8:56]                                                 # away from the rotated ends
        centre = (rows * torch.arange(64.0)).sum(dim=1) / rows.sum(dim=1)
        assert torch.all((centre - 32.0).abs() < 3.0)
        assert out.sum() == pytest.approx(64.0, rel=0.1)                 # not smeared away


def test_intensity_steps_keep_case_range_and_spatial_layout():
    x = _volume()
    cfg = AugmentConfig(p_affine=0.0, p_elastic=0.0, p_gamma=1.0, p_contrast=1.0, p_noise=0.0)
    out = Augmenter(cfg)(x, seed=2)
    assert out.min() >= x.min() - 1e-5 and out.max() <= x.max() + 1e-5
    # monotone intensity change: the voxel order is (nearly) kept
    corr = torch.corrcoef(torch.stack([x.flatten(), out.flatten()]))[0, 1]
    assert corr > 0.9


def test_config_round_trip_and_errors():
    cfg = AugmentConfig(degrees=5.0, scale=[0.95, 1.05])
    again = AugmentConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.scale == (0.95, 1.05)
    with pytest.raises(PreprocessingError, match="p_affine"):
        AugmentConfig(p_affine=1.5)
    with pytest.raises(PreprocessingError, match="scale"):
        AugmentConfig(scale=(1.1, 0.9))
    with pytest.raises(PreprocessingError, match="noise_std"):
        AugmentConfig(noise_std=-0.1)
    with pytest.raises(PreprocessingError, match="rotation"):
        AugmentConfig.from_dict({"rotation": 3})
    aug = Augmenter()
    with pytest.raises(PreprocessingError, match=r"\(S, 1, H, W\)"):
        aug(torch.zeros(2, 3, 8, 8), seed=0)
    with pytest.raises(PreprocessingError, match="float"):
        aug(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), seed=0)
    with pytest.raises(PreprocessingError, match="mask shape"):
        aug.with_mask(torch.zeros(2, 1, 8, 8), torch.zeros(1, 1, 8, 8), seed=0)
    with pytest.raises(PreprocessingError, match="not both"):
        aug(torch.zeros(2, 1, 8, 8), seed=0, generator=torch.Generator())
