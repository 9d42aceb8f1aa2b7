"""Attention rollout, cross-modal attention maps and heatmap binning."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mmxai_core.explain.binning import HeatmapBins, bin_heatmap, write_bins_json
from mmxai_core.explain.crossmodal_maps import crossmodal_maps
from mmxai_core.explain.rollout import attention_rollout, rollout_matrices, token_relevance
from mmxai_core.model import create_model, model_config

FIELDS = [("age", "numeric", 0), ("grade", "categorical", 3), ("er", "categorical", 2), ("size", "numeric", 0)]
NAMES = [f[0] for f in FIELDS]


def make_model(variant="attention", **kw):
    cfg = dict(embed_dim=32, depth=2, num_heads=4, fusion_heads=4, mil_hidden=16, trunk_out_index=2,
               image_size=64, dropout=0.0, slice_chunk=4)
    cfg.update(kw)
    return create_model(model_config("tiny", clinical_fields=FIELDS, variant=variant, **cfg), seed=0).eval()


@pytest.fixture(scope="module")
def forward():
    """A tiny model's output for 2 cases of up to 4 slices (case 1 has 2 real slices), with attentions."""
    model = make_model()
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(2, 4, 1, 64, 64, generator=gen)
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    values = torch.tensor([[0.3, 2.0, 1.0, 0.5], [0.7, 0.0, 0.0, 0.0]])
    missing = torch.tensor([[False] * 4, [False, False, True, True]])
    with torch.no_grad():
        out = model(images, mask, None, values, missing, return_attentions=True)
    return model, out, mask


# ----------------------------------------------------------------------------------------- rollout
def test_rollout_rows_sum_to_one_and_match_the_definition():
    gen = torch.Generator().manual_seed(1)
    atts = [torch.softmax(torch.randn(2, 3, 4, 6, 6, generator=gen), dim=-1) for _ in range(3)]
    r = rollout_matrices(atts)
    assert r.shape == (2, 3, 6, 6)
    torch.testing.assert_close(r.sum(-1), torch.ones(2, 3, 6))
    eye = torch.eye(6)
    step = [(a.mean(2) + eye) / (a.mean(2) + eye).sum(-1, keepdim=True) for a in atts]
    torch.testing.assert_close(r, step[2] @ step[1] @ step[0])
    uniform = torch.full((1, 2, 5, 5), 0.2)                  # one block, 2 heads, uniform attention
    torch.testing.assert_close(rollout_matrices([uniform])[0], 0.5 * torch.eye(5) + 0.1)
    assert torch.equal(rollout_matrices([torch.zeros(1, 2, 5, 5)])[0], torch.eye(5))   # padded slice
    rel = token_relevance(r)
    torch.testing.assert_close(rel.sum(-1), torch.ones(2, 3))
    with pytest.raises(ValueError, match="at least one"):
        rollout_matrices([])


def test_attention_rollout_of_the_model(forward):
    _, out, mask = forward
    per_slice = attention_rollout(out, size=None, slice_weighted=False)
    assert per_slice.shape == (2, 4, 8, 8) and (per_slice >= 0).all()
    sums = per_slice.sum(dim=(2, 3))
    torch.testing.assert_close(sums[mask], torch.ones(int(mask.sum())))
    assert (per_slice[~mask] == 0).all()
    weighted = attention_rollout(out, size=None)
    torch.testing.assert_close(weighted.sum(dim=(1, 2, 3)), torch.ones(2))
    torch.testing.assert_close(weighted, per_slice * out.slice_weights[..., None, None])
    up = attention_rollout(out, size=(64, 64))
    assert up.shape == (2, 4, 64, 64)
    torch.testing.assert_close(up.mean(dim=(2, 3)), weighted.mean(dim=(2, 3)), atol=1e-6, rtol=1e-3)
    with pytest.raises(ValueError, match="return_attentions"):
        attention_rollout(type(out)(**{**out.__dict__, "self_attentions": None}))


# ----------------------------------------------------------------------------------------- cross-modal
def test_crossmodal_maps_keyed_by_field(forward):
    model, out, mask = forward
    names = [f.name for f in model.config.clinical_fields]
    assert names == NAMES
    maps = crossmodal_maps(out, names, case=0, size=(64, 64))
    assert list(maps) == NAMES
    for m in maps.values():
        assert m.shape == (4, 64, 64) and (m >= 0).all() and (m <= 1).all()
    total = sum(maps.values())                            # softmax over fields, averaged: sums to 1 per pixel
    torch.testing.assert_close(total, torch.ones(4, 64, 64))
    grid = crossmodal_maps(out, names, case=0)            # token grid: mean over heads of the weights
    token = 3 * 8 + 5
    for f, name in enumerate(NAMES):
        assert grid[name].shape == (4, 8, 8)
        torch.testing.assert_close(grid[name][1, 3, 5], out.cross_attention[0, 1, :, token, f].mean())
    second = crossmodal_maps(out, names, case=1, size=(64, 64))
    assert all((m[2:] == 0).all() and m[:2].max() > 0 for m in second.values())   # padded slices
    with pytest.raises(ValueError, match="field names"):
        crossmodal_maps(out, names[:3])
    with torch.no_grad():
        concat = make_model("concat")(torch.randn(1, 1, 64, 64), None, None, torch.tensor([[0.1, 1, 0, 0.2]]))
    with pytest.raises(ValueError, match="no cross-modal"):
        crossmodal_maps(concat, names)


# ----------------------------------------------------------------------------------------- binning
def test_bins_threshold_monotone_and_count():
    bins = HeatmapBins(threshold=0.2, n_bins=10)
    np.testing.assert_allclose(bins.edges, np.linspace(0.2, 1.0, 11))
    ramp = np.linspace(0.0, 1.0, 10001)
    labels = bin_heatmap(ramp, bins)
    assert labels.dtype == np.uint8
    assert (labels[ramp < 0.2] == 0).all() and (labels[ramp >= 0.2] >= 1).all()
    assert (np.diff(labels.astype(int)) >= 0).all()                        # monotone
    assert sorted(set(labels.tolist())) == list(range(11))                 # 0 + exactly 10 bins
    # equal widths: each bin holds the same share of the ramp above the threshold
    counts = np.bincount(labels, minlength=11)[1:]
    assert counts.max() - counts.min() <= 2
    special = bins.label(np.array([0.2, 0.2 - 1e-9, 0.28, 1.0, 1.5, np.nan, -1.0]))
    assert special.tolist() == [1, 0, 2, 10, 10, 0, 0]
    three = HeatmapBins(threshold=0.5, n_bins=3).label(np.array([[0.49, 0.5], [0.7, 0.99]]))
    assert three.tolist() == [[0, 1], [2, 3]]


def test_bins_colours_and_json(tmp_path):
    bins = HeatmapBins(threshold=0.25, n_bins=5)
    rgba = bins.colours()
    assert rgba.shape == (6, 4) and rgba.dtype == np.uint8
    assert rgba[0].tolist() == [0, 0, 0, 0] and (rgba[1:, 3] > 0).all()
    assert (np.diff(rgba[1:, 3].astype(int)) >= 0).all()
    path = write_bins_json(tmp_path / "heatmap_bins.json", bins, {"normalisation": {"mode": "model"}})
    data = json.loads(path.read_text())
    assert data["n_bins"] == 5 and data["threshold"] == 0.25 and len(data["edges"]) == 6
    assert [b["label"] for b in data["bins"]] == list(range(6)) and data["bins"][0]["rgba"][3] == 0
    assert data["colors"] == rgba.tolist() and len(data["colors"]) == 6          # the worker contract
    assert data["normalisation"] == {"mode": "model"}
    assert HeatmapBins.from_dict(data) == bins
    for bad in (dict(threshold=1.0), dict(threshold=-0.1), dict(n_bins=0), dict(n_bins=300), dict(alpha_max=2)):
        with pytest.raises(ValueError):
            HeatmapBins(**bad)


def test_explain_package_is_import_light():
    import subprocess
    import sys

    code = ("import sys, mmxai_core.explain as e; assert 'torch' not in sys.modules, 'torch imported'; "
            "assert 'matplotlib' not in sys.modules; b = e.HeatmapBins(); assert 'torch' not in sys.modules; "
            "assert callable(e.explain_image) and callable(e.GradCAMPlusPlusExplainer); print(len(e.__all__))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    import mmxai_core.explain as explain

    for name in explain.__all__:
        assert getattr(explain, name) is not None
    with pytest.raises(AttributeError):
        explain.no_such_name  # noqa: B018
