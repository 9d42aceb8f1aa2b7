"""Exact Shapley values of the clinical fields: efficiency against the model's own forward pass, null
players, the reference implementations (shap's ExactExplainer, a brute-force subset sum over full forward
passes), the symmetry and dummy axioms, chunking, and the permutation estimate beyond the cutoff."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch

from mmxai_core.explain import shapley as shapley_mod
from mmxai_core.explain.shapley import (EXACT_MAX_FIELDS, ShapleyResult, clinical_shapley, coalition_matrix,
                                        exact_shapley, shapley_from_table)
from mmxai_core.explain.shapley_sampling import permutation_shapley
from mmxai_core.explain.value_function import CoalitionValue
from mmxai_core.model import create_model, model_config

FIELDS = [("age", "numeric", 0), ("grade", "categorical", 3), ("size", "numeric", 0), ("er", "categorical", 2),
          ("pr", "categorical", 2), ("ki67", "numeric", 0), ("her2", "categorical", 3), ("bmi", "numeric", 0),
          ("stage", "categorical", 4), ("nodes", "numeric", 0)]
VALUES = np.array([0.61, 2, 0.35, 1, 0, 0.8, 2, 0.45, 3, 0.1], dtype=np.float32)


def make_model(fields=FIELDS, seed=0, noise=0.2, variant="attention"):
    """A tiny 64x64 model whose clinical fields matter: non-trunk weights perturbed (fixed seed), head bias
    moved so that the all-unknown probability is near 0.5 (not saturated)."""
    cfg = model_config("tiny", clinical_fields=fields, variant=variant, embed_dim=32, depth=1, num_heads=4,
                       fusion_heads=4, mil_hidden=16, trunk_out_index=3, image_size=64, dropout=0.0)
    model = create_model(cfg, seed=seed).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith("image_encoder.trunk"):
                p.add_(torch.randn(p.shape, generator=gen) * noise)
    return model


def centre(model, image):
    """Shift the head bias so that f(image, all unknown) is 0.5."""
    f = len(model.config.clinical_fields)
    with torch.no_grad():
        logits = model(image, clin_values=torch.zeros(1, f), clin_missing=torch.ones(1, f, dtype=torch.bool)).logits
        model.head.fc.bias[1] -= float(logits[0, 1] - logits[0, 0])
    return model


@pytest.fixture(scope="module")
def image():
    return torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(7))


@pytest.fixture(scope="module")
def model(image):
    return centre(make_model(), image)


def forward_value(model, image, missing, target=1):
    """f via the FULL model (image re-encoded): probability of ``target``, float64."""
    vals = torch.as_tensor(VALUES[None, : len(missing)])
    with torch.no_grad():
        out = model(image, clin_values=torch.where(torch.as_tensor(missing)[None], 0.0, vals),
                    clin_missing=torch.as_tensor(missing)[None])
    return float(torch.softmax(out.logits.double(), -1)[0, target])


# ------------------------------------------------------------------------------------------------ basics
def test_coalition_matrix_rows_are_the_bits_of_the_row_index():
    m = coalition_matrix(3)
    assert m.shape == (8, 3) and m.dtype == bool
    assert m[5].tolist() == [True, False, True] and not m[0].any() and m[-1].all()


def test_exact_on_games_with_known_values():
    w = np.array([0.5, -1.0, 2.0, 0.25])
    phi, v = exact_shapley(lambda s: s.astype(float) @ w + 3.0, 4)          # additive: phi = w
    np.testing.assert_allclose(phi, w, atol=1e-12)
    assert v[0] == 3.0 and v[-1] == pytest.approx(3.0 + w.sum())
    # glove game: player 0 holds a left glove, players 1 and 2 right gloves; a pair is worth 1
    phi, _ = exact_shapley(lambda s: (s[:, 0] & (s[:, 1] | s[:, 2])).astype(float), 3)
    np.testing.assert_allclose(phi, [2 / 3, 1 / 6, 1 / 6], atol=1e-12)
    with pytest.raises(ValueError, match="EXACT_MAX_FIELDS"):
        exact_shapley(lambda s: np.zeros(len(s)), EXACT_MAX_FIELDS + 1)
    with pytest.raises(ValueError, match="2\\^d"):
        shapley_from_table(np.zeros(6))


def test_efficiency_against_the_full_forward_pass(model, image):
    res = clinical_shapley(model, image, VALUES, np.zeros(10, bool))
    assert isinstance(res, ShapleyResult) and res.method == "exact" and res.standard_errors is None
    assert res.n_evaluations == 1024
    f_x = forward_value(model, image, np.zeros(10, bool))
    f_0 = forward_value(model, image, np.ones(10, bool))
    assert res.prediction == pytest.approx(f_x, abs=1e-6) and res.base_value == pytest.approx(f_0, abs=1e-6)
    assert abs(res.values.sum() - (f_x - f_0)) < 1e-5
    assert abs(res.efficiency_residual) < 1e-12
    assert np.abs(res.values).max() > 1e-3                   # the test model's fields do matter
    d = res.to_dict()
    json.dumps(d)
    assert d["method"] == "exact" and len(d["fields"]) == 10 and "unknown" in d["quantity"]


def test_unknown_field_is_a_null_player_with_exactly_zero(model, image):
    missing = np.zeros(10, bool)
    missing[[2, 7]] = True
    res = clinical_shapley(model, image, VALUES, missing, entered=[str(v) for v in VALUES])
    assert res.values[2] == 0.0 and res.values[7] == 0.0
    assert res.entered[2] == "unknown" and res.entered[7] == "unknown" and res.entered[0] == str(VALUES[0])
    assert not res.known[2] and res.known.sum() == 8
    assert res.n_evaluations == 2 ** 8                        # the game has d = known fields only
    f_x = forward_value(model, image, missing)
    assert abs(res.values.sum() - (f_x - res.base_value)) < 1e-5
    assert list(res.order()[-2:]) == [2, 7]                   # unknown fields listed last


# ------------------------------------------------------------------------------------------- references
def test_equal_to_shap_exact_explainer_on_the_same_value_function(model, image):
    shap = pytest.importorskip("shap", reason="shap (optional extra) is the reference implementation")
    missing = np.zeros(10, bool)
    missing[[8, 9]] = True
    vf = CoalitionValue(model, image, VALUES, missing)
    d = vf.n_players
    # shap sees a 0/1 input: x = all ones (entered), one background row of zeros (unknown)
    masker = shap.maskers.Independent(np.zeros((1, d)), max_samples=1)
    explanation = shap.explainers.Exact(lambda x: vf(np.asarray(x) > 0.5), masker)(np.ones((1, d)), silent=True)
    ours = clinical_shapley(model, image, VALUES, missing)
    np.testing.assert_allclose(ours.values[vf.players], explanation.values[0], atol=1e-6, rtol=0)
    assert ours.base_value == pytest.approx(float(explanation.base_values[0]), abs=1e-6)


def test_equal_to_brute_force_subset_sum_over_full_forward_passes(model, image):
    missing = np.ones(10, bool)
    missing[[0, 1, 3, 5]] = False                             # d = 4 known fields
    players = np.flatnonzero(~missing)
    d = len(players)

    def v(subset):
        m = missing.copy()
        m[players] = True
        m[players[list(subset)]] = False
        return forward_value(model, image, m)

    brute = np.zeros(d)
    for i in range(d):
        rest = [j for j in range(d) if j != i]
        for size in range(d):
            for s in itertools.combinations(rest, size):
                weight = math.factorial(size) * math.factorial(d - size - 1) / math.factorial(d)
                brute[i] += weight * (v(s + (i,)) - v(s))
    res = clinical_shapley(model, image, VALUES, missing)
    np.testing.assert_allclose(res.values[players], brute, atol=1e-6, rtol=0)
    assert np.abs(brute).max() > 1e-3


# ------------------------------------------------------------------------------------------------ axioms
def test_dummy_field_that_the_model_ignores_gets_zero(image):
    model = centre(make_model(), image)
    j = 5                                                    # 'ki67', numeric
    k = int((model.clinical_encoder.num_index == j).nonzero())
    with torch.no_grad():                                    # token of field j = its "unknown" token, always
        model.clinical_encoder.num_weight[k] = 0.0
        model.clinical_encoder.num_bias[k] = model.clinical_encoder.unknown[j]
    res = clinical_shapley(model, image, VALUES, np.zeros(10, bool))
    assert abs(res.values[j]) < 1e-7
    assert np.abs(np.delete(res.values, j)).min() > 1e-6


def test_symmetric_fields_get_equal_values(image):
    fields = [("a", "numeric", 0), ("b", "numeric", 0), ("c", "categorical", 3), ("d", "numeric", 0)]
    model = centre(make_model(fields), image)
    enc = model.clinical_encoder
    with torch.no_grad():                                    # fields a and b: identical parameters
        for p in (enc.num_weight, enc.num_bias):
            p[1] = p[0]
        for p in (enc.unknown, enc.field_embed):
            p[1] = p[0]
    values = np.array([0.7, 0.7, 1, 0.2], np.float32)
    res = clinical_shapley(model, image, values, np.zeros(4, bool))
    assert res.values[0] == pytest.approx(res.values[1], abs=1e-7)
    assert abs(res.values[0]) > 1e-4
    # and in a toy game: players 0 and 2 interchangeable
    phi, _ = exact_shapley(lambda s: np.tanh(1.5 * s[:, 0] + 1.5 * s[:, 2] - s[:, 1] * s[:, 3]), 4)
    assert phi[0] == pytest.approx(phi[2], abs=1e-12)


def test_chunked_equals_unchunked(model, image):
    whole = clinical_shapley(model, image, VALUES, np.zeros(10, bool), max_rows_per_chunk=4096)
    chunked = clinical_shapley(model, image, VALUES, np.zeros(10, bool), max_rows_per_chunk=37)
    np.testing.assert_allclose(chunked.values, whole.values, atol=1e-6, rtol=0)
    assert chunked.base_value == pytest.approx(whole.base_value, abs=1e-6)
    with pytest.raises(ValueError, match="max_rows_per_chunk"):
        CoalitionValue(model, image, VALUES, None, max_rows_per_chunk=0)


# ------------------------------------------------------------------------------------ beyond the cutoff
def test_permutation_estimate_matches_exact_within_its_standard_errors(model, image):
    exact = clinical_shapley(model, image, VALUES, np.zeros(10, bool), output="log_odds")
    est = clinical_shapley(model, image, VALUES, np.zeros(10, bool), output="log_odds", method="permutation",
                           n_permutations=400, seed=3)
    assert est.method == "permutation" and est.n_permutations == 400
    se = est.standard_errors
    assert se.shape == (10,) and (se > 0).all()
    z = np.abs(est.values - exact.values) / se
    assert z.max() < 4.0, z
    assert abs(est.efficiency_residual) < 1e-9                 # each permutation telescopes
    assert est.prediction == pytest.approx(exact.prediction, abs=1e-6)
    assert est.n_evaluations < 400 * 9 + 2                     # shared prefixes evaluated once


def test_auto_switches_to_sampling_beyond_the_cutoff(model, image, monkeypatch):
    monkeypatch.setattr(shapley_mod, "EXACT_MAX_FIELDS", 6)
    missing = np.zeros(10, bool)
    missing[:3] = True                                       # d = 7 > 6
    res = clinical_shapley(model, image, VALUES, missing, n_permutations=64)
    assert res.method == "permutation" and res.values[:3].tolist() == [0.0, 0.0, 0.0]
    assert res.standard_errors[:3].tolist() == [0.0, 0.0, 0.0]
    missing[:4] = True                                       # d = 6 <= 6
    assert clinical_shapley(model, image, VALUES, missing).method == "exact"


def test_permutation_sampling_on_a_toy_game_converges():
    rng = np.random.default_rng(0)
    w, a = rng.normal(size=8), rng.normal(size=(8, 8))
    game = lambda s: np.tanh(s @ w) + np.einsum("ri,ij,rj->r", s * 1.0, a, s * 1.0)
    phi, _ = exact_shapley(game, 8)
    est = permutation_shapley(game, 8, n_permutations=4000, seed=1)
    assert np.all(np.abs(est.values - phi) < 4 * est.standard_errors + 1e-12)
    assert est.standard_errors.max() < 0.05
    plain = permutation_shapley(game, 8, n_permutations=4000, seed=1, antithetic=False)
    assert plain.n_permutations == 4000 and abs(plain.efficiency_residual) < 1e-9


# ------------------------------------------------------------------------------------------------ edges
def test_all_fields_unknown_and_other_variants(model, image):
    res = clinical_shapley(model, image, VALUES, np.ones(10, bool))
    assert (res.values == 0).all() and res.prediction == res.base_value and res.n_evaluations == 1
    img_only = make_model(variant="image_only")
    res = clinical_shapley(img_only, image, VALUES, np.zeros(10, bool))
    assert (res.values == 0).all() and not res.known.any()
    clin_only = make_model(variant="clinical_only")
    res = clinical_shapley(clin_only, None, VALUES, np.zeros(10, bool), output="log_odds")
    assert abs(res.values.sum() - (res.prediction - res.base_value)) < 1e-9
    assert np.abs(res.values).max() > 1e-4


def test_no_image_case_and_bad_inputs(model, image):
    res = clinical_shapley(model, image, VALUES, np.zeros(10, bool), image_present=False)
    res_none = clinical_shapley(model, None, VALUES, np.zeros(10, bool))
    np.testing.assert_allclose(res.values, res_none.values, atol=1e-6)
    with pytest.raises(ValueError, match="clin_values"):
        clinical_shapley(model, image, VALUES[:5], np.zeros(5, bool))
    with pytest.raises(ValueError, match="one case"):
        clinical_shapley(model, image.expand(2, -1, -1, -1), VALUES, np.zeros(10, bool))
    with pytest.raises(ValueError, match="target"):
        clinical_shapley(model, image, VALUES, np.zeros(10, bool), target=2)
    with pytest.raises(ValueError, match="output"):
        clinical_shapley(model, image, VALUES, np.zeros(10, bool), output="logit")


def test_model_mode_is_restored_and_nan_means_unknown(image):
    model = make_model().train()
    vals = VALUES.copy()
    vals[4] = np.nan
    res = clinical_shapley(model, image, vals)                # clin_missing from NaN
    assert model.training and res.values[4] == 0.0 and not res.known[4]
