"""The two-state coalition decoder (explain/coalition_decoder.py, CrossModalFusion.two_state): equal to the
model's own decode for every kind of case it accepts, Shapley values equal to the reference path, and a
clean refusal (None -> reference path) where it does not apply."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmxai_core.explain.coalition_decoder import two_state_decoder
from mmxai_core.explain.shapley import clinical_shapley, coalition_matrix
from mmxai_core.explain.value_function import CoalitionValue
from mmxai_core.model import create_model, model_config

FIELDS = [("age", "numeric", 0), ("grade", "categorical", 3), ("size", "numeric", 0), ("er", "categorical", 2),
          ("pr", "categorical", 2), ("ki67", "numeric", 0)]
VALUES = np.array([0.61, 2, 0.35, 1, 0, 0.8], dtype=np.float32)


def make_model(variant="attention", token_pool="attention", num_classes=2, seed=0, **kw):
    cfg = model_config("tiny", clinical_fields=FIELDS, variant=variant, embed_dim=32, depth=1, num_heads=4,
                       fusion_heads=4, mil_hidden=16, image_size=64, dropout=0.0, token_pool=token_pool,
                       num_classes=num_classes, slice_chunk=2, **kw)
    model = create_model(cfg, seed=seed).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # make the clinical fields matter (random init barely uses them)
        for name, p in model.named_parameters():
            if not name.startswith("image_encoder.trunk"):
                p.add_(torch.randn(p.shape, generator=gen) * 0.3)
    return model


def reference_logits(model, encoding, states, entered_missing):
    values = torch.where(torch.as_tensor(entered_missing), 0.0, torch.as_tensor(VALUES))[None]
    missing = ~(torch.as_tensor(states) & ~torch.as_tensor(entered_missing)[None])
    return model.decode(encoding, values.expand(len(states), -1), missing).logits


def decoder_for(model, encoding, entered_missing):
    values = torch.where(torch.as_tensor(entered_missing), 0.0, torch.as_tensor(VALUES))[None]
    return two_state_decoder(model, encoding, values, torch.as_tensor(entered_missing)[None])


@pytest.mark.parametrize("token_pool,num_classes,slices,ffn", [("attention", 2, 1, False), ("mean", 3, 1, False),
                                                               ("attention", 2, 5, False), ("mean", 2, 5, False),
                                                               ("mean", 2, 5, True)])
def test_decoder_equals_model_decode_on_every_coalition(token_pool, num_classes, slices, ffn):
    """Both decoder paths: the direct one (mean token pooling, no fusion FFN: fused tokens never formed)
    and the token-wise one (attention pooling or an FFN)."""
    model = make_model(token_pool=token_pool, num_classes=num_classes, fusion_ffn=ffn)
    images = torch.randn(1, slices, 1, 64, 64, generator=torch.Generator().manual_seed(3))
    mask = torch.ones(1, slices, dtype=torch.bool)
    if slices > 2:
        mask[0, 1] = False                       # a padded slice takes no part
    entered_missing = np.array([False, False, True, False, False, False])
    states = torch.as_tensor(coalition_matrix(len(FIELDS)))
    with torch.inference_mode():
        enc = model.encode_image(images, mask)
        dec = decoder_for(model, enc, entered_missing)
        assert dec is not None and dec.n_slices == int(mask.sum())
        assert dec.direct == (token_pool == "mean" and not ffn)
        fast = dec(states)
        ref = reference_logits(model, enc, states, entered_missing)
    assert fast.shape == (len(states), num_classes)
    torch.testing.assert_close(fast, ref, rtol=0, atol=2e-5)
    # the states change the answer (the test would pass trivially on a model that ignores them)
    assert float(ref[:, -1].max() - ref[:, -1].min()) > 1e-2


def test_decoder_on_the_missing_image_token():
    model = make_model()
    states = torch.as_tensor(coalition_matrix(len(FIELDS)))
    no_missing = np.zeros(len(FIELDS), bool)
    with torch.inference_mode():
        enc = model.encode_image(None, batch_size=1)
        dec = decoder_for(model, enc, no_missing)
        torch.testing.assert_close(dec(states), reference_logits(model, enc, states, no_missing), rtol=0, atol=2e-5)


def test_clinical_tokeniser_is_field_wise():
    """What the decoder relies on: a field's token depends on that field's value and flag only."""
    model = make_model()
    enc = model.clinical_encoder
    values = torch.as_tensor(VALUES)[None]
    with torch.no_grad():
        both = enc(torch.cat([values, values]), torch.tensor([[True] * 6, [False] * 6]))      # (2, F, D)
        states = torch.tensor([[True, False, True, True, False, False]])
        mixed = enc(values, ~states)[0]
    expected = torch.where(states[0][:, None], both[1], both[0])
    torch.testing.assert_close(mixed, expected, rtol=1e-5, atol=1e-6)   # float rounding of batch-size dependent matmuls


def test_shapley_values_equal_the_reference_path():
    model = make_model()
    image = torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(5))
    missing = np.array([False, True, False, False, False, False])
    fast = clinical_shapley(model, image, VALUES, missing)
    vf = CoalitionValue(model, image, VALUES, missing, fast=False)
    from mmxai_core.explain.shapley import shapley_of_game

    ref = shapley_of_game(vf)
    assert vf._decoder(True) is None
    np.testing.assert_allclose(fast.values, ref.values, atol=1e-6, rtol=0)
    assert fast.base_value == pytest.approx(ref.base_value, abs=1e-6)
    assert fast.values[1] == 0.0 and np.abs(fast.values).max() > 1e-3


def test_given_encoding_is_used_instead_of_encoding_again():
    model = make_model()
    image = torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        enc = model.encode_image(image)
    a = CoalitionValue(model, image, VALUES, None)
    b = CoalitionValue(model, None, VALUES, None, encoding=enc)
    coalitions = coalition_matrix(len(FIELDS))
    np.testing.assert_allclose(a(coalitions), b(coalitions), atol=1e-7, rtol=0)
    with pytest.raises(ValueError, match="batch 1"):
        CoalitionValue(model, None, VALUES, None, encoding=enc.expand(2))


def test_row_and_slice_chunks_do_not_change_the_values():
    model = make_model()
    images = torch.randn(1, 5, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    coalitions = coalition_matrix(len(FIELDS))
    whole = CoalitionValue(model, images, VALUES, None, max_rows_per_chunk=4096)
    small = CoalitionValue(model, images, VALUES, None, max_rows_per_chunk=7)
    np.testing.assert_allclose(small(coalitions), whole(coalitions), atol=1e-6, rtol=0)
    assert whole._decoder(True).slice_chunk == 2            # config.slice_chunk: 3 chunks of 5 slices


def test_decoder_refuses_what_it_cannot_do():
    image = torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(5))
    no_missing = np.zeros(len(FIELDS), bool)
    concat = make_model(variant="concat")
    with torch.inference_mode():
        assert decoder_for(concat, concat.encode_image(image), no_missing) is None
    model = make_model()
    with torch.no_grad():                 # attention scores far apart: the shared shift would underflow
        model.fusion.attn.q.weight.mul_(1e4)
        model.fusion.attn.k.weight.mul_(1e4)
    with torch.inference_mode():
        assert decoder_for(model, model.encode_image(image), no_missing) is None
    # ... and the value function then falls back to the model's own decode, still exact
    vf = CoalitionValue(model, image, VALUES, None)
    ref = CoalitionValue(model, image, VALUES, None, fast=False)
    coalitions = coalition_matrix(len(FIELDS))
    np.testing.assert_allclose(vf(coalitions), ref(coalitions), atol=1e-7, rtol=0)


def test_direct_pooled_mean_equals_the_mean_of_the_fused_tokens():
    """TwoStateFusion.pooled_mean (never forms the fused tokens) against the mean over tokens of its own
    token-wise output, on random rows, several slices and a slice range."""
    model = make_model(token_pool="mean")
    images = torch.randn(1, 3, 1, 64, 64, generator=torch.Generator().manual_seed(5))
    values = torch.as_tensor(VALUES)[None]
    with torch.inference_mode():
        enc = model.encode_image(images)
        state_tokens = model.clinical_encoder(torch.cat([values, values]),
                                              torch.tensor([[True] * 6, [False] * 6]))
        fusion = model.fusion.two_state(enc.tokens[0], state_tokens)
        states = torch.rand(7, 6, generator=torch.Generator().manual_seed(6)) < 0.5
        for part in (slice(None), slice(1, 3)):
            direct = fusion.pooled_mean(states, part)
            tokenwise = fusion(states, part).mean(dim=2)
            assert direct.shape == tokenwise.shape == (7, 3 if part == slice(None) else 2, 32)
            torch.testing.assert_close(direct, tokenwise, rtol=1e-4, atol=2e-5)   # float32 sums in another order
        assert float((direct[0] - direct[1]).abs().max()) > 1e-4 or bool((states[0] == states[1]).all())


def test_prepared_budget_only_changes_what_is_kept_between_calls():
    """A long volume (5 slices in chunks of 2, slice pooling streamed over the chunks): with no budget for
    prepared terms every call prepares the chunks again, and the logits are the same as with them kept and
    as the model's own decode."""
    from mmxai_core.explain.coalition_decoder import TwoStateDecoder

    model = make_model(token_pool="mean")
    images = torch.randn(1, 5, 1, 64, 64, generator=torch.Generator().manual_seed(6))
    entered_missing = np.zeros(len(FIELDS), bool)
    states = torch.as_tensor(coalition_matrix(len(FIELDS)))
    with torch.inference_mode():
        enc = model.encode_image(images)
        kept = decoder_for(model, enc, entered_missing)
        values = torch.as_tensor(VALUES)[None]
        state_tokens = model.clinical_encoder(torch.cat([values, values]),
                                              torch.tensor([[True] * 6, [False] * 6]))
        none = TwoStateDecoder(model, enc.tokens[0], state_tokens, slice_chunk=2, prepared_budget_mib=0)
        assert none.prepare_all() and not none._kept
        assert len(kept._kept) == len(kept.starts) == 3
        ref = reference_logits(model, enc, states, entered_missing)
        torch.testing.assert_close(kept(states), ref, rtol=0, atol=2e-5)
        torch.testing.assert_close(none(states), kept(states), rtol=0, atol=1e-6)
        # rows in steps of any size: the streaming slice pooling is per row
        assert none.rows_per_step(2) >= 1
        torch.testing.assert_close(none(states[:7]), kept(states)[:7], rtol=0, atol=1e-6)
