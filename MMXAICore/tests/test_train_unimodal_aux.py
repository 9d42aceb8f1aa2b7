"""The unimodal auxiliary losses of training (``train.aux_image_only``, ``train.aux_clinical_only``): each is
the cross-entropy of a prediction the model makes anyway (all clinical fields unknown; the missing-image
token), computed here independently through the model's plain forward."""

from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F

from mmxai_core.model import create_model, model_config
from mmxai_core.train.config import resolve_config
from mmxai_core.train.loop import Trainer

FIELDS = [("age", "numeric", 0), ("grade", "categorical", 3)]


def _batch():
    gen = torch.Generator().manual_seed(3)
    images = torch.randn(4, 2, 1, 64, 64, generator=gen)
    slice_mask = torch.tensor([[True, True], [True, False], [True, True], [True, False]])
    present = torch.tensor([True, True, False, True])          # case 2: image dropped
    values = torch.tensor([[0.3, 2.0], [0.1, 0.0], [0.7, 1.0], [0.5, 1.0]])
    missing = torch.tensor([[False, False], [True, True], [False, True], [True, False]])  # case 1: nothing known
    labels = torch.tensor([1, 0, 1, 0])
    return types.SimpleNamespace(images=images, slice_mask=slice_mask, clin_values=values, labels=labels), \
        present, missing


def _fake_trainer(model, w_image, w_clinical):
    """What ``Trainer._unimodal_loss`` reads of its trainer."""
    return types.SimpleNamespace(core=model, aux_image_weight=w_image, aux_clinical_weight=w_clinical,
                                 _loss=lambda logits, labels: F.cross_entropy(logits.float(), labels))


@pytest.fixture(scope="module")
def model():
    cfg = model_config("tiny", clinical_fields=FIELDS, embed_dim=32, depth=1, mil_hidden=16, image_size=64,
                       dropout=0.0)
    return create_model(cfg, seed=0).eval()


@pytest.mark.parametrize("w_image,w_clinical", [(0.7, 0.0), (0.0, 2.0), (1.0, 0.5)])
def test_unimodal_loss_is_the_cross_entropy_of_the_two_unimodal_predictions(model, w_image, w_clinical):
    batch, present, missing = _batch()
    enc = model.encode_image(batch.images, batch.slice_mask, present, batch_size=4)
    got = Trainer._unimodal_loss(_fake_trainer(model, w_image, w_clinical), batch, present, missing, enc)
    with torch.no_grad():
        img_rows = present                                     # cases 0, 1, 3
        image_only = model(batch.images[img_rows], batch.slice_mask[img_rows], None,
                           batch.clin_values[img_rows], torch.ones_like(missing[img_rows])).logits
        clin_rows = (~missing).any(1)                          # cases 0, 2, 3
        clinical_only = model(None, None, None, batch.clin_values[clin_rows], missing[clin_rows]).logits
    expected = w_image * F.cross_entropy(image_only, batch.labels[img_rows]) + \
        w_clinical * F.cross_entropy(clinical_only, batch.labels[clin_rows])
    assert torch.allclose(got.detach(), expected, atol=1e-6)
    # the gradient reaches the branch each loss is about: the CNN only through the image-only term
    model.zero_grad(set_to_none=True)
    got.backward()
    trunk_grad = next(model.image_encoder.parameters()).grad
    assert (trunk_grad is not None and float(trunk_grad.abs().sum()) > 0) == (w_image > 0)


def test_unimodal_loss_without_qualifying_rows_is_none(model):
    batch, _, missing = _batch()
    present = torch.zeros(4, dtype=torch.bool)
    enc = model.encode_image(None, batch_size=4)
    assert Trainer._unimodal_loss(_fake_trainer(model, 1.0, 0.0), batch, present, missing, enc) is None
    all_unknown = torch.ones_like(missing)
    assert Trainer._unimodal_loss(_fake_trainer(model, 0.0, 1.0), batch, present, all_unknown, enc) is None


def test_unimodal_weights_are_validated():
    with pytest.raises(Exception, match="train.aux_image_only"):
        resolve_config(None, {"train.aux_image_only": "-0.5"})
    with pytest.raises(Exception, match="train.aux_clinical_only"):
        resolve_config(None, {"train.aux_clinical_only": "-1"})
    cfg = resolve_config(None, {"train.aux_image_only": "0.5"})
    assert cfg.train.aux_image_only == 0.5 and cfg.train.aux_clinical_only == 0.0
