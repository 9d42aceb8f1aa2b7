"""Forward contract of the multimodal model: shapes, volumes, padding, batch independence, missing image,
determinism, the encode/decode split, Grad-CAM++ on the exposed CNN layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mmxai_core.model import GRADCAM_TARGET_LAYER, create_model, list_variants, model_config
from mmxai_core.model.fusion import CrossModalFusion

FIELDS = [("age", "numeric", 0), ("grade", "categorical", 3), ("er", "categorical", 2), ("size", "numeric", 0)]


def small_config(variant="attention", **kw):
    base = dict(embed_dim=32, depth=1, num_heads=4, fusion_heads=4, mil_hidden=16, trunk="resnet10t",
                trunk_out_index=2, image_size=64, dropout=0.0, slice_chunk=4)
    base.update(kw)
    return model_config("tiny", clinical_fields=FIELDS, variant=variant, **base)


def clinical(b, gen):
    values = torch.stack([torch.rand(b, generator=gen), torch.randint(0, 3, (b,), generator=gen).float(),
                          torch.randint(0, 2, (b,), generator=gen).float(), torch.rand(b, generator=gen)], 1)
    missing = torch.rand(b, 4, generator=gen) < 0.3
    return torch.where(missing, torch.zeros(()), values), missing


def volume_batch(b, s, gen, size=64):
    images = torch.randn(b, s, 1, size, size, generator=gen)
    counts = torch.randint(1, s + 1, (b,), generator=gen)
    counts[0] = s
    mask = torch.arange(s)[None, :] < counts[:, None]
    values, missing = clinical(b, gen)
    return images, mask, torch.ones(b, dtype=torch.bool), values, missing


@pytest.fixture(scope="module")
def models():
    return {v: create_model(small_config(v), seed=0).eval() for v in list_variants()}


def test_registry_has_the_four_variants():
    assert list_variants() == ["attention", "clinical_only", "concat", "image_only"]
    with pytest.raises(ValueError, match="unknown model variant"):
        create_model(small_config("nope"))


@pytest.mark.parametrize("variant", ["attention", "concat", "image_only", "clinical_only"])
@pytest.mark.parametrize("s", [1, 7])
def test_shapes_2d_and_3d(models, variant, s):
    gen = torch.Generator().manual_seed(s)
    images, mask, present, values, missing = volume_batch(3, s, gen)
    with torch.no_grad():
        out = models[variant](images, mask, present, values, missing)
    assert out.logits.shape == (3, 2) and out.probs.shape == (3, 2)
    torch.testing.assert_close(out.probs.sum(1), torch.ones(3))
    assert out.image_present.dtype == torch.bool and out.image_present.all()
    if variant == "clinical_only":
        assert out.slice_weights is None and out.cross_attention is None
        return
    assert out.grid == (8, 8)
    assert out.slice_weights.shape == (3, s)
    torch.testing.assert_close(out.slice_weights.sum(1), torch.ones(3))
    assert (out.slice_weights[~mask] == 0).all()
    assert out.token_weights.shape == (3, s, 64)
    if variant == "attention":
        assert out.cross_attention.shape == (3, s, 4, 64, 4)
        real = out.cross_attention[mask]
        torch.testing.assert_close(real.sum(-1), torch.ones_like(real[..., 0]))
        assert (out.cross_attention[~mask] == 0).all()
        torch.testing.assert_close(out.clinical_attention.sum(1), torch.ones(3))
    else:
        assert out.cross_attention is None and out.clinical_attention is None


def test_2d_image_is_a_one_slice_volume(models):
    gen = torch.Generator().manual_seed(1)
    images, _, _, values, missing = volume_batch(2, 1, gen)
    with torch.no_grad():
        a = models["attention"](images, None, None, values, missing)
        b = models["attention"](images[:, 0], None, None, values, missing)  # (B, 1, H, W)
    torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=0)


@pytest.mark.parametrize("variant", ["attention", "concat", "image_only"])
def test_padding_does_not_change_the_output(models, variant):
    gen = torch.Generator().manual_seed(2)
    images, _, _, values, missing = volume_batch(1, 3, gen)
    padded = torch.cat([images, torch.randn(1, 4, 1, 64, 64, generator=gen) * 5], 1)
    mask = torch.tensor([[True] * 3 + [False] * 4])
    with torch.no_grad():
        plain = models[variant](images, None, None, values, missing)
        pad = models[variant](padded, mask, None, values, missing)
    torch.testing.assert_close(pad.probs, plain.probs, rtol=0, atol=1e-6)
    torch.testing.assert_close(pad.slice_weights[:, :3], plain.slice_weights, rtol=0, atol=1e-6)


def test_batch_independence_in_eval(models):
    gen = torch.Generator().manual_seed(3)
    images, mask, present, values, missing = volume_batch(3, 5, gen)
    model = models["attention"]
    with torch.no_grad():
        first = model(images, mask, present, values, missing)
        images2, mask2, _, values2, missing2 = volume_batch(3, 5, gen)
        images2[0], mask2[0], values2[0], missing2[0] = images[0], mask[0], values[0], missing[0]
        present2 = torch.tensor([True, False, True])
        second = model(images2, mask2, present2, values2, missing2)
        alone = model(images[:1], mask[:1], present[:1], values[:1], missing[:1])
    for name in ("logits", "probs", "slice_weights", "cross_attention", "clinical_attention"):
        a, b = getattr(first, name)[0], getattr(second, name)[0]
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
        torch.testing.assert_close(a, getattr(alone, name)[0], rtol=0, atol=1e-5, msg=name)


def test_fusion_never_attends_across_samples_even_in_training():
    fusion = CrossModalFusion(16, 4).train()
    gen = torch.Generator().manual_seed(0)
    img, clin = torch.randn(3, 5, 16, generator=gen), torch.randn(3, 4, 16, generator=gen)
    out1, w1 = fusion(img, clin)
    img2, clin2 = img.clone(), clin.clone()
    img2[1:] += 3.0
    clin2[1:] -= 2.0
    out2, w2 = fusion(img2, clin2)
    assert w1.shape == (3, 4, 5, 4)
    torch.testing.assert_close(out1[0], out2[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(w1[0], w2[0], rtol=0, atol=1e-6)


def test_missing_image_uses_the_learned_token(models):
    gen = torch.Generator().manual_seed(4)
    images, mask, _, values, missing = volume_batch(2, 3, gen)
    model = models["attention"]
    present = torch.tensor([True, False])
    with torch.no_grad():
        out = model(images, mask, present, values, missing)
        other = model(images * 7 + 1, mask, present, values, missing)
        no_images = model(None, None, None, values[1:], missing[1:])
    assert out.image_present.tolist() == [True, False]
    torch.testing.assert_close(out.probs[1], other.probs[1], rtol=0, atol=0)
    assert out.slice_weights[1].tolist() == [1.0, 0.0, 0.0]
    torch.testing.assert_close(no_images.probs[0], out.probs[1], rtol=0, atol=1e-6)
    assert not no_images.image_present.any()
    # the token stands in: changing it changes the prediction of the image-less case only
    with torch.no_grad():
        delta = torch.randn(model.missing_image_token.shape, generator=gen)  # (a constant shift would
        model.missing_image_token.add_(delta)                                 # vanish in LayerNorm)
        moved = model(images, mask, present, values, missing)
        model.missing_image_token.sub_(delta)
    assert not torch.allclose(moved.probs[1], out.probs[1])
    torch.testing.assert_close(moved.probs[0], out.probs[0], rtol=0, atol=0)


def test_unknown_fields_use_their_embedding(models):
    model = models["attention"]
    gen = torch.Generator().manual_seed(5)
    images, mask, present, values, _ = volume_batch(1, 2, gen)
    missing = torch.tensor([[False, True, False, False]])
    changed = values.clone()
    changed[0, 1] = 2.0  # the value under a missing flag is ignored
    with torch.no_grad():
        a = model(images, mask, present, values, missing)
        b = model(images, mask, present, changed, missing)
        c = model(images, mask, present, changed, torch.zeros_like(missing))
    torch.testing.assert_close(a.probs, b.probs, rtol=0, atol=0)
    assert not torch.allclose(a.probs, c.probs)


def test_invalid_inputs_are_named(models):
    model = models["attention"]
    gen = torch.Generator().manual_seed(6)
    images, mask, present, values, missing = volume_batch(2, 2, gen)
    bad = values.clone()
    bad[0, 1], missing[0, 1] = 5.0, False  # grade has 3 categories
    with pytest.raises(ValueError, match="grade"):
        model(images, mask, present, bad, missing)
    with pytest.raises(ValueError, match=r"4 field\(s\)"):
        model(images, mask, present, values[:, :3], missing[:, :3])
    with pytest.raises(ValueError, match="no real slice"):
        model(images, torch.zeros_like(mask), present, values, missing)
    with pytest.raises(ValueError, match=r"\(B, S, 1, H, W\)"):
        model(torch.randn(2, 2, 3, 64, 64), mask, present, values, missing)


def test_chunked_equals_unchunked():
    gen = torch.Generator().manual_seed(7)
    images, mask, present, values, missing = volume_batch(2, 5, gen)
    small = create_model(small_config(slice_chunk=2), seed=3).eval()
    big = create_model(small_config(slice_chunk=64), seed=3).eval()
    with torch.no_grad():
        a, b = small(images, mask, present, values, missing), big(images, mask, present, values, missing)
    torch.testing.assert_close(a.probs, b.probs, rtol=0, atol=1e-6)
    torch.testing.assert_close(a.cross_attention, b.cross_attention, rtol=0, atol=1e-6)
    # the Grad-CAM layer sees one call per chunk of real slices (case-major order), or one with an override
    calls = []
    hook = small.gradcam_layer.register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    with torch.no_grad():
        small(images, mask, present, values, missing)
        n_real = int(mask.sum())
        assert calls == [2] * (n_real // 2) + ([n_real % 2] if n_real % 2 else [])
        calls.clear()
        c = small(images, mask, present, values, missing, slice_chunk=n_real)
    hook.remove()
    assert calls == [n_real]
    torch.testing.assert_close(c.probs, a.probs, rtol=0, atol=1e-6)


def test_same_seed_same_model_and_output():
    gen = torch.Generator().manual_seed(8)
    images, mask, present, values, missing = volume_batch(2, 3, gen)
    state = torch.get_rng_state()
    m1, m2 = create_model(small_config(), seed=11), create_model(small_config(), seed=11)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is left alone
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    m3 = create_model(small_config(), seed=12)
    assert not torch.equal(s1["head.fc.weight"], m3.state_dict()["head.fc.weight"])
    with torch.no_grad():
        o1, o2 = m1.eval()(images, mask, present, values, missing), m2.eval()(images, mask, present, values, missing)
    torch.testing.assert_close(o1.logits, o2.logits, rtol=0, atol=0)


def test_encode_once_decode_many_rows(models):
    model = models["attention"]
    gen = torch.Generator().manual_seed(9)
    images, mask, present, _, _ = volume_batch(1, 3, gen)
    values, missing = clinical(6, gen)
    with torch.no_grad():
        enc = model.encode_image(images, mask, present)
        fast = model.decode(enc, values, missing)
        slow = model(images.expand(6, -1, -1, -1, -1), mask.expand(6, -1), present.expand(6), values, missing)
    torch.testing.assert_close(fast.probs, slow.probs, rtol=0, atol=1e-6)
    assert fast.image_present.shape == (6,)


def test_self_attention_for_rollout(models):
    model = models["image_only"]
    gen = torch.Generator().manual_seed(10)
    images, mask, present, values, missing = volume_batch(2, 3, gen)
    with torch.no_grad():
        out = model(images, mask, present, values, missing, return_attentions=True)
    (att,) = out.self_attentions  # depth 1
    assert att.shape == (2, 3, 4, 64, 64)
    torch.testing.assert_close(att[mask].sum(-1), torch.ones(int(mask.sum()), 4, 64))
    assert (att[~mask] == 0).all()


def test_clinical_only_ignores_images(models):
    gen = torch.Generator().manual_seed(11)
    images, mask, present, values, missing = volume_batch(2, 2, gen)
    with torch.no_grad():
        a = models["clinical_only"](images, mask, present, values, missing)
        b = models["clinical_only"](None, None, None, values, missing)
    torch.testing.assert_close(a.probs, b.probs, rtol=0, atol=0)


def test_gradcam_plus_plus_hooks_the_cnn_feature_map(models):
    from pytorch_grad_cam import GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = models["attention"]
    assert model.get_submodule(GRADCAM_TARGET_LAYER) is model.gradcam_layer
    gen = torch.Generator().manual_seed(12)
    values, missing = clinical(2, gen)

    class Bound(nn.Module):  # pytorch-grad-cam calls the model with one tensor
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, x):
            return self.inner(x, clin_values=values, clin_missing=missing).logits

    x = torch.randn(2, 1, 64, 64, generator=gen)
    with GradCAMPlusPlus(model=Bound(), target_layers=[model.gradcam_layer]) as cam:
        maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(1), ClassifierOutputTarget(1)])
    assert maps.shape == (2, 64, 64)
    assert np.isfinite(maps).all() and (maps.reshape(2, -1).max(1) > 0).all()


def test_fused_attention_kernel_equals_the_written_out_attention():
    """Eval mode without probabilities runs F.scaled_dot_product_attention; with them, the written-out
    softmax(QK^T)V. Same tokens to float rounding; training always takes the written-out form."""
    from mmxai_core.model.blocks import MultiHeadAttention

    attn = MultiHeadAttention(32, 4, attn_drop=0.1).eval()
    x = torch.randn(3, 50, 32, generator=torch.Generator().manual_seed(0))
    fused, none = attn(x, need_weights=False)
    plain, probs = attn(x, need_weights=True)
    assert none is None and probs.shape == (3, 4, 50, 50)
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-6)
    attn.train()
    _, train_probs = attn(x, need_weights=False)
    assert train_probs is not None                       # dropout on the probabilities, as trained
    model = create_model(model_config("tiny", clinical_fields=[("age", "numeric", 0)], image_size=64,
                                      embed_dim=32, depth=2, num_heads=4, fusion_heads=4, mil_hidden=16),
                         seed=0).eval()
    images = torch.randn(2, 3, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a = model.encode_image(images).tokens
        b = model.encode_image(images, return_attentions=True).tokens
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_neutral_unknown_starts_as_an_average_entered_value_and_stays_field_wise():
    """neutral_unknown: the unknown token of a numeric field is the token of the middle of its scaled range
    (0.5) plus a learned offset (zero at the start); of a categorical field, the mean of its category
    embeddings plus the offset. The offset learns; a field's token still depends on that field alone."""
    from mmxai_core.model.clinical_encoder import ClinicalTokenizer
    from mmxai_core.model.config import ClinicalField

    fields = [ClinicalField("age", "numeric"), ClinicalField("grade", "categorical", 3),
              ClinicalField("er", "categorical", 2)]
    torch.manual_seed(0)
    enc = ClinicalTokenizer(fields, 16, neutral_unknown=True)
    with torch.no_grad():
        enc.cat_embed.normal_()                      # distinct category rows, so the mean is not any row
    unknown = enc.unknown_tokens()
    torch.testing.assert_close(unknown[0], 0.5 * enc.num_weight[0] + enc.num_bias[0])
    torch.testing.assert_close(unknown[1], enc.cat_embed[0:3].mean(0))
    torch.testing.assert_close(unknown[2], enc.cat_embed[3:5].mean(0))
    # gradient reaches the offset and, through the neutral token, the value parameters
    out = enc(torch.tensor([[0.2, 1.0, 0.0]]), torch.tensor([[True, True, False]]))
    (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(1))).sum().backward()  # not LN-flat
    assert enc.unknown.grad[:2].abs().sum() > 0 and enc.unknown.grad[2].abs().sum() == 0
    assert enc.num_weight.grad.abs().sum() > 0
    # field-wise: mixing states per field = gathering the tokens of whole rows in those states
    values = torch.tensor([[0.7, 2.0, 1.0]])
    with torch.no_grad():
        both = enc(torch.cat([values, values]), torch.tensor([[False] * 3, [True] * 3]))
        mixed = enc(values, torch.tensor([[True, False, True]]))[0]
    torch.testing.assert_close(mixed, torch.stack([both[1, 0], both[0, 1], both[1, 2]]), rtol=1e-5, atol=1e-6)
    # the default keeps the free "unknown" vector of older checkpoints
    assert ClinicalTokenizer(fields, 16).neutral_unknown is False
    assert model_config("tiny").neutral_unknown is not None
