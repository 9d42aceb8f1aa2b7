"""Clinical schema: file round trips, schema validation errors, value parsing, DICOM prefill, drafting."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from mmxai_core.data.schema import (ClinicalSchema, ClinicalValueError, FieldSpec, dicom_age_to_years,
                                    draft_schema_from_csv, is_unknown, load_schema, parse_value, save_schema)
from mmxai_core.errors import SchemaError

SCHEMA = {
    "name": "breast",
    "classes": ["benign", "malignant"],
    "fields": [
        {"name": "age", "label": "Age", "type": "numeric", "unit": "years", "range": [18, 100],
         "help": "Age at imaging.", "dicom": "PatientAge"},
        {"name": "density", "label": "Breast density", "type": "ordinal", "categories": [1, 2, 3, 4]},
        {"name": "grade", "type": "ordinal", "categories": ["low", "intermediate", "high"]},
        {"name": "side", "type": "categorical", "categories": ["left", "right"]},
        {"name": "family_history", "type": "boolean"},
        {"name": "size", "type": "numeric", "unit": "mm", "range": [0, None]},
    ],
}


@pytest.fixture
def schema() -> ClinicalSchema:
    return ClinicalSchema.from_dict(SCHEMA)


# ------------------------------------------------------------------------------------------ files
@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_round_trip(tmp_path, schema, suffix):
    path = save_schema(schema, tmp_path / f"schema{suffix}")
    again = load_schema(path)
    assert again == schema
    assert again.to_dict() == schema.to_dict()
    assert again.names == ["age", "density", "grade", "side", "family_history", "size"]
    assert again.field("age").range == (18.0, 100.0)
    assert again.field("size").range == (0.0, None)
    assert again.classes == ["benign", "malignant"]
    # the file is the documented format, readable by a plain YAML / JSON reader
    text = path.read_text()
    raw = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    assert raw["fields"][1]["categories"] == [1, 2, 3, 4]
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write left no temporary file


def test_yaml_written_by_hand(tmp_path):
    (tmp_path / "s.yaml").write_text(
        "classes: [benign, malignant]\n"
        "fields:\n"
        "  - {name: age, type: numeric, unit: years, range: [18, 100], dicom: PatientAge}\n"
        "  - name: smoker\n"
        "    type: categorical\n"
        "    categories: ['no', 'former', 'yes']\n")
    s = load_schema(tmp_path / "s.yaml")
    assert s.field("smoker").categories == ("no", "former", "yes")
    assert s.field("age").label == "age"  # label defaults to the name


BAD_SCHEMAS = [
    ({"fields": [{"name": "a", "type": "numeric"}, {"name": "a", "type": "boolean"}]}, "'a'", "duplicate"),
    ({"fields": [{"name": "a", "type": "numeric", "categories": [1, 2]}]}, "'a'", "cannot have categories"),
    ({"fields": [{"name": "a", "type": "categorical", "categories": []}]}, "'a'", "empty"),
    ({"fields": [{"name": "a", "type": "ordinal"}]}, "'a'", "needs 'categories'"),
    ({"fields": [{"name": "a", "type": "numeric", "range": [5, 1]}]}, "'a'", "lo > hi"),
    ({"fields": [{"name": "a", "type": "numeric", "range": [1]}]}, "'a'", "[lo, hi]"),
    ({"fields": [{"name": "a", "type": "numeric", "range": [0, "x"]}]}, "'a'", "not a finite number"),
    ({"fields": [{"name": "a", "type": "float"}]}, "'a'", "unknown type"),
    ({"fields": [{"name": "a"}]}, "'a'", "missing 'type'"),
    ({"fields": [{"name": "a", "type": "boolean", "categories": ["n", "y"]}]}, "'a'", "boolean"),
    ({"fields": [{"name": "a", "type": "categorical", "range": [0, 1], "categories": ["x"]}]}, "'a'",
     "cannot have a range"),
    ({"fields": [{"name": "a", "type": "categorical", "categories": ["x", "X"]}]}, "'a'", "duplicates"),
    ({"fields": [{"name": "a", "type": "ordinal", "categories": [2, "2.0"]}]}, "'a'", "same number"),
    ({"fields": [{"name": "a", "type": "categorical", "categories": ["x", "unknown"]}]}, "'a'", "unknown"),
    ({"fields": [{"name": "a", "type": "categorical", "categories": [True, False]}]}, "'a'", "boolean"),
    ({"fields": [{"name": "a", "type": "numeric", "catgories": [1]}]}, "'a'", "unknown key"),
    ({"fields": [{"name": "label", "type": "numeric"}]}, "'label'", "reserved"),
    ({"fields": [{"name": "a", "type": "numeric", "dicom": "Patient Age"}]}, "'a'", "DICOM keyword"),
    ({"fields": [{"type": "numeric"}]}, "field", "no name"),
    ({"fields": []}, "fields", "non-empty"),
    ({"fields": [{"name": "a", "type": "numeric"}], "classes": ["x"]}, "classes", "at least two"),
    ({"fields": [{"name": "a", "type": "numeric"}], "classes": ["x", "X"]}, "class", "duplicate"),
    ({"fields": [{"name": "a", "type": "numeric"}], "colour": 1}, "colour", "unknown top-level"),
]


@pytest.mark.parametrize("data,who,what", BAD_SCHEMAS)
def test_schema_errors_name_file_and_field(tmp_path, data, who, what):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SchemaError) as info:
        load_schema(path)
    msg = str(info.value)
    assert msg.startswith(str(path))
    assert who in msg and what in msg
    assert "\n" not in msg


def test_file_level_errors(tmp_path):
    with pytest.raises(SchemaError, match="not found"):
        load_schema(tmp_path / "none.yaml")
    (tmp_path / "s.txt").write_text("fields: []")
    with pytest.raises(SchemaError, match=r"\.yaml, \.yml or \.json"):
        load_schema(tmp_path / "s.txt")
    (tmp_path / "s.yaml").write_text("fields: [\n")
    with pytest.raises(SchemaError, match="not valid YAML"):
        load_schema(tmp_path / "s.yaml")
    (tmp_path / "s.json").write_text("{")
    with pytest.raises(SchemaError, match="not valid JSON"):
        load_schema(tmp_path / "s.json")
    (tmp_path / "yesno.yaml").write_text("fields:\n  - {name: a, type: categorical, categories: [no, yes]}\n")
    with pytest.raises(SchemaError, match="quote"):  # YAML 1.1 reads bare no/yes as booleans
        load_schema(tmp_path / "yesno.yaml")


# ---------------------------------------------------------------------------------------- parsing
@pytest.mark.parametrize("raw", [None, float("nan"), np.nan, "", "  ", "unknown", "UNKNOWN", "Unknown", "NA",
                                 "na", "N/A", "NaN", "nan", "?", " ? "])
def test_unknown_spellings_for_every_type(schema, raw):
    assert is_unknown(raw)
    for f in schema.fields:
        assert parse_value(f, raw) is None


def test_none_string_is_not_unknown():
    f = FieldSpec(name="calc", type="categorical", categories=("none", "fine", "coarse"))
    assert parse_value(f, "None") == "none"
    assert not is_unknown("none")


def test_parse_numeric(schema):
    age = schema.field("age")
    assert parse_value(age, "52") == 52.0
    assert parse_value(age, " 52.5 ") == 52.5
    assert parse_value(age, 18) == 18.0 and parse_value(age, 100) == 100.0  # inclusive bounds
    assert parse_value(age, np.int64(40)) == 40.0
    assert parse_value(age, "4.5e1") == 45.0
    assert parse_value(schema.field("size"), "1e6") == 1e6  # open upper bound
    for raw, what in [("abc", "not a number"), ("52 years", "not a number"), ("1_000", "not a number"),
                      ("inf", "not a number"), (float("inf"), "not a finite number"), (True, "boolean"),
                      ("150", "out of range"), (17.9, "out of range"), ("-1", "out of range")]:
        with pytest.raises(ClinicalValueError) as info:
            parse_value(age, raw)
        msg = str(info.value)
        assert msg.startswith("field 'age':") and what in msg
        assert "[18, 100] years" in msg  # what is allowed
        assert info.value.field == "age" and what in info.value.problem


def test_parse_ordinal_and_categorical(schema):
    density, grade, side = schema.field("density"), schema.field("grade"), schema.field("side")
    assert parse_value(density, "2") == 2
    assert parse_value(density, 2.0) == 2
    assert parse_value(density, "3.0") == 3
    assert parse_value(density, np.float32(4)) == 4
    assert parse_value(grade, " High ") == "high"
    assert parse_value(side, "LEFT") == "left"
    assert [density.code(v) for v in (1, 2, 3, 4)] == [0, 1, 2, 3]
    assert grade.code("high") == 2 and grade.cardinality == 3
    with pytest.raises(ClinicalValueError, match=r"field 'density': value '5' is not a known category, "
                                                 r"expected one of 1, 2, 3, 4, or unknown"):
        parse_value(density, "5")
    with pytest.raises(ClinicalValueError, match="value 2.5 is not a known category"):
        parse_value(density, 2.5)
    with pytest.raises(ClinicalValueError, match="one of left, right"):
        parse_value(side, "centre")


@pytest.mark.parametrize("raw,expected", [("true", True), ("TRUE", True), ("yes", True), ("Yes", True),
                                          ("1", True), (1, True), (1.0, True), (True, True), (np.bool_(True), True),
                                          ("false", False), ("No", False), ("0", False), (0, False), (False, False)])
def test_parse_boolean(schema, raw, expected):
    assert parse_value(schema.field("family_history"), raw) is expected


@pytest.mark.parametrize("raw", ["maybe", "2", 2, "y", "t", 0.5])
def test_parse_boolean_rejects(schema, raw):
    with pytest.raises(ClinicalValueError, match="field 'family_history'.*not a boolean.*true/false"):
        parse_value(schema.field("family_history"), raw)


def test_parse_record(schema):
    rec = schema.parse_record({"age": "61", "density": "3", "family_history": "no"})
    assert rec == {"age": 61.0, "density": 3, "grade": None, "side": None, "family_history": False, "size": None}
    assert list(rec) == schema.names
    with pytest.raises(SchemaError, match="unknown field.*'weight'.*'bmi'"):
        schema.parse_record({"age": 50, "weight": 70, "bmi": 22})
    with pytest.raises(SchemaError) as info:
        schema.parse_record({"age": "200", "side": "up"})
    assert "field 'age'" in str(info.value) and "field 'side'" in str(info.value)


def test_dicom_age_and_prefill(schema):
    assert dicom_age_to_years("052Y") == 52.0
    assert dicom_age_to_years("006M") == 0.5
    assert dicom_age_to_years("002W") == pytest.approx(14 / 365.25)
    assert dicom_age_to_years("010D") == pytest.approx(10 / 365.25)
    assert dicom_age_to_years("45") == 45.0
    assert dicom_age_to_years("") is None
    with pytest.raises(SchemaError, match="nnnY"):
        dicom_age_to_years("52 years")
    assert schema.prefill_from_dicom({"PatientAge": "052Y", "Modality": "MG"}) == {"age": 52.0}
    assert schema.prefill_from_dicom({"PatientAge": "006M"}) == {}  # 0.5 years is outside [18, 100]
    sex = ClinicalSchema([FieldSpec(name="sex", type="categorical", categories=("female", "male"),
                                    dicom="PatientSex")])
    assert sex.prefill_from_dicom({"PatientSex": "F"}) == {"sex": "female"}


@settings(max_examples=300, deadline=None)
@given(raw=st.one_of(st.text(max_size=12), st.floats(allow_nan=True, allow_infinity=True),
                     st.integers(), st.booleans(), st.none()))
def test_parser_fuzz_only_schema_errors(raw):
    s = ClinicalSchema.from_dict(SCHEMA)
    for f in s.fields:
        try:
            v = parse_value(f, raw)
        except SchemaError as e:
            assert str(e).startswith(f"field '{f.name}':")
            continue
        if v is None:
            continue
        if f.type == "numeric":
            assert isinstance(v, float) and math.isfinite(v)
            lo, hi = f.range
            assert (lo is None or v >= lo) and (hi is None or v <= hi)
        elif f.type == "boolean":
            assert isinstance(v, bool)
        else:
            assert v in f.categories
            assert 0 <= f.code(v) < f.cardinality


# --------------------------------------------------------------------------------------- drafting
def test_draft_rules(tmp_path):
    csv = tmp_path / "clin.csv"
    csv.write_text(
        "patient_id,age,grade,er_positive,side,smoker,notes,empty,label\n"
        "p1,52,1,yes,left,no,a,,benign\n"
        "p2,61,3,no,Right,former,b,,malignant\n"
        "p3,,2,,LEFT,yes,c,NA,benign\n"
        "p4,44.5,unknown,Yes,right,no,d,,malignant\n")
    with pytest.warns(UserWarning) as record:
        s = draft_schema_from_csv(csv, max_categories=3)
    warned = " ".join(str(w.message) for w in record)
    assert "'notes'" in warned and "'empty'" in warned
    assert s.names == ["age", "grade", "er_positive", "side", "smoker"]  # reserved columns excluded
    age = s.field("age")
    assert age.type == "numeric" and age.dicom == "PatientAge"
    lo, hi = age.range
    assert lo < 44.5 and hi > 61 and lo >= 0 and hi - lo < 30  # widened but near the observed range
    assert s.field("grade").type == "ordinal" and s.field("grade").categories == (1, 2, 3)
    assert s.field("er_positive").type == "boolean"
    assert s.field("er_positive").label == "Er positive"
    assert s.field("side").categories == ("left", "Right")  # first spelling kept, case-insensitive
    assert s.field("smoker").categories == ("former", "no", "yes")
    # the draft is a valid schema that parses its own table
    import pandas as pd

    for rec in pd.read_csv(csv, dtype=str, keep_default_na=False)[s.names].to_dict("records"):
        s.parse_record(rec)
    save_schema(s, tmp_path / "draft.yaml")
    assert load_schema(tmp_path / "draft.yaml") == s


def test_draft_errors(tmp_path):
    with pytest.raises(SchemaError, match="not found"):
        draft_schema_from_csv(tmp_path / "none.csv")
    (tmp_path / "ids.csv").write_text("patient_id,label\np1,0\n")
    with pytest.raises(SchemaError, match="no column"):
        draft_schema_from_csv(tmp_path / "ids.csv")
