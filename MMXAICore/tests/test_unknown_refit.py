"""The refit of the clinical "unknown" embeddings (``train.unknown_refit``): its coalition rows, that it moves
only the "unknown" embeddings, and what it is for: a field whose value the model ignores gets Shapley value
0 afterwards, while a field the model uses keeps its attribution."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmxai_core.data.dataset import CaseItem
from mmxai_core.explain.shapley import clinical_shapley
from mmxai_core.model import create_model, model_config
from mmxai_core.train.unknown_refit import coalition_rows, refit_unknown

FIELDS = [("age", "numeric", 0), ("ignored", "numeric", 0), ("grade", "categorical", 3)]
IGNORED = 1


class _Cases(torch.utils.data.Dataset):
    """Random 64 px cases with 1-2 slices and a few missing clinical values."""

    def __init__(self, n: int, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.images = [torch.randn(1 + i % 2, 1, 64, 64, generator=gen) for i in range(n)]
        self.values = torch.stack([torch.rand(n, generator=gen), torch.rand(n, generator=gen),
                                   torch.randint(0, 3, (n,), generator=gen).float()], 1)
        self.missing = torch.rand(n, 3, generator=gen) < 0.15

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> CaseItem:
        return CaseItem(self.images[i], True, self.values[i], self.missing[i], i % 2, i)


def _model_ignoring_one_field() -> torch.nn.Module:
    """A random model whose field ``ignored`` has the same token whatever its value, and an "unknown"
    embedding away from that token (an "entered vs unknown" offset); ``age`` and ``grade`` have tokens
    that differ clearly between values."""
    cfg = model_config("tiny", clinical_fields=FIELDS, embed_dim=32, depth=1, mil_hidden=16, image_size=64,
                       dropout=0.0)
    model = create_model(cfg, seed=0).eval()
    tok = model.clinical_encoder
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        tok.num_weight[IGNORED] = 0.0                        # numeric fields are the first rows: age, ignored
        tok.unknown[IGNORED] = tok.num_bias[IGNORED] + 0.25 * torch.randn(32, generator=gen)
        tok.num_weight[0] = torch.randn(32, generator=gen)             # age and grade: values that matter
        tok.num_bias[0] = torch.randn(32, generator=gen)
        tok.cat_embed.copy_(torch.randn(3, 32, generator=gen))
    return model


def _mean_abs_shapley(model, data: _Cases, cases: range) -> np.ndarray:
    rows = []
    for i in cases:
        item = data[i]
        res = clinical_shapley(model, item.image[None], item.clin_values, torch.zeros(3, dtype=torch.bool),
                               output="log_odds")
        rows.append(np.abs(res.values))
    return np.mean(rows, axis=0)


def test_coalition_rows_one_row_per_entered_field_and_shapley_weighted_coalitions():
    missing = torch.tensor([[False, False, False, False], [True, False, True, False], [True, True, True, True]])
    gen = torch.Generator().manual_seed(0)
    case, field, entered, hidden = coalition_rows(missing, gen)
    assert case.tolist() == [0, 0, 0, 0, 1, 1]                # one row per entered (case, field)
    assert field.tolist() == [0, 1, 2, 3, 1, 3]
    diff = entered ^ hidden
    assert torch.equal(diff, torch.nn.functional.one_hot(field, 4).bool())   # they differ in that field only
    assert not entered[torch.arange(6), field].any() and hidden[torch.arange(6), field].all()
    assert (hidden >= missing[case]).all()                    # a missing value is never entered
    # coalition sizes (fields of the others kept) are uniform over 0..F-1
    many = torch.zeros(2000, 4, dtype=torch.bool)
    _, _, entered, _ = coalition_rows(many, torch.Generator().manual_seed(1))
    kept_others = (~entered).sum(1) - 1
    counts = torch.bincount(kept_others, minlength=4).float() / len(kept_others)
    assert torch.allclose(counts, torch.full((4,), 0.25), atol=0.03)


def test_refit_moves_only_the_unknown_embeddings_and_restores_the_model_state():
    model = _model_ignoring_one_field()
    model.train()
    model.clinical_encoder.num_bias.requires_grad_(False)     # a flag the refit must give back as it was
    data = _Cases(16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    entered = torch.zeros(4, 3, dtype=torch.bool)
    images = torch.stack([data[i].image[:1] for i in range(4)])
    with torch.no_grad():
        p_before = model.eval()(images, None, None, data.values[:4], entered).logits
    model.train()
    report = refit_unknown(model, data, passes=2, batch_size=8, seed=0)
    assert model.training
    assert not model.clinical_encoder.num_bias.requires_grad and model.clinical_encoder.unknown.requires_grad
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed == ["clinical_encoder.unknown"]
    with torch.no_grad():                                     # every field entered: the same prediction
        assert torch.equal(model.eval()(images, None, None, data.values[:4], entered).logits, p_before)
    assert report["passes"] == 2 and report["steps"] == 2 * 2 * 4 and report["rows"] > 0
    assert report["loss_last_pass"] < report["loss_first_pass"]
    assert len(report["unknown_change"]) == 3


def test_refit_zeroes_the_shapley_value_of_an_ignored_field_and_keeps_a_used_one():
    model = _model_ignoring_one_field()
    data = _Cases(24)
    before = _mean_abs_shapley(model, data, range(6))
    refit_unknown(model, data, passes=12, batch_size=8, seed=0)
    after = _mean_abs_shapley(model, data, range(6))
    assert before[IGNORED] > 1e-2                           # the offset is there before
    assert after[IGNORED] < 0.05 * before[IGNORED]          # and gone after
    assert after[0] > 0.3 * before[0] and after[2] > 0.3 * before[2]   # fields the model uses keep theirs


def test_refit_is_deterministic_and_refuses_a_model_without_field_tokens():
    a, b = _model_ignoring_one_field(), _model_ignoring_one_field()
    data = _Cases(8)
    refit_unknown(a, data, passes=1, batch_size=4, seed=3)
    refit_unknown(b, data, passes=1, batch_size=4, seed=3)
    assert torch.equal(a.clinical_encoder.unknown, b.clinical_encoder.unknown)
    image_only = create_model(model_config("tiny", embed_dim=32, depth=1, mil_hidden=16, variant="image_only"))
    with pytest.raises(ValueError, match="clinical field tokens"):
        refit_unknown(image_only, data, passes=1)
    with pytest.raises(ValueError, match="passes"):
        refit_unknown(a, data, passes=0)


@pytest.mark.parametrize("variant", ["concat", "clinical_only"])
def test_refit_works_for_every_variant_with_field_tokens(variant):
    """The other variants with a clinical tokenizer (no image encoder in ``clinical_only``): the refit runs
    and moves only the "unknown" embeddings."""
    cfg = model_config("tiny", clinical_fields=FIELDS, embed_dim=32, depth=1, mil_hidden=16, image_size=64,
                       variant=variant)
    model = create_model(cfg, seed=0)
    with torch.no_grad():
        model.clinical_encoder.unknown.add_(0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = refit_unknown(model, _Cases(8), passes=2, batch_size=4)
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed == ["clinical_encoder.unknown"]
    assert report["loss_last_pass"] < report["loss_first_pass"]
