"""Patient-level bootstrap: correctness of the vectorised metrics, grouping, CIs, determinism, speed."""

import time

import numpy as np
import pytest
from sklearn.metrics import f1_score, recall_score, roc_auc_score

from mmxai_core.train.bootstrap import (MetricEngine, bootstrap_draws, bootstrap_metrics, percentile_ci,
                                        resample_weights, weighted_auc)
from mmxai_core.train.metrics import METRIC_NAMES, group_codes, point_metrics


def _binary(n, seed=0, sep=0.25):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p1 = np.clip(rng.normal(0.4 + sep * y, 0.2), 0, 1)
    return y, p1


def test_weighted_auc_equals_sklearn_on_expanded_sample_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 80)
    s = np.round(rng.random(80), 1)  # many ties
    w = rng.integers(0, 4, size=(5, 80)).astype(float)
    got = weighted_auc(y == 1, s, w)
    for b in range(5):
        idx = np.repeat(np.arange(80), w[b].astype(int))
        assert got[b] == pytest.approx(roc_auc_score(y[idx], s[idx]), abs=1e-12)
    assert weighted_auc(y == 1, s, np.ones(80))[0] == pytest.approx(roc_auc_score(y, s))


def test_engine_equals_sklearn_on_each_resample():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 60)
    p = rng.dirichlet(np.ones(3), 60)
    p[np.arange(60), y] += 0.3
    p /= p.sum(1, keepdims=True)
    w = next(resample_weights(np.arange(60) // 2, 4, seed=5))
    vals = MetricEngine(y, p)(w)
    for b in range(4):
        idx = np.repeat(np.arange(60), w[b].astype(int))
        if len(np.unique(y[idx])) < 3:
            continue
        yi, pi = y[idx], p[idx]
        pred = np.argmax(pi, 1)
        assert vals["accuracy"][b] == pytest.approx(np.mean(pred == yi))
        assert vals["sensitivity"][b] == pytest.approx(recall_score(yi, pred, average="macro"))
        assert vals["f1"][b] == pytest.approx(f1_score(yi, pred, average="macro"))
        assert vals["auc"][b] == pytest.approx(roc_auc_score(yi, pi, multi_class="ovr"))
        assert vals["specificity"][b] == pytest.approx(point_metrics(yi, pi)["metrics"]["specificity"])


def test_resample_weights_keep_patients_together():
    pid = np.array(["a", "a", "b", "c", "c", "c", "d"])
    codes, n_pat = group_codes(pid, pid.size)
    assert n_pat == 4
    w = np.concatenate(list(resample_weights(codes, 300, seed=1, chunk=64)))
    assert w.shape == (300, 7)
    np.testing.assert_array_equal(w[:, 0], w[:, 1])
    np.testing.assert_array_equal(w[:, 3], w[:, 4])
    np.testing.assert_array_equal(w[:, 3], w[:, 5])
    # each resample draws exactly 4 patients
    per_patient = w[:, [0, 2, 3, 6]]
    np.testing.assert_array_equal(per_patient.sum(1), 4)


def test_ci_contains_point_and_is_deterministic_by_seed():
    y, p1 = _binary(400, seed=3)
    pid = np.arange(400) // 2
    a = bootstrap_metrics(y, p1, pid, threshold=0.5, n_boot=500, seed=7)
    b = bootstrap_metrics(y, p1, pid, threshold=0.5, n_boot=500, seed=7)
    c = bootstrap_metrics(y, p1, pid, threshold=0.5, n_boot=500, seed=8)
    assert a == b
    assert a["metrics"]["auc"] != c["metrics"]["auc"]
    point = point_metrics(y, p1, 0.5)["metrics"]
    for name in METRIC_NAMES:
        m = a["metrics"][name]
        assert m["ci_low"] <= point[name] <= m["ci_high"]
        assert m["n_valid"] == 500 and m["n_skipped"] == 0


def test_ci_width_shrinks_with_n():
    widths = []
    for n in (100, 1600):
        y, p1 = _binary(n, seed=4)
        m = bootstrap_metrics(y, p1, np.arange(n), n_boot=400, seed=0)["metrics"]["auc"]
        widths.append(m["ci_high"] - m["ci_low"])
    assert widths[1] < 0.45 * widths[0]  # expected ratio about 1/4


def test_duplicated_cases_per_patient_do_not_shrink_patient_ci():
    n = 300
    y, p1 = _binary(n, seed=5)
    pid = np.arange(n)
    single = bootstrap_metrics(y, p1, pid, n_boot=600, seed=11)["metrics"]
    y2, p2, pid2 = np.concatenate([y, y]), np.concatenate([p1, p1]), np.concatenate([pid, pid])
    patient = bootstrap_metrics(y2, p2, pid2, n_boot=600, seed=11)["metrics"]
    case = bootstrap_metrics(y2, p2, np.arange(2 * n), n_boot=600, seed=11)["metrics"]
    for name in ("auc", "accuracy", "sensitivity"):
        w1 = single[name]["ci_high"] - single[name]["ci_low"]
        wp = patient[name]["ci_high"] - patient[name]["ci_low"]
        wc = case[name]["ci_high"] - case[name]["ci_low"]
        assert wp == pytest.approx(w1, rel=1e-9)  # identical draws: duplicates move together
        assert wc < 0.85 * w1  # a case-level bootstrap would wrongly shrink it (about 1/sqrt(2))


def test_undefined_resamples_are_skipped_and_counted():
    # 1 positive patient among 30: many resamples have no positive case
    y = np.zeros(30, int)
    y[0] = 1
    p1 = np.linspace(0.05, 0.95, 30)[::-1]
    res = bootstrap_metrics(y, p1, np.arange(30), n_boot=500, seed=0)
    auc = res["metrics"]["auc"]
    assert 0 < auc["n_skipped"] < 500 and auc["n_valid"] + auc["n_skipped"] == 500
    # P(no positive among 30 draws) = (29/30)^30 ~ 0.36
    assert 0.25 < auc["n_skipped"] / 500 < 0.47
    assert res["metrics"]["accuracy"]["n_skipped"] == 0
    assert res["metrics"]["specificity"]["n_skipped"] == 0
    assert any(w.startswith("auc:") for w in res["warnings"])
    d = bootstrap_draws(y, [p1], np.arange(30), n_boot=500, seed=0)[0]
    assert np.isnan(d["auc"]).sum() == auc["n_skipped"]


def test_percentile_ci_all_invalid():
    assert percentile_ci(np.full(10, np.nan)) == {"ci_low": None, "ci_high": None, "n_valid": 0,
                                                  "n_skipped": 10}


def test_1000_resamples_of_500_cases_is_fast():
    y, p1 = _binary(500, seed=6)
    pid = np.arange(500) // 2
    bootstrap_metrics(y, p1, pid, n_boot=10)  # warm-up
    t0 = time.perf_counter()
    res = bootstrap_metrics(y, p1, pid, n_boot=1000, seed=0)
    elapsed = time.perf_counter() - t0
    assert res["metrics"]["auc"]["n_valid"] == 1000
    assert elapsed < 2.0, f"1000 resamples of 500 cases took {elapsed:.2f} s"
