"""evaluate_predictions: one JSON-ready dict with point values, CIs, settings, calibration, per dataset."""

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mmxai_core import RESEARCH_USE_NOTICE
from mmxai_core.train.metrics import METRIC_NAMES, EvaluationError, evaluate_predictions


def _cohort(n=240, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p1 = np.clip(rng.normal(0.4 + 0.25 * y, 0.18), 0, 1)
    pid = np.array([f"P{i // 3:03d}" for i in range(n)])  # 3 cases per patient
    ds = np.where(np.arange(n) < n // 2, "cbis", "duke")
    return y, p1, pid, ds


def test_binary_result_is_complete_and_json_ready():
    y, p1, pid, ds = _cohort()
    r = evaluate_predictions(y, p1, pid, threshold=0.45, n_boot=300, seed=1, dataset=ds)
    text = json.dumps(r, allow_nan=False)
    back = json.loads(text)
    assert back["notice"] == RESEARCH_USE_NOTICE
    assert (back["task"], back["n_classes"], back["positive_class"]) == ("binary", 2, 1)
    assert (back["n_cases"], back["n_patients"]) == (240, 80)
    assert back["threshold"] == {"value": 0.45, "source": "given", "validation": None}
    assert back["bootstrap"] == {"n_boot": 300, "seed": 1, "unit": "patient", "method": "percentile",
                                 "ci_level": 0.95}
    assert set(back["metrics"]) == set(METRIC_NAMES)
    auc = back["metrics"]["auc"]
    assert auc["value"] == pytest.approx(roc_auc_score(y, p1))
    assert auc["ci_low"] < auc["value"] < auc["ci_high"] and auc["n_boot_valid"] == 300
    assert back["calibration"]["n_bins"] == 10 and 0 <= back["calibration"]["ece"] <= 1
    assert set(back["by_dataset"]) == {"cbis", "duke"}
    duke = back["by_dataset"]["duke"]
    assert duke["n_cases"] == 120 and duke["n_patients"] == 40
    m = ds == "duke"
    assert duke["metrics"]["auc"]["value"] == pytest.approx(roc_auc_score(y[m], p1[m]))
    assert duke["metrics"]["auc"]["ci_high"] - duke["metrics"]["auc"]["ci_low"] > \
        auc["ci_high"] - auc["ci_low"]


def test_default_threshold_and_missing_patient_ids_are_flagged():
    y, p1, _, _ = _cohort(60)
    r = evaluate_predictions(y, p1, None, n_boot=50)
    assert r["threshold"]["value"] == 0.5 and "default" in r["threshold"]["source"]
    assert r["bootstrap"]["unit"] == "case"
    assert any("threshold 0.5" in w for w in r["warnings"])
    assert any("no patient ids" in w for w in r["warnings"])


def test_multiclass_with_single_class_dataset():
    rng = np.random.default_rng(3)
    n = 150
    y = rng.integers(0, 3, n)
    p = rng.dirichlet(np.ones(3), n)
    ds = np.array(["a"] * 100 + ["b"] * 50)
    y[100:] = 2  # dataset b has one class only
    r = evaluate_predictions(y, p, np.arange(n), n_boot=100, dataset=ds)
    json.dumps(r, allow_nan=False)
    assert r["task"] == "multiclass" and r["threshold"]["value"] is None
    assert r["metrics"]["auc"]["value"] is not None
    b = r["by_dataset"]["b"]
    assert b["metrics"]["auc"]["value"] is None and b["metrics"]["auc"]["ci_low"] is None
    assert b["metrics"]["auc"]["n_boot_skipped"] == 100
    assert b["metrics"]["accuracy"]["ci_low"] is not None
    assert b["warnings"]


def test_input_errors():
    y, p1, pid, _ = _cohort(30)
    with pytest.raises(EvaluationError, match="patient_ids: expected 30"):
        evaluate_predictions(y, p1, pid[:10])
    bad = pid.astype(object)
    bad[4] = None
    with pytest.raises(EvaluationError, match="case 4"):
        evaluate_predictions(y, p1, bad)
    with pytest.raises(EvaluationError, match="dataset: expected 30"):
        evaluate_predictions(y, p1, pid, dataset=["x"])
    with pytest.raises(EvaluationError, match="n_boot"):
        evaluate_predictions(y, p1, pid, n_boot=-1)
