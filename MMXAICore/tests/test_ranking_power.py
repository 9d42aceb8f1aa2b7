"""The power analysis of the field-ranking target (mmxai_core.data.synthetic.ranking_power)."""

from __future__ import annotations

import numpy as np
import pytest

from mmxai_core.data.synthetic import fields as synth_fields
from mmxai_core.data.synthetic import label_model
from mmxai_core.data.synthetic.ranking_power import design, main, mean_abs_contributions, ranking_rate


def test_design_has_the_label_model_form():
    rng = np.random.default_rng(0)
    values = synth_fields.sample_clinical(rng, 50)
    score = rng.standard_normal(50)
    x, owner = design(values, score)
    assert x.shape == (50, len(owner))
    # one column per numeric / ordinal / boolean field, K-1 per categorical, two image columns
    expected = sum(len(f.categories) - 1 if f.type == "categorical" else 1 for f in synth_fields.FIELDS) + 2
    assert len(owner) == expected and owner[-2:] == [None, None]
    np.testing.assert_allclose(x[:, owner.index("ca15_3")], np.log(values["ca15_3"]))
    density = values["breast_density"] - label_model.DENSITY_CENTER
    np.testing.assert_allclose(x[:, -1], density * score)


def test_contributions_sum_a_fields_columns_and_ignore_zero_coefficients():
    class Fit:                                     # a fitted model as far as the function looks
        coef_ = np.array([[2.0, 0.0, 1.0, -1.0]])

    owner = ["a", "b", "c", "c"]
    x_train = np.array([[0.0, 5.0, 0.0, 0.0], [2.0, 7.0, 1.0, 1.0]])
    x_test = np.array([[3.0, 9.0, 1.0, 0.0], [1.0, 1.0, 0.0, 1.0]])
    got = mean_abs_contributions(Fit(), x_train, x_test, owner)
    assert got["a"] == pytest.approx((abs(2 * 2.0) + abs(0.0)) / 2)
    assert got["b"] == 0.0
    assert got["c"] == pytest.approx((abs(0.5 + 0.5) + abs(-0.5 - 0.5)) / 2)


def test_the_target_is_a_lottery_at_the_demo_size_and_reliable_with_enough_patients():
    small = ranking_rate(280, reps=40, n_test=500, seed=1)
    large = ranking_rate(4480, reps=10, n_test=500, seed=1)
    assert large["rate"] >= 0.9, large
    assert small["rate"] <= 0.75, small              # about 0.4 expected (README)
    assert max(small["weakest"], key=small["weakest"].get) == "prior_biopsy"


def test_cli_prints_rates_and_refuses_bad_arguments(capsys):
    assert main(["--n", "300", "--reps", "2", "--n-test", "100"]) == 0
    assert "target met in" in capsys.readouterr().out
    assert main(["--n", "5", "--reps", "2"]) == 2
    assert "n_train >= 20" in capsys.readouterr().err
