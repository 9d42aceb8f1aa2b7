"""Grad-CAM++ of the multimodal model: equal to pytorch-grad-cam on 2D, volumes with the gradient through
slice pooling, chunked == unchunked, one target per sample, fixed-scale normalisation, no leaked hooks."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from mmxai_core.explain.gradcam import (ClinicalBoundModel, GradCAMPlusPlusExplainer, calibrate_cam_scale,
                                        cam_scale_from_metadata, gradcam_plus_plus, gradcampp_weights,
                                        normalise_maps, upsample_maps)
from mmxai_core.model import create_model, model_config

FIELDS = [("age", "numeric", 0), ("grade", "categorical", 3), ("er", "categorical", 2), ("size", "numeric", 0)]


def make_model(variant="attention", seed=0, head_gain=50.0, **kw):
    """A tiny model whose gradients are well above Grad-CAM++'s eps (1e-6): PyTorch's default init of the
    Linear layers and a head scaled by ``head_gain`` (an untrained model's gradients are ~1e-5)."""
    cfg = dict(embed_dim=32, depth=1, num_heads=4, fusion_heads=4, mil_hidden=16, trunk_out_index=2,
               image_size=64, dropout=0.0, slice_chunk=4)
    cfg.update(kw)
    model = create_model(model_config("tiny", clinical_fields=FIELDS, variant=variant, **cfg), seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.reset_parameters()
    with torch.no_grad():
        model.head.fc.weight.mul_(head_gain)
    return model.eval()


def clinical(b, seed=0):
    gen = torch.Generator().manual_seed(seed)
    values = torch.stack([torch.rand(b, generator=gen), torch.randint(0, 3, (b,), generator=gen).float(),
                          torch.randint(0, 2, (b,), generator=gen).float(), torch.rand(b, generator=gen)], 1)
    missing = torch.zeros(b, 4, dtype=torch.bool)
    missing[:, 3] = torch.rand(b, generator=gen) < 0.5
    return torch.where(missing, torch.zeros(()), values), missing


def blobs(b, s=1, size=64, seed=0):
    """(B, S, 1, size, size) noise with a bright Gaussian blob at a random place per case and slice."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    out = 0.3 * torch.randn(b, s, 1, size, size, generator=gen)
    for i in range(b):
        for k in range(s):
            cy, cx = torch.randint(12, size - 12, (2,), generator=gen).float()
            amp = 1.0 + 2.0 * torch.rand((), generator=gen)
            out[i, k, 0] += amp * torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 5.0 ** 2))
    return out


def assert_close_rel(a, b, rel=1e-5):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    peak = max(np.abs(b).max(), 1e-30)
    assert np.abs(a - b).max() <= rel * peak, f"max diff {np.abs(a - b).max():.3e} vs peak {peak:.3e}"


def hook_counts(model):
    return {name: (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks),
                   len(m._backward_pre_hooks)) for name, m in model.named_modules()}


@pytest.fixture(scope="module")
def model():
    return make_model()


# ----------------------------------------------------------------------------------------- equal to library
def test_weights_equal_pytorch_grad_cam_formula():
    from pytorch_grad_cam import GradCAMPlusPlus

    gen = torch.Generator().manual_seed(0)
    acts = torch.relu(torch.randn(3, 6, 5, 4, generator=gen))
    grads = torch.randn(3, 6, 5, 4, generator=gen) * 0.1
    grads[0, 0] = 0.0
    grads[1, 2, :2] = 0.0
    ours = gradcampp_weights(acts, grads).numpy()
    lib = GradCAMPlusPlus.get_cam_weights(None, None, None, None, acts.numpy(), grads.numpy())
    np.testing.assert_allclose(ours, lib, rtol=1e-5, atol=1e-9)
    assert (ours >= 0).all() and (ours[0, 0] == 0)


def test_2d_raw_maps_equal_pytorch_grad_cam(model):
    from pytorch_grad_cam import GradCAMPlusPlus
    from pytorch_grad_cam.utils.image import scale_cam_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    x = blobs(3)[:, 0]                                                      # (3, 1, 64, 64)
    values, missing = clinical(3)
    targets = [1, 0, 1]
    ours = gradcam_plus_plus(model, x, values, missing, target_class=targets)
    assert ours.raw.shape == (3, 1, 8, 8)
    bound = ClinicalBoundModel(model, values, missing)
    layer = model.gradcam_layer
    with GradCAMPlusPlus(model=bound, target_layers=[layer]) as lib:
        lib_maps = lib(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])
        acts = lib.activations_and_grads.activations[0].numpy()
        grads = lib.activations_and_grads.gradients[0].numpy()
        lib_raw = np.maximum(lib.get_cam_image(x, layer, None, acts, grads), 0)
    raw = ours.raw[:, 0].numpy()
    for i in range(3):  # raw maps (before the library's per-image min-max) are the same
        assert raw[i].max() > 0
        assert_close_rel(raw[i], lib_raw[i])
    # the library's own pipeline on our raw maps (min-max, resize, mean over layers, min-max again) gives
    # what the library returns
    np.testing.assert_allclose(scale_cam_image(scale_cam_image(raw, (64, 64))), lib_maps, atol=1e-5)
    # our bilinear upsampling agrees with the library's cv2 resize
    up = ours.upsampled()[:, 0].numpy()
    up = (up - up.min(axis=(1, 2), keepdims=True)) / (1e-7 + np.ptp(up, axis=(1, 2), keepdims=True))
    np.testing.assert_allclose(up, lib_maps, atol=1e-4)
    np.testing.assert_allclose(ours.score.numpy(), bound(x).detach().numpy()[np.arange(3), targets], rtol=1e-5)


# ----------------------------------------------------------------------------------------- volumes
def test_volume_chunked_equals_unchunked_and_the_library_backward(model):
    """9 slices: chunks of 2 (three-pass VJP), chunks of 9 (one pass), and a plain full backward of the case
    score through the whole model (pytorch-grad-cam's activation/gradient capture) agree to 1e-5."""
    from pytorch_grad_cam import GradCAMPlusPlus

    x = blobs(1, 9, seed=3)
    values, missing = clinical(1, seed=3)
    with GradCAMPlusPlusExplainer(model, slice_chunk=2) as cam:
        r2 = cam(x, values, missing)
    with GradCAMPlusPlusExplainer(model, slice_chunk=9) as cam:
        r9 = cam(x, values, missing)
    assert r2.raw.shape == (1, 9, 8, 8)
    assert_close_rel(r2.raw, r9.raw)
    # another target layer takes the re-encoding path of pass 3 (the default keeps the CNN feature maps)
    with GradCAMPlusPlusExplainer(model, target_layer="image_encoder.trunk.layer1", slice_chunk=2) as cam:
        l2 = cam(x, values, missing)
    with GradCAMPlusPlusExplainer(model, target_layer="image_encoder.trunk.layer1", slice_chunk=9) as cam:
        l9 = cam(x, values, missing)
    assert l2.raw.shape[-1] > r2.raw.shape[-1]
    assert_close_rel(l2.raw, l9.raw)
    scale = float(r9.raw.max()) * 0.8           # what a user sees: [0, 1] maps on a fixed scale, to 1e-5
    torch.testing.assert_close(r2.normalised("model", scale), r9.normalised("model", scale), rtol=0, atol=1e-5)
    bound = ClinicalBoundModel(model, values, missing, slice_chunk=9)
    layer = model.gradcam_layer
    with GradCAMPlusPlus(model=bound, target_layers=[layer]) as lib:
        logits = lib.activations_and_grads(x)
        logits[0, 1].backward()
        acts = lib.activations_and_grads.activations[0].numpy()            # (9, C, h, w): one case's slices
        grads = lib.activations_and_grads.gradients[0].numpy()
        ref = np.maximum(lib.get_cam_image(x, layer, None, acts, grads), 0)
    model.zero_grad(set_to_none=True)
    assert_close_rel(r2.raw[0].numpy(), ref)
    # raw per-slice maps: not normalised per slice
    peaks = r2.raw[0].amax(dim=(1, 2))
    assert (peaks > 0).all() and peaks.max() / peaks.min() > 1.01
    torch.testing.assert_close(r2.output.probs, r9.output.probs)


def test_feature_budget_recomputes_the_cnn_and_gives_the_same_maps(model):
    """Beyond ``feature_budget_mib`` the chunks' CNN feature maps are not kept but computed again in pass 3:
    the maps, scores and outputs are the same; the trunk runs once more for each such chunk (not the last,
    whose graph is kept)."""
    x = blobs(1, 9, seed=4)
    values, missing = clinical(1, seed=4)
    calls = []
    handle = model.image_encoder.trunk.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        results = {}
        chunk_mib = None
        for budget in ("default", 0.0, "one chunk"):
            calls.clear()
            kw = {} if budget == "default" else {"feature_budget_mib": chunk_mib if budget == "one chunk" else budget}
            with GradCAMPlusPlusExplainer(model, slice_chunk=2, **kw) as cam:
                results[budget] = cam(x, values, missing)
            results[budget].slices_through_cnn = sum(calls)
            if chunk_mib is None:                      # one chunk of 2 slices' feature maps, in MiB
                c, (h, w) = model.image_encoder.proj.in_channels, results[budget].grid
                chunk_mib = 2 * c * h * w * 4 / 2 ** 20
    finally:
        handle.remove()
    assert results["default"].slices_through_cnn == 9           # 5 chunks, features kept
    assert results[0.0].slices_through_cnn == 9 + 8             # chunks 1-4 again; the last keeps its graph
    assert results["one chunk"].slices_through_cnn == 9 + 6     # the first chunk fits the budget
    for budget in (0.0, "one chunk"):
        assert_close_rel(results[budget].raw, results["default"].raw)
        torch.testing.assert_close(results[budget].output.logits, results["default"].output.logits)
        torch.testing.assert_close(results[budget].encoding.tokens, results["default"].encoding.tokens)
    with pytest.raises(ValueError, match="feature_budget_mib"):
        GradCAMPlusPlusExplainer(model, feature_budget_mib=-1)


def test_slice_pooling_weight_reaches_the_maps(model):
    """The score is the case's: a slice's map scales with its slice-pooling weight (gradient through the
    pooling), unlike per-slice Grad-CAM++ of each slice alone."""
    x = blobs(1, 4, seed=5)
    values, missing = clinical(1, seed=5)
    x[0, 2] = x[0, 1]                                     # two identical slices
    res = gradcam_plus_plus(model, x, values, missing, slice_chunk=2)
    torch.testing.assert_close(res.raw[0, 1], res.raw[0, 2], rtol=1e-5, atol=1e-12)
    alone = gradcam_plus_plus(model, x[:, 1:2], values, missing)  # the same slice as a one-slice case
    assert not torch.allclose(alone.raw[0, 0], res.raw[0, 1], rtol=1e-3)


def test_padded_batch_equals_cases_one_by_one(model):
    x = blobs(2, 5, seed=7)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    x[1, 3:] = 0.0
    values, missing = clinical(2, seed=7)
    with GradCAMPlusPlusExplainer(model, slice_chunk=2) as cam:
        both = cam(x, values, missing, slice_mask=mask, target_class=[1, 0])
        first = cam(x[:1], values[:1], missing[:1], target_class=1)
        second = cam(x[1:, :3], values[1:], missing[1:], target_class=0)
    assert_close_rel(both.raw[0], first.raw[0])
    assert_close_rel(both.raw[1, :3], second.raw[0])
    assert (both.raw[1, 3:] == 0).all()
    assert both.slice_mask.tolist() == mask.tolist()


def test_missing_image_gives_zero_maps(model):
    x = blobs(2, 2, seed=8)
    values, missing = clinical(2, seed=8)
    res = gradcam_plus_plus(model, x, values, missing, image_present=torch.tensor([True, False]))
    assert res.raw[0].max() > 0 and (res.raw[1] == 0).all()
    none = gradcam_plus_plus(model, x, values, missing, image_present=torch.tensor([False, False]))
    assert (none.raw == 0).all() and none.output.probs.shape == (2, 2)


# ----------------------------------------------------------------------------------------- targets
def test_one_target_per_sample_equals_one_by_one(model):
    x = blobs(3, seed=11)[:, 0]
    values, missing = clinical(3, seed=11)
    targets = [1, 0, 1]
    batch = gradcam_plus_plus(model, x, values, missing, target_class=targets)
    assert batch.target_class.tolist() == targets
    for i in range(3):
        assert batch.raw[i].max() > 0
        single = gradcam_plus_plus(model, x[i:i + 1], values[i:i + 1], missing[i:i + 1], target_class=targets[i])
        assert_close_rel(batch.raw[i], single.raw[0])
    with pytest.raises(ValueError, match="one per case"):
        gradcam_plus_plus(model, x, values, missing, target_class=[1, 0])
    with pytest.raises(ValueError, match="outside"):
        gradcam_plus_plus(model, x, values, missing, target_class=2)


def test_default_target_is_positive_class_or_prediction(model):
    x = blobs(2, seed=12)[:, 0]
    values, missing = clinical(2, seed=12)
    assert gradcam_plus_plus(model, x, values, missing).target_class.tolist() == [1, 1]
    three = make_model(num_classes=3)
    res = gradcam_plus_plus(three, x, values, missing)
    assert res.target_class.tolist() == res.output.logits.argmax(1).tolist()


# ----------------------------------------------------------------------------------------- normalisation
def test_fixed_scale_keeps_weak_evidence_faint(model):
    """A model with smaller gradients (head x 0.5) has smaller raw maps; with the fixed scale its
    normalised maps are fainter, while per-case normalisation would paint both up to 1."""
    weak = copy.deepcopy(model)
    with torch.no_grad():
        weak.head.fc.weight.mul_(0.5)
        weak.head.fc.bias.mul_(0.5)
    x = blobs(2, 3, seed=13)
    values, missing = clinical(2, seed=13)
    scale = calibrate_cam_scale(model, [{"images": x, "clin_values": values, "clin_missing": missing}])
    strong_res = gradcam_plus_plus(model, x, values, missing)
    weak_res = gradcam_plus_plus(weak, x, values, missing)
    assert (weak_res.raw <= strong_res.raw + 1e-12).all() and weak_res.raw.sum() < 0.9 * strong_res.raw.sum()
    strong_n, weak_n = strong_res.normalised("model", scale), weak_res.normalised("model", scale)
    assert weak_n.amax() < strong_n.amax() and weak_n.mean() < strong_n.mean()
    assert 0.0 <= float(weak_n.min()) and float(strong_n.max()) <= 1.0
    by_case = weak_res.normalised("case")
    torch.testing.assert_close(by_case.amax(dim=(1, 2, 3)), torch.ones(2))
    # per case = per volume: one slice reaches 1, the others stay below (no hot spot on every slice)
    slice_peaks = by_case.amax(dim=(2, 3))
    assert ((slice_peaks < 0.999).sum(dim=1) >= 1).all()


def test_calibrate_cam_scale_is_the_percentile_of_raw_values(model):
    x = blobs(2, 2, seed=14)
    values, missing = clinical(2, seed=14)
    res = gradcam_plus_plus(model, x, values, missing)
    scale = calibrate_cam_scale(model, [(x[:1], values[:1], missing[:1]), (x[1:], values[1:], missing[1:])],
                                percentile=90)
    assert scale == pytest.approx(float(np.percentile(res.raw.numpy().ravel(), 90)), rel=1e-5)
    dead = copy.deepcopy(model)
    with torch.no_grad():
        dead.head.fc.weight.zero_()
    with pytest.raises(ValueError, match="zero"):
        calibrate_cam_scale(dead, [(x, values, missing)])
    assert cam_scale_from_metadata({"explain": {"cam_scale": 2.5}}) == 2.5
    assert cam_scale_from_metadata({"explain.cam_scale": 1.5}) == 1.5
    assert cam_scale_from_metadata({}) is None


def test_normalise_maps_modes():
    raw = torch.tensor([[[[0.0, 2.0], [1.0, 4.0]]], [[[0.0, 0.5], [0.25, 1.0]]]])   # (2, 1, 2, 2)
    fixed = normalise_maps(raw, "model", 2.0)
    torch.testing.assert_close(fixed[0, 0], torch.tensor([[0.0, 1.0], [0.5, 1.0]]))
    torch.testing.assert_close(fixed[1, 0], torch.tensor([[0.0, 0.25], [0.125, 0.5]]))
    case = normalise_maps(raw, "case")
    torch.testing.assert_close(case[0], case[1])
    assert (normalise_maps(torch.zeros(1, 2, 3, 3), "case") == 0).all()
    with pytest.raises(ValueError, match="cam scale"):
        normalise_maps(raw, "model", None)
    with pytest.raises(ValueError, match="normalise must be"):
        normalise_maps(raw, "slice", 1.0)
    up = upsample_maps(torch.rand(2, 3, 4, 4), (16, 12))
    assert up.shape == (2, 3, 16, 12) and (up >= 0).all()


# ----------------------------------------------------------------------------------------- hooks, layers
def test_no_hooks_left_behind(model):
    before = hook_counts(model)
    x = blobs(1, 3, seed=15)
    values, missing = clinical(1, seed=15)
    layer = model.gradcam_layer
    with GradCAMPlusPlusExplainer(model, slice_chunk=2) as cam:
        assert len(layer._forward_hooks) == 1
        cam(x, values, missing)
        cam(x, values, missing)
    assert hook_counts(model) == before
    assert len(layer._forward_hooks) == 0 and len(layer._backward_hooks) == 0
    gradcam_plus_plus(model, x, values, missing)                      # one-shot
    GradCAMPlusPlusExplainer(model)(x, values, missing)               # bare call, no `with`
    assert hook_counts(model) == before
    with pytest.raises(ValueError):
        with GradCAMPlusPlusExplainer(model) as cam:
            cam(x, values, missing, target_class=7)
    assert hook_counts(model) == before
    model.train()
    gradcam_plus_plus(model, x, values, missing)
    assert model.training
    model.eval()
    assert all(p.grad is None for p in model.parameters())            # parameters' .grad untouched


def test_transformer_tokens_with_reshape_transform(model):
    x = blobs(1, 5, seed=16)
    values, missing = clinical(1, seed=16)
    kw = dict(target_layer="image_encoder.blocks.0", reshape_transform="tokens")
    r2 = gradcam_plus_plus(model, x, values, missing, slice_chunk=2, **kw)
    r5 = gradcam_plus_plus(model, x, values, missing, slice_chunk=5, **kw)
    assert r2.raw.shape == (1, 5, 8, 8) and r2.raw.max() > 0 and r2.layer == "image_encoder.blocks.0"
    assert_close_rel(r2.raw, r5.raw)
    with pytest.raises(ValueError, match="reshape_transform"):
        gradcam_plus_plus(model, x, values, missing, target_layer="image_encoder.blocks.0")
    with pytest.raises(ValueError, match="inside model.image_encoder"):
        GradCAMPlusPlusExplainer(model, target_layer="head")
    with pytest.raises(ValueError, match="no image branch"):
        GradCAMPlusPlusExplainer(create_model(model_config("tiny", FIELDS, variant="clinical_only")))


def test_image_only_and_concat_variants():
    x = blobs(2, 3, seed=17)
    values, missing = clinical(2, seed=17)
    for variant in ("image_only", "concat"):
        m = make_model(variant)
        args = (None, None) if variant == "image_only" else (values, missing)
        r1 = gradcam_plus_plus(m, x, *args, slice_chunk=1)
        r6 = gradcam_plus_plus(m, x, *args, slice_chunk=6)
        assert r1.raw.max() > 0
        assert_close_rel(r1.raw, r6.raw)


def test_cam_output_is_the_models_forward(model):
    """The Grad-CAM++ pass (per-chunk slice embeddings, slice pooling and head on top) gives the model's own
    forward: logits, slice weights, cross-modal and clinical-to-image attention, on a batch with padding
    and a case without an image, in chunks of 2."""
    x = blobs(3, 5, seed=21)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False], [True] * 5])
    present = torch.tensor([True, True, False])
    values, missing = clinical(3, seed=21)
    res = gradcam_plus_plus(model, x, values, missing, slice_mask=mask, image_present=present, slice_chunk=2)
    with torch.no_grad():
        ref = model(x, mask, present, values, missing)
    torch.testing.assert_close(res.output.logits, ref.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(res.output.slice_weights, ref.slice_weights, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(res.output.cross_attention, ref.cross_attention, rtol=1e-5, atol=1e-6)
    assert res.output.reverse_attention.shape == ref.reverse_attention.shape
    torch.testing.assert_close(res.output.reverse_attention, ref.reverse_attention, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(res.encoding.tokens, ref_tokens(model, x, mask, present), rtol=1e-5, atol=1e-5)
    assert (res.raw[2] == 0).all() and (res.raw[1, 2:] == 0).all() and res.raw[0].max() > 0
    # the image self-attentions (for attention rollout), filled chunk by chunk, equal the model's
    res = gradcam_plus_plus(model, x, values, missing, slice_mask=mask, image_present=present, slice_chunk=2,
                            return_attentions=True)
    with torch.no_grad():
        ref = model(x, mask, present, values, missing, return_attentions=True)
    assert len(res.output.self_attentions) == len(ref.self_attentions) == len(model.image_encoder.blocks)
    for ours, theirs in zip(res.output.self_attentions, ref.self_attentions):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def ref_tokens(model, x, mask, present):
    with torch.no_grad():
        return model.encode_image(x, mask, present).tokens
