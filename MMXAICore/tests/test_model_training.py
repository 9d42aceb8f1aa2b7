"""Every variant trains; missing data is trained on purpose (unknown embeddings, missing-image token)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmxai_core.model import apply_missingness, create_model, model_config, parameter_groups

FIELDS = [("age", "numeric", 0), ("grade", "categorical", 3), ("er", "categorical", 2), ("size", "numeric", 0)]


def small_config(variant="attention", **kw):
    base = dict(embed_dim=32, depth=1, num_heads=4, fusion_heads=4, mil_hidden=16, trunk="resnet10t",
                trunk_out_index=2, image_size=64, dropout=0.0, slice_chunk=8)
    base.update(kw)
    return model_config("tiny", clinical_fields=FIELDS, variant=variant, **base)


def batch(gen, b=4, s=2, missing_rate=0.0):
    images = torch.randn(b, s, 1, 64, 64, generator=gen)
    mask = torch.ones(b, s, dtype=torch.bool)
    mask[1:, 1] = False
    values = torch.stack([torch.rand(b, generator=gen), torch.randint(0, 3, (b,), generator=gen).float(),
                          torch.randint(0, 2, (b,), generator=gen).float(), torch.rand(b, generator=gen)], 1)
    missing = torch.rand(b, 4, generator=gen) < missing_rate
    labels = torch.arange(b) % 2
    return images, mask, torch.ones(b, dtype=torch.bool), torch.where(missing, 0.0, values), missing, labels


@pytest.mark.parametrize("variant", ["attention", "concat", "image_only", "clinical_only"])
def test_every_variant_trains(variant):
    model = create_model(small_config(variant), seed=0).train()
    opt = torch.optim.AdamW(parameter_groups(model, 1e-4), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    images, mask, present, values, missing, labels = batch(gen, missing_rate=0.3)
    present[2] = False  # one case without an image: the missing-image token takes part
    losses = []
    for step in range(6):
        out = model(images, mask, present, values, missing)
        loss = F.cross_entropy(out.logits, labels)
        opt.zero_grad()
        loss.backward()
        if step == 0:
            no_grad = [n for n, p in model.named_parameters() if p.grad is None]
            assert not no_grad, f"parameters without gradient: {no_grad[:5]}"
            for name, module in model.named_children():
                if not any(True for _ in module.parameters()):
                    continue                          # e.g. mean token pooling has nothing to learn
                norm = sum(float(p.grad.abs().sum()) for p in module.parameters())
                assert norm > 0, f"no gradient reaches {name}"
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0], losses


def test_parameter_groups_keep_tokens_out_of_decay():
    model = create_model(small_config(), seed=0)
    decay, no_decay = parameter_groups(model, 0.05)
    ids = {id(p) for p in no_decay["params"]}
    assert id(model.clinical_encoder.unknown) in ids and id(model.missing_image_token) in ids
    assert id(model.head.fc.weight) not in ids and decay["weight_decay"] == 0.05
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def _train_with_masking(clinical_rate, image_rate, steps=3):
    model = create_model(small_config(clinical_mask_rate=clinical_rate, image_dropout_rate=image_rate),
                         seed=0).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)  # decay on everything
    unknown0 = model.clinical_encoder.unknown.detach().clone()
    token0 = model.missing_image_token.detach().clone()
    gen, mask_gen = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    got_grad = {"unknown": False, "token": False}
    for _ in range(steps):
        images, mask, present, values, missing, labels = batch(gen, b=6)  # complete data
        missing, present = model.simulate_missing(missing, present, mask_gen)
        out = model(images, mask, present, values, missing)
        opt.zero_grad()
        F.cross_entropy(out.logits, labels).backward()
        for key, p in (("unknown", model.clinical_encoder.unknown), ("token", model.missing_image_token)):
            got_grad[key] |= p.grad is not None and bool(p.grad.abs().sum() > 0)
        opt.step()
    changed = {"unknown": not torch.equal(unknown0, model.clinical_encoder.unknown.detach()),
               "token": not torch.equal(token0, model.missing_image_token.detach())}
    return got_grad, changed


def test_masking_trains_unknown_embeddings_and_missing_image_token():
    got_grad, changed = _train_with_masking(0.5, 0.5)
    assert got_grad == {"unknown": True, "token": True}
    assert changed == {"unknown": True, "token": True}


def test_without_masking_they_stay_untouched():
    got_grad, changed = _train_with_masking(0.0, 0.0)
    assert got_grad == {"unknown": False, "token": False}
    assert changed == {"unknown": False, "token": False}


def test_apply_missingness_rates_and_rules():
    gen = torch.Generator().manual_seed(0)
    b, f = 4000, 10
    missing = torch.rand(b, f, generator=gen) < 0.2
    missing[:50] = True                      # cases with no known field: their image is never dropped
    present = torch.rand(b, generator=gen) < 0.9
    before = (missing.clone(), present.clone())
    new_missing, new_present = apply_missingness(missing, present, 0.3, 0.25, torch.Generator().manual_seed(1))
    assert torch.equal(before[0], missing) and torch.equal(before[1], present)  # inputs untouched
    assert (new_missing | ~missing).all() and not (new_present & ~present).any()  # only removes
    known = ~missing
    masked_frac = float((new_missing & known).sum() / known.sum())
    assert 0.27 < masked_frac < 0.31
    dropped = present & ~new_present
    assert 0.22 < float(dropped[50:].sum() / present[50:].sum()) < 0.28
    assert not dropped[:50].any()
    had_info = known.any(1) | present
    still = (~new_missing).any(1) | new_present
    assert still[had_info].all()  # never both modalities gone
    again = apply_missingness(missing, present, 0.3, 0.25, torch.Generator().manual_seed(1))
    assert torch.equal(again[0], new_missing) and torch.equal(again[1], new_present)
    same = apply_missingness(missing, present, 0.0, 0.0, gen)
    assert torch.equal(same[0], missing) and torch.equal(same[1], present)
    with pytest.raises(ValueError, match="clinical_mask_rate"):
        apply_missingness(missing, present, 1.5, 0.0)


def test_clinical_only_masking_keeps_a_known_field():
    model = create_model(small_config("clinical_only", clinical_mask_rate=0.95), seed=0)
    missing = torch.zeros(500, 4, dtype=torch.bool)
    new_missing, present = model.simulate_missing(missing, torch.ones(500, dtype=torch.bool),
                                                  torch.Generator().manual_seed(0))
    assert (~new_missing).any(1).all() and present.all()
    assert model.missingness_rates() == (0.95, 0.0)
