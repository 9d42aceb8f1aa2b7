"""Clinical-to-image attention (``reverse_fusion``), and the optional final token LayerNorm (``final_norm``),
head LayerNorm (``head_norm``) and fusion feed-forward layer (``fusion_ffn``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmxai_core.explain.coalition_decoder import two_state_decoder
from mmxai_core.explain.shapley import coalition_matrix
from mmxai_core.model import create_model, model_config
from mmxai_core.model.checkpoint import load_checkpoint, save_checkpoint
from mmxai_core.model.reverse_fusion import ClinicalToImageAttention

FIELDS = [("age", "numeric", 0), ("grade", "categorical", 3), ("size", "numeric", 0), ("er", "categorical", 2)]
VALUES = torch.tensor([[0.61, 2.0, 0.35, 1.0]])


def make_model(reverse=True, final_norm=False, seed=0, head_norm=True, fusion_ffn=True, token_pool="attention"):
    cfg = model_config("tiny", clinical_fields=FIELDS, embed_dim=32, depth=1, num_heads=4, fusion_heads=4,
                       mil_hidden=16, image_size=64, dropout=0.0, slice_chunk=2, reverse_fusion=reverse,
                       final_norm=final_norm, head_norm=head_norm, fusion_ffn=fusion_ffn, token_pool=token_pool)
    model = create_model(cfg, seed=seed).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # make the clinical fields matter (a random init barely uses them)
        for name, p in model.named_parameters():
            if not name.startswith("image_encoder.trunk"):
                p.add_(torch.randn(p.shape, generator=gen) * 0.3)
    return model


def test_reverse_attention_is_per_field_and_looks_over_the_image():
    attn = ClinicalToImageAttention(dim=16, num_heads=4).eval().requires_grad_(False)
    gen = torch.Generator().manual_seed(0)
    clin, img = torch.randn(2, 5, 16, generator=gen), torch.randn(2, 7, 16, generator=gen)
    out, weights = attn(clin, img)
    assert out.shape == (2, 5, 16) and weights.shape == (2, 4, 5, 7)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 5))   # softmax over image tokens
    changed = clin.clone()
    changed[:, 2] += torch.randn(2, 16, generator=gen)                     # one field's token only
    out2, _ = attn(changed, img)
    moved = (out2 - out).abs().amax(dim=(0, 2))
    assert moved[2] > 1e-3 and float(moved[[0, 1, 3, 4]].max()) == 0.0   # the other fields do not move
    with pytest.raises(ValueError, match="batch"):
        attn(clin, img[:1])


def test_model_output_carries_reverse_attention_and_the_module_matters():
    model = make_model()
    images = torch.randn(2, 3, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    mask = torch.tensor([[True, True, False], [True, True, True]])
    values = VALUES.expand(2, -1)
    missing = torch.tensor([[False, False, True, False], [False, False, False, False]])
    with torch.no_grad():
        out = model(images, mask, None, values, missing)
        n_tok = out.grid[0] * out.grid[1]
        assert out.reverse_attention.shape == (2, 3, 4, 4, n_tok)
        assert float(out.reverse_attention[0, 2].abs().max()) == 0.0      # padded slice
        torch.testing.assert_close(out.reverse_attention[mask].sum(-1), torch.ones(int(mask.sum()), 4, 4))
        without = make_model(reverse=False)
        without.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("reverse_fusion")})
        other = without(images, mask, None, values, missing)
    assert other.reverse_attention is None
    assert float((out.logits - other.logits).abs().max()) > 1e-3
    # no image: the clinical tokens attend to the missing-image token alone, and still reach the head
    with torch.no_grad():
        a = model(None, None, torch.zeros(1, dtype=torch.bool), VALUES, torch.zeros(1, 4, dtype=torch.bool))
        other_age = VALUES.clone()
        other_age[0, 0] = 0.1
        b = model(None, None, torch.zeros(1, dtype=torch.bool), other_age, torch.zeros(1, 4, dtype=torch.bool))
    assert torch.isfinite(a.logits).all() and float((a.logits - b.logits).abs().max()) > 1e-4


@pytest.mark.parametrize("slices,head_norm,fusion_ffn,pool", [(1, True, True, "attention"), (4, True, True, "attention"),
                                                            (1, False, False, "mean"), (4, False, False, "mean")])
def test_two_state_decoder_includes_the_reverse_path(slices, head_norm, fusion_ffn, pool):
    model = make_model(head_norm=head_norm, fusion_ffn=fusion_ffn, token_pool=pool)
    assert (model.fusion.ffn is None) != fusion_ffn
    assert isinstance(model.head.norm, torch.nn.LayerNorm) == head_norm
    images = torch.randn(1, slices, 1, 64, 64, generator=torch.Generator().manual_seed(3))
    mask = torch.ones(1, slices, dtype=torch.bool)
    entered_missing = torch.tensor([[False, True, False, False]])
    values = torch.where(entered_missing, 0.0, VALUES)
    states = torch.as_tensor(coalition_matrix(4)) & ~entered_missing
    with torch.inference_mode():
        enc = model.encode_image(images, mask)
        dec = two_state_decoder(model, enc, values, entered_missing)
        assert dec is not None and dec.uses_reverse
        ref = model.decode(enc, values.expand(len(states), -1), ~states).logits
        torch.testing.assert_close(dec(states), ref, rtol=0, atol=2e-5)


def test_options_round_trip_through_a_checkpoint_and_old_configs_keep_their_meaning(tmp_path):
    model = make_model(reverse=True, final_norm=False, head_norm=False, fusion_ffn=False)
    save_checkpoint(tmp_path / "ckpt", model)
    loaded = load_checkpoint(tmp_path / "ckpt")
    model2 = loaded[0] if isinstance(loaded, tuple) else loaded.model
    assert model2.config.reverse_fusion is True and model2.config.final_norm is False
    assert model2.config.head_norm is False and model2.config.fusion_ffn is False
    assert isinstance(model2.image_encoder.norm, torch.nn.Identity)
    images = torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(model2(images, None, None, VALUES, None).logits,
                                   model(images, None, None, VALUES, None).logits)
    # a config written before these options existed (no keys) builds the original architecture
    old = model.config.to_dict()
    del old["reverse_fusion"], old["final_norm"], old["head_norm"], old["fusion_ffn"]
    cfg = type(model.config).from_dict(old)
    assert cfg.reverse_fusion is False and cfg.final_norm is True and cfg.head_norm is True and cfg.fusion_ffn is True
    with pytest.raises(ValueError, match="final_norm"):
        model.config.replace(final_norm="no")
    with torch.no_grad():
        assert np.isfinite(model2(images, None, None, VALUES, None).probs.numpy()).all()


def test_gradcam_result_carries_the_encoding_the_shapley_values_reuse():
    from mmxai_core.explain.gradcam import gradcam_plus_plus
    from mmxai_core.explain.shapley import shapley_of_game
    from mmxai_core.explain.value_function import CoalitionValue

    model = make_model(head_norm=False, fusion_ffn=False, token_pool="mean")
    images = torch.randn(1, 3, 1, 64, 64, generator=torch.Generator().manual_seed(5))
    missing = torch.tensor([[False, False, True, False]])
    for chunk in (None, 1):                          # one pass, and the chunked three-pass path
        cam = gradcam_plus_plus(model, images, VALUES, missing, slice_chunk=chunk)
        with torch.no_grad():
            enc = model.encode_image(images)
        assert not cam.encoding.tokens.requires_grad
        torch.testing.assert_close(cam.encoding.tokens, enc.tokens, rtol=0, atol=1e-5)
        shared = shapley_of_game(CoalitionValue(model, images, VALUES, missing, target=1, encoding=cam.encoding))
        own = shapley_of_game(CoalitionValue(model, images, VALUES, missing, target=1))
        np.testing.assert_allclose(shared.values, own.values, atol=1e-6)
        assert abs(float(shared.prediction) - float(cam.probs[0, 1])) < 1e-5
