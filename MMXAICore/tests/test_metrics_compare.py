"""Paired comparisons: DeLong by hand and against the paired bootstrap; ablation summary."""

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mmxai_core.train.compare import (ablation_summary, bootstrap_p_value, delong_ci, delong_test,
                                      paired_bootstrap_test, structural_components)
from mmxai_core.train.metrics import EvaluationError

# Hand example: positives are cases 0-2, negatives 3-4.
Y = np.array([1, 1, 1, 0, 0])
A = np.array([0.9, 0.6, 0.4, 0.5, 0.3])
B = np.array([0.8, 0.1, 0.7, 0.6, 0.2])


def test_structural_components_by_hand():
    auc, v10, v01 = structural_components(Y, A)
    # positive 0.4 beats negative 0.3 only -> 1/2; negative 0.5 is beaten by 0.9 and 0.6 -> 2/3
    np.testing.assert_allclose(v10, [1, 1, 0.5])
    np.testing.assert_allclose(v01, [2 / 3, 1])
    assert auc == pytest.approx(5 / 6)
    _, v10t, v01t = structural_components([1, 1, 0, 0], [0.5, 0.7, 0.5, 0.2])  # a tie counts 1/2
    np.testing.assert_allclose(v10t, [0.75, 1.0])
    np.testing.assert_allclose(v01t, [0.75, 1.0])


def test_delong_hand_computed_example():
    r = delong_test(Y, A, B)
    # V10_a = [1, 1, .5], V10_b = [1, 0, 1]  -> S10 = [[1/12, -1/12], [-1/12, 1/3]]  (divisor m - 1 = 2)
    # V01_a = [2/3, 1],   V01_b = [2/3, 2/3] -> S01 = [[1/18, 0], [0, 0]]          (divisor n - 1 = 1)
    # Var = S10 / 3 + S01 / 2
    assert r["auc_a"] == pytest.approx(5 / 6) and r["auc_b"] == pytest.approx(2 / 3)
    assert r["var_a"] == pytest.approx(1 / 18)
    assert r["var_b"] == pytest.approx(1 / 9)
    assert r["cov"] == pytest.approx(-1 / 36)
    assert r["diff"] == pytest.approx(-1 / 6)
    assert r["se"] == pytest.approx(math.sqrt(2 / 9))
    assert r["z"] == pytest.approx(-math.sqrt(2) / 4)
    assert r["p_value"] == pytest.approx(0.72367, abs=1e-4)  # 2 * (1 - Phi(0.35355))


def _correlated_models(n, seed, shift_b=0.35):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    shared = rng.normal(size=n)
    sa = 0.9 * y + shared + 0.6 * rng.normal(size=n)
    sb = (0.9 + shift_b) * y + shared + 0.6 * rng.normal(size=n)
    to_p = lambda s: 1 / (1 + np.exp(-s))  # noqa: E731
    return y, to_p(sa), to_p(sb)


def test_delong_auc_matches_sklearn_and_delong_ci_covers_it():
    y, pa, _ = _correlated_models(300, 1)
    r = delong_ci(y, pa)
    assert r["auc"] == pytest.approx(roc_auc_score(y, pa))
    assert r["ci_low"] < r["auc"] < r["ci_high"]


def test_delong_agrees_with_paired_bootstrap():
    y, pa, pb = _correlated_models(600, 2)
    d = delong_test(y, pa, pb)
    b = paired_bootstrap_test(y, pa, pb, np.arange(600), n_boot=2000, seed=0)
    assert b["diff"] == pytest.approx(d["diff"])
    assert b["diff"] == pytest.approx(roc_auc_score(y, pb) - roc_auc_score(y, pa))
    boot_se = (b["ci_high"] - b["ci_low"]) / (2 * 1.96)
    assert boot_se == pytest.approx(d["se"], rel=0.2)
    assert b["ci_low"] == pytest.approx(d["ci_low"], abs=0.015)
    assert b["ci_high"] == pytest.approx(d["ci_high"], abs=0.015)
    assert d["p_value"] < 0.01 and b["p_value"] < 0.01
    # no true difference: both tests agree that there is nothing to see
    y, pa, pb = _correlated_models(600, 3, shift_b=0.0)
    d = delong_test(y, pa, pb)
    b = paired_bootstrap_test(y, pa, pb, np.arange(600), n_boot=2000, seed=0)
    assert d["p_value"] > 0.05 and b["p_value"] > 0.05
    assert abs(d["p_value"] - b["p_value"]) < 0.15


def test_identical_models_give_zero_difference_and_p_one():
    y, pa, _ = _correlated_models(100, 4)
    b = paired_bootstrap_test(y, pa, pa, np.arange(100) // 2, n_boot=200)
    assert b["diff"] == 0 and b["ci_low"] == 0 and b["ci_high"] == 0 and b["p_value"] == 1.0
    d = delong_test(y, pa, pa)
    assert d["diff"] == 0 and d["p_value"] == 1.0


def test_bootstrap_p_value_edges():
    assert bootstrap_p_value(np.full(99, 0.1)) == pytest.approx(2 / 100)
    assert bootstrap_p_value(np.array([np.nan])) is None


def test_paired_bootstrap_multiclass_and_other_metric():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 200)
    pa = rng.dirichlet(np.ones(3), 200)
    pb = pa.copy()
    pb[np.arange(200), y] += 0.5
    pb /= pb.sum(1, keepdims=True)
    r = paired_bootstrap_test(y, pa, pb, np.arange(200), n_boot=300)
    assert r["diff"] > 0.1 and r["ci_low"] > 0 and r["p_value"] < 0.01
    r = paired_bootstrap_test(y, pa, pb, np.arange(200), metric="accuracy", n_boot=300)
    assert r["metric"] == "accuracy" and r["diff"] > 0


def test_delong_input_errors():
    with pytest.raises(EvaluationError, match="at least 2 positive"):
        delong_test([1, 0, 0], [0.2, 0.1, 0.3], [0.1, 0.2, 0.3])
    with pytest.raises(EvaluationError, match="binary"):
        delong_test([0, 1, 2, 1], np.eye(4)[:, :3], np.eye(4)[:, :3])


def _runs(n=200, seeds=(0, 1, 2)):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n)
    pid = [f"P{i // 2:03d}" for i in range(n)]
    runs = []
    for variant, sep in (("image", 0.15), ("fusion", 0.3)):
        for s in seeds:
            p1 = np.clip(rng.normal(0.4 + sep * y, 0.2), 0, 1)
            runs.append({"variant": variant, "seed": s, "y_true": y, "probs": p1, "patient_ids": pid,
                         "threshold": 0.5})
    return runs


def test_ablation_summary_means_cis_and_comparison():
    runs = _runs()
    s = ablation_summary(runs, reference="image", n_boot=300, seed=0)
    assert [v["variant"] for v in s["variants"]] == ["image", "fusion"]
    assert s["n_patients"] == 100 and s["n_cases"] == 200
    fusion = s["variants"][1]
    aucs = [roc_auc_score(r["y_true"], r["probs"]) for r in runs[3:]]
    assert fusion["metrics"]["auc"]["value"] == pytest.approx(np.mean(aucs))
    assert fusion["metrics"]["auc"]["sd_seeds"] == pytest.approx(np.std(aucs, ddof=1))
    assert fusion["metrics"]["auc"]["ci_low"] <= np.mean(aucs) <= fusion["metrics"]["auc"]["ci_high"]
    c = fusion["comparison"]
    ref_aucs = [roc_auc_score(r["y_true"], r["probs"]) for r in runs[:3]]
    assert c["diff"] == pytest.approx(np.mean(aucs) - np.mean(ref_aucs))
    assert c["ci_low"] > 0 and c["p_value"] < 0.01
    assert s["variants"][0]["comparison"] is None


def test_ablation_rejects_runs_on_different_cases():
    runs = _runs(seeds=(0,))
    runs[1] = dict(runs[1], y_true=1 - runs[1]["y_true"])
    with pytest.raises(EvaluationError, match=r"runs\[1\].*same cases"):
        ablation_summary(runs, n_boot=10)
