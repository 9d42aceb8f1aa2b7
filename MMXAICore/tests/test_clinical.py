"""Clinical preprocessing: hand-checked numbers, unknown handling, JSON state, a real clinical table."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mmxai_core.data.clinical import ClinicalArrays, ClinicalPreprocessor
from mmxai_core.data.schema import ClinicalSchema, draft_schema_from_csv, save_schema, load_schema
from mmxai_core.errors import PreprocessingError, SchemaError


@pytest.fixture
def schema() -> ClinicalSchema:
    return ClinicalSchema.from_dict({"fields": [
        {"name": "x", "type": "numeric", "unit": "mm"},
        {"name": "grade", "type": "ordinal", "categories": ["low", "mid", "high"]},
        {"name": "er", "type": "boolean"},
        {"name": "side", "type": "categorical", "categories": ["left", "right"]},
        {"name": "const", "type": "numeric"},
    ]})


TRAIN = [
    {"x": "1", "grade": "low", "er": "yes", "side": "left", "const": 5},
    {"x": 2, "grade": "mid", "er": "no", "side": "right", "const": "5"},
    {"x": 3.0, "grade": "HIGH", "er": None, "side": "?", "const": 5.0},
    {"x": "4", "grade": "unknown", "er": 1, "side": "left", "const": ""},
    {"x": 100, "grade": "mid", "er": "0", "side": "right", "const": 5},
]


def test_fit_transform_by_hand(schema):
    pre = ClinicalPreprocessor(schema, iqr_k=1.5).fit(TRAIN)
    # x = [1, 2, 3, 4, 100]: Q1 = 2, Q3 = 4 (linear), IQR = 2, fences [-1, 7]; clipped [1, 2, 3, 4, 7]
    s = pre.stats_["x"]
    assert (s["q1"], s["q3"], s["clip_lo"], s["clip_hi"], s["min"], s["max"]) == (2, 4, -1, 7, 1, 7)
    new = [{"x": 1}, {"x": 4}, {"x": 7}, {"x": 100}, {"x": -5}, {"x": "2.5"}, {"x": "NA"}]
    out = pre.transform(new)
    np.testing.assert_allclose(out.values[:, 0], [0, 0.5, 1, 1, 0, 0.25, 0], atol=1e-7)
    assert out.missing[:, 0].tolist() == [False] * 6 + [True]
    # absent fields are unknown: value 0, missing True
    assert out.missing[:, 1:].all() and (out.values[:, 1:] == 0).all()

    train = pre.transform(TRAIN)
    assert isinstance(train, ClinicalArrays)
    assert train.values.dtype == np.float32 and train.missing.dtype == np.bool_
    assert train.values.shape == train.missing.shape == (5, 5)
    assert train.names == ("x", "grade", "er", "side", "const")
    np.testing.assert_allclose(train.values[:, 0], [0, 1 / 6, 2 / 6, 3 / 6, 1], rtol=1e-6)
    assert train.values[:, 1].tolist() == [0, 1, 2, 0, 1]          # low, mid, high, unknown, mid
    assert train.missing[:, 1].tolist() == [False, False, False, True, False]
    assert train.values[:, 2].tolist() == [1, 0, 0, 1, 0]          # yes, no, unknown, 1, "0"
    assert train.missing[:, 2].tolist() == [False, False, True, False, False]
    assert train.values[:, 3].tolist() == [0, 1, 0, 0, 1]
    assert train.missing[:, 3].tolist() == [False, False, True, False, False]
    # constant column -> 0.5 for every known value
    assert train.values[:, 4].tolist() == [0.5, 0.5, 0.5, 0, 0.5]
    assert train.missing[:, 4].tolist() == [False, False, False, True, False]
    assert (train.values[train.missing] == 0).all()


def test_no_clipping_and_never_known(schema):
    pre = ClinicalPreprocessor(schema, iqr_k=None).fit([{"x": 1}, {"x": 100}])
    out = pre.transform([{"x": 50.5}, {"x": 200}, {"const": 3}])
    np.testing.assert_allclose(out.values[:, 0], [0.5, 1, 0])
    assert out.values[2, 4] == 0.5 and not out.missing[2, 4]  # never known in training -> 0.5
    assert np.isnan(pre.inverse_numeric("const", 0.3))


def test_inverse_and_decode(schema):
    pre = ClinicalPreprocessor(schema).fit(TRAIN)
    assert pre.inverse_numeric("x", 0.25) == pytest.approx(2.5)
    np.testing.assert_allclose(pre.inverse_numeric("x", np.array([0.0, 1.0])), [1, 7])  # 100 was clipped to 7
    assert pre.inverse_numeric("const", 0.5) == 5.0
    assert pre.decode_category("grade", 2.0) == "high"
    assert pre.decode_category("er", 1) is True
    with pytest.raises(PreprocessingError, match="not numeric"):
        pre.inverse_numeric("grade", 0.5)
    with pytest.raises(PreprocessingError, match="outside 0..2"):
        pre.decode_category("grade", 3)


def test_model_fields(schema):
    pre = ClinicalPreprocessor(schema)
    assert pre.model_fields() == [("x", "numeric", 0), ("grade", "categorical", 3), ("er", "categorical", 2),
                                  ("side", "categorical", 2), ("const", "numeric", 0)]


def test_errors(schema):
    pre = ClinicalPreprocessor(schema)
    with pytest.raises(PreprocessingError, match="not fitted yet"):
        pre.transform(TRAIN)
    with pytest.raises(PreprocessingError, match="not fitted yet"):
        pre.to_json_dict()
    with pytest.raises(PreprocessingError, match="zero records"):
        pre.fit([])
    with pytest.raises(PreprocessingError, match="single dict"):
        pre.fit(TRAIN[0])
    with pytest.raises(SchemaError, match=r"record 1: field 'grade': value 'top'"):
        pre.fit([TRAIN[0], {"grade": "top"}])
    with pytest.raises(SchemaError, match="unknown field.*'weight'"):
        pre.fit([{"weight": 3}])
    with pytest.raises(PreprocessingError, match="iqr_k"):
        ClinicalPreprocessor(schema, iqr_k=-1)


def test_dataframe_input_ignores_other_columns(schema):
    df = pd.DataFrame(TRAIN)
    df["patient_id"] = [f"p{i}" for i in range(5)]
    df = df.drop(columns=["side"])  # an absent schema column is unknown
    pre = ClinicalPreprocessor(schema).fit(df)
    out = pre.transform(df)
    ref = ClinicalPreprocessor(schema).fit(TRAIN).transform([{k: v for k, v in r.items() if k != "side"}
                                                             for r in TRAIN])
    np.testing.assert_array_equal(out.values, ref.values)
    np.testing.assert_array_equal(out.missing, ref.missing)
    assert out.missing[:, 3].all()


def test_json_round_trip_bit_equal(schema):
    rng = np.random.default_rng(0)
    records = [{"x": float(v), "grade": rng.choice(["low", "mid", "high", "?"]), "er": bool(rng.integers(2)),
                "const": 5} for v in rng.lognormal(size=200)]
    pre = ClinicalPreprocessor(schema, iqr_k=1.5).fit(records[:150])
    text = json.dumps(pre.to_json_dict())
    again = ClinicalPreprocessor.from_json_dict(json.loads(text))
    a, b = pre.transform(records), again.transform(records)
    assert a.values.tobytes() == b.values.tobytes()
    assert a.missing.tobytes() == b.missing.tobytes()
    assert again.schema == schema and again.iqr_k == 1.5
    assert again.to_json_dict() == pre.to_json_dict()
    # only summary numbers, no training rows: the state has the same shape for 150 or 15 rows
    small = ClinicalPreprocessor(schema).fit(records[:15]).to_json_dict()
    assert set(small["numeric"]["x"]) == set(pre.to_json_dict()["numeric"]["x"])
    assert abs(len(json.dumps(small)) - len(text)) < 100
    with pytest.raises(PreprocessingError, match="not a clinical preprocessor state"):
        ClinicalPreprocessor.from_json_dict({"format": "other"})
    bad = json.loads(text)
    del bad["numeric"]["x"]
    with pytest.raises(PreprocessingError, match="numeric fields"):
        ClinicalPreprocessor.from_json_dict(bad)


def test_breast_cancer_table(tmp_path):
    """scikit-learn's Wisconsin breast cancer table (569 patients, 30 features) as a real clinical table."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    frame = data.frame.rename(columns={"target": "label"})
    frame.insert(0, "patient_id", [f"wdbc{i:03d}" for i in range(len(frame))])
    frame.loc[::7, "mean radius"] = np.nan  # some unknowns, as in real tables
    csv = tmp_path / "wdbc.csv"
    frame.to_csv(csv, index=False)

    schema = draft_schema_from_csv(csv)
    assert len(schema) == 30 and all(f.type == "numeric" for f in schema.fields)
    assert schema.field("mean radius").label == "Mean radius"
    save_schema(schema, tmp_path / "wdbc.yaml")
    schema = load_schema(tmp_path / "wdbc.yaml")

    train, test = frame.iloc[:400], frame.iloc[400:]
    pre = ClinicalPreprocessor(schema).fit(train)
    out_train, out_test = pre.transform(train), pre.transform(test)
    assert out_train.values.shape == (400, 30) and out_test.values.shape == (169, 30)
    for out in (out_train, out_test):
        assert np.isfinite(out.values).all()
        assert out.values.min() >= 0 and out.values.max() <= 1
    j = schema.names.index("mean radius")
    assert out_train.missing[:, j].sum() == len(range(0, 400, 7))
    assert out_train.missing.sum() == out_train.missing[:, j].sum()
    assert out_train.values[:, j].max() == 1.0 and out_train.values[~out_train.missing[:, j], j].min() == 0.0
    # a value inside the fences comes back in its unit
    k = schema.names.index("mean texture")
    row = int(np.argmin(np.abs(train["mean texture"].to_numpy() - train["mean texture"].median())))
    assert pre.inverse_numeric("mean texture", out_train.values[row, k]) == pytest.approx(
        train["mean texture"].iloc[row], rel=1e-5)
    # the fences clip: the scaled outputs would differ without clipping for some columns
    raw = ClinicalPreprocessor(schema, iqr_k=None).fit(train).transform(train)
    assert not np.allclose(raw.values, out_train.values)
