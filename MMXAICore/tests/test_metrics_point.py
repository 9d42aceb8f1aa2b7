"""Point metrics against scikit-learn and hand computations."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import f1_score, recall_score, roc_auc_score

from mmxai_core.errors import MMXAIError
from mmxai_core.train.bootstrap import MetricEngine
from mmxai_core.train.metrics import (METRIC_NAMES, EvaluationError, check_predictions, evaluate_predictions,
                                      point_metrics)


def _binary(n=200, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p1 = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)
    return y, np.column_stack([1 - p1, p1])


def _multiclass(n=300, c=4, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    p = rng.dirichlet(np.ones(c), n)
    p[np.arange(n), y] += 0.4
    return y, p / p.sum(axis=1, keepdims=True)


def test_binary_hand_example():
    # threshold 0.5: preds 1,1,0,0,1,0 ; truth 1,1,1,0,0,0 -> TP 2, FN 1, FP 1, TN 2
    y = np.array([1, 1, 1, 0, 0, 0])
    p1 = np.array([0.9, 0.6, 0.4, 0.3, 0.7, 0.1])
    m = point_metrics(y, p1, threshold=0.5)["metrics"]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    # pairs (pos > neg): 0.9 beats 3, 0.6 beats 2, 0.4 beats 2 -> 7 / 9
    assert m["auc"] == pytest.approx(7 / 9)


def test_binary_matches_sklearn_and_uses_threshold_not_argmax():
    y, p = _binary()
    for t in (0.3, 0.5, 0.62):
        m = point_metrics(y, p, threshold=t)["metrics"]
        pred = (p[:, 1] >= t).astype(int)
        assert m["accuracy"] == pytest.approx(np.mean(pred == y))
        assert m["sensitivity"] == pytest.approx(recall_score(y, pred))
        assert m["specificity"] == pytest.approx(recall_score(y, pred, pos_label=0))
        assert m["f1"] == pytest.approx(f1_score(y, pred))
        assert m["auc"] == pytest.approx(roc_auc_score(y, p[:, 1]))
    low = point_metrics(y, p, threshold=0.3)["metrics"]
    argmax_acc = np.mean(np.argmax(p, 1) == y)
    assert low["sensitivity"] > point_metrics(y, p, threshold=0.5)["metrics"]["sensitivity"]
    assert low["accuracy"] != pytest.approx(argmax_acc)
    # 1-D p(class 1) is the same as (N, 2)
    assert point_metrics(y, p[:, 1], 0.3)["metrics"] == low


def test_multiclass_matches_sklearn_macro():
    y, p = _multiclass()
    out = point_metrics(y, p)
    m = out["metrics"]
    pred = np.argmax(p, 1)
    assert m["accuracy"] == pytest.approx(np.mean(pred == y))
    assert m["sensitivity"] == pytest.approx(recall_score(y, pred, average="macro"))
    assert m["f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["auc"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"))
    spec = [np.mean(pred[y != c] != c) for c in range(4)]  # TN / (TN + FP) per class
    assert m["specificity"] == pytest.approx(np.mean(spec))
    assert [pc["n"] for pc in out["per_class"]] == np.bincount(y).tolist()
    assert out["warnings"] == []


def test_multiclass_absent_class_skipped_with_warning():
    y, p = _multiclass(c=4)
    keep = y != 2
    y, p = y[keep], p[keep]
    out = point_metrics(y, p)
    assert any("[2]" in w for w in out["warnings"])
    assert [pc["class"] for pc in out["per_class"]] == [0, 1, 3]
    aucs = [roc_auc_score(y == c, p[:, c]) for c in (0, 1, 3)]
    assert out["metrics"]["auc"] == pytest.approx(np.mean(aucs))
    assert out["metrics"]["sensitivity"] == pytest.approx(recall_score(y, np.argmax(p, 1), labels=[0, 1, 3],
                                                                       average="macro"))


def test_single_class_binary_gives_none_not_crash():
    y = np.zeros(10, int)
    p1 = np.linspace(0, 1, 10)
    out = point_metrics(y, p1)
    assert out["metrics"]["auc"] is None and out["metrics"]["sensitivity"] is None
    assert out["metrics"]["specificity"] == pytest.approx(0.5)
    assert out["warnings"]


def test_engine_with_unit_weights_equals_point_metrics():
    for y, p, t in [(*_binary(seed=3), 0.45), (*_multiclass(seed=4), None)]:
        point = point_metrics(y, p, t)["metrics"]
        eng = MetricEngine(y, p, t)(np.ones((1, y.size)))
        for name in METRIC_NAMES:
            assert eng[name][0] == pytest.approx(point[name], abs=1e-12)


@pytest.mark.parametrize("y, p, fragment", [
    ([0, 1], [[0.5, 0.5]], "shape"),
    ([0, 3], [[0.5, 0.5], [0.2, 0.8]], "case 1"),
    ([0, 1], [[0.9, 0.9], [0.2, 0.8]], "sums to"),
    ([0, 1], [[np.nan, 1.0], [0.2, 0.8]], "non-finite"),
    ([0.5, 1], [[0.5, 0.5], [0.2, 0.8]], "not a class index"),
    ([0, 1], [[1.0], [1.0]], "2 classes"),
])
def test_bad_inputs_raise_named_errors(y, p, fragment):
    with pytest.raises(EvaluationError, match=fragment) as info:
        check_predictions(np.array(y), np.array(p))
    assert isinstance(info.value, MMXAIError)


def test_threshold_rejected_for_multiclass():
    y, p = _multiclass(n=30)
    with pytest.raises(EvaluationError, match="binary"):
        point_metrics(y, p, threshold=0.5)


@st.composite
def _cases(draw):
    n = draw(st.integers(2, 25))
    c = draw(st.integers(2, 4))
    y = np.array(draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
    raw = np.array(draw(st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=n * c, max_size=n * c)))
    raw = raw.reshape(n, c) + 1e-3
    t = draw(st.floats(0.0, 1.0))
    return y, raw / raw.sum(axis=1, keepdims=True), t


@settings(max_examples=60, deadline=None)
@given(_cases())
def test_metrics_stay_in_unit_interval(case):
    y, p, t = case
    threshold = t if p.shape[1] == 2 else None
    m = point_metrics(y, p, threshold)["metrics"]
    for name in METRIC_NAMES:
        assert m[name] is None or 0.0 <= m[name] <= 1.0
    eng = MetricEngine(y, p, threshold)(np.ones((1, y.size)))
    for name in METRIC_NAMES:
        if m[name] is None:
            assert np.isnan(eng[name][0])
        else:
            assert eng[name][0] == pytest.approx(m[name], abs=1e-9)
    res = evaluate_predictions(y, p, np.arange(y.size) // 2, threshold=threshold, n_boot=20)
    json.dumps(res, allow_nan=False)
    for name in METRIC_NAMES:
        e = res["metrics"][name]
        for k in ("value", "ci_low", "ci_high"):
            assert e[k] is None or 0.0 <= e[k] <= 1.0
