"""Property-based tests (hypothesis) of the clinical value parser (``parse_value``), the clinical
preprocessor and the manifest validator: whatever comes in, the answer is a valid value or the package's
own error naming the field / row, never a raw exception; accepted values round-trip; fitted state is
plain JSON and transforms are finite, in range and batch-independent. Research use, not for diagnosis.
"""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mmxai_core.data.clinical import ClinicalPreprocessor
from mmxai_core.data.schema import ClinicalSchema, ClinicalValueError, parse_value
from mmxai_core.errors import ManifestError, MMXAIError

SCHEMA = ClinicalSchema.from_dict({"fields": [
    {"name": "age", "type": "numeric", "range": [18, 100]},
    {"name": "marker", "type": "numeric"},
    {"name": "grade", "type": "ordinal", "categories": [1, 2, 3]},
    {"name": "density", "type": "ordinal", "categories": ["A", "B", "C", "D"]},
    {"name": "side", "type": "categorical", "categories": ["left", "right"]},
    {"name": "family", "type": "boolean"},
]})

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ANY_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers(-10**30, 10**30) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12) | st.binary(max_size=8) | st.sampled_from(["NA", "?", "unknown", " 2 ", "B", "yes",
                                                                         "1e3", "nan", "-inf", "0x10", "½"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=2),
    max_leaves=4)


@SETTINGS
@given(raw=ANY_VALUE, which=st.sampled_from(SCHEMA.names))
def test_parse_value_returns_a_valid_value_or_a_clinical_value_error(raw, which):
    field = SCHEMA.field(which)
    try:
        value = parse_value(field, raw)
    except ClinicalValueError as exc:
        assert which in str(exc) and "\n" not in str(exc)
        return
    if value is None:
        return
    if field.type == "numeric":
        assert isinstance(value, float) and math.isfinite(value)
        if field.range is not None:
            assert field.range[0] <= value <= field.range[1]
    elif field.type == "boolean":
        assert isinstance(value, bool)
    else:
        assert value in field.categories
    assert parse_value(field, value) == value  # idempotent: a parsed value parses to itself


@SETTINGS
@given(x=st.floats(18, 100))
def test_numbers_in_range_round_trip_as_numbers_and_as_text(x):
    age = SCHEMA.field("age")
    assert parse_value(age, x) == x
    assert parse_value(age, repr(x)) == x
    assert parse_value(age, f"  {x!r} ") == x


@SETTINGS
@given(x=st.one_of(st.floats(-1e6, 17.999), st.floats(100.001, 1e6)))
def test_numbers_out_of_range_are_refused(x):
    with pytest.raises(ClinicalValueError, match="age"):
        parse_value(SCHEMA.field("age"), x)


@SETTINGS
@given(which=st.sampled_from(["grade", "density", "side", "family"]), data=st.data())
def test_categories_round_trip_in_any_spelling(which, data):
    field = SCHEMA.field(which)
    levels = [False, True] if field.type == "boolean" else list(field.categories)
    level = data.draw(st.sampled_from(levels))
    spelled = data.draw(st.sampled_from([str(level), str(level).upper(), str(level).lower(), f" {level} "]))
    assert parse_value(field, spelled) == level
    assert parse_value(field, level) == level


RECORD = st.fixed_dictionaries({}, optional={
    "age": st.none() | st.floats(18, 100) | st.sampled_from(["NA", "?"]),
    "marker": st.none() | st.floats(-1e9, 1e9) | st.integers(-5, 5),
    "grade": st.none() | st.sampled_from([1, 2, 3, "2", 3.0]),
    "density": st.none() | st.sampled_from(["A", "b", "C ", "D"]),
    "side": st.none() | st.sampled_from(["left", "RIGHT"]),
    "family": st.none() | st.booleans() | st.sampled_from(["yes", "no", "0", "1"]),
})


@SETTINGS
@given(train=st.lists(RECORD, min_size=1, max_size=25), other=st.lists(RECORD, min_size=1, max_size=6))
def test_preprocessor_outputs_are_finite_in_range_json_and_batch_independent(train, other):
    pre = ClinicalPreprocessor(SCHEMA).fit(train)
    state = json.dumps(pre.to_json_dict(), allow_nan=False)  # plain JSON, no NaN even for constant columns
    again = ClinicalPreprocessor.from_json_dict(json.loads(state))
    out = pre.transform(other)
    assert out.values.dtype == np.float32 and out.values.shape == (len(other), len(SCHEMA))
    assert np.isfinite(out.values).all()
    assert (out.values[out.missing] == 0).all()
    for j, (name, kind, k) in enumerate(pre.model_fields()):
        col = out.values[~out.missing[:, j], j]
        if kind == "numeric":
            assert ((col >= 0) & (col <= 1)).all(), (name, col)
        else:
            assert ((col == np.round(col)) & (col >= 0) & (col < k)).all(), (name, col)
    np.testing.assert_array_equal(again.transform(other).values, out.values)
    for i, rec in enumerate(other):  # a record's row does not depend on the rest of the batch
        one = pre.transform([rec])
        np.testing.assert_array_equal(one.values[0], out.values[i])
        np.testing.assert_array_equal(one.missing[0], out.missing[i])


@SETTINGS
@given(bad=st.dictionaries(st.sampled_from(SCHEMA.names + ["agee", "colour"]), ANY_VALUE, min_size=1, max_size=3))
def test_preprocessor_refuses_bad_records_with_its_own_error(bad):
    pre = ClinicalPreprocessor(SCHEMA).fit([{"age": 50}, {"age": 60}])
    try:
        pre.transform([bad])
    except MMXAIError as exc:
        assert str(exc).startswith("record 0: ")
        return


# ------------------------------------------------------------------------------------------ manifest
CELL = st.one_of(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=8),
                 st.sampled_from(["", "img/a.nrrd", "img/b.nrrd", "../x.nrrd", "/etc/hostname", "benign",
                                  "malignant", "1", "0", "50", "NA", "left", "train", "test", "C", "nan", "1e400",
                                  "p1", "p2", "\x00", "\"", ",", "img/a.nrrd\x00"]))
HEADER = ["patient_id", "image", "label", "age", "side", "split", "case_id", "mask"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    import SimpleITK as sitk

    root = tmp_path_factory.mktemp("manifest-prop")
    (root / "img").mkdir()
    for name in "ab":
        sitk.WriteImage(sitk.Image([4, 3, 1], sitk.sitkUInt8), str(root / "img" / f"{name}.nrrd"))
    return root


MANIFEST_SCHEMA = ClinicalSchema.from_dict({"fields": [{"name": "age", "type": "numeric", "range": [18, 100]},
                                                      {"name": "side", "type": "categorical",
                                                       "categories": ["left", "right"]}]})


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(columns=st.lists(st.sampled_from(HEADER + ["extra", ""]), min_size=1, max_size=8),
       rows=st.lists(st.lists(CELL, max_size=9), max_size=8))
def test_manifest_validator_never_fails_with_a_raw_exception(folder, columns, rows):
    buf = io.StringIO()
    csv.writer(buf).writerows([columns, *rows])
    path = folder / "manifest.csv"
    path.write_text(buf.getvalue(), encoding="utf-8")
    from mmxai_core.data.manifest import load_manifest

    try:
        m = load_manifest(path, MANIFEST_SCHEMA, min_cases_per_class=0)
    except ManifestError as exc:
        assert exc.problems and str(exc).startswith(f"{path}: ")
        n_lines = len(rows) + 1
        for row, column, message in exc.problems:
            assert row is None or 1 <= row <= n_lines + 1, (row, n_lines)
            assert column is None or isinstance(column, str)
            assert message and "\n" not in message
        return
    assert len(m) <= len(rows)
    assert set(m.table["image"]) <= {str(folder / "img" / "a.nrrd"), str(folder / "img" / "b.nrrd")}
    assume(len(m) > 0)
    assert len(m.labels) == len(m)


def test_manifest_problem_with_a_line_break_in_a_cell_stays_one_line(folder):
    """Found by the property test above: an image path with a line break was echoed into the message."""
    from mmxai_core.data.manifest import load_manifest

    path = folder / "manifest.csv"
    buf = io.StringIO()
    csv.writer(buf).writerows([["patient_id", "image", "label"], ["P1", "scan\n1.nii", "benign"]])
    path.write_text(buf.getvalue(), encoding="utf-8")
    with pytest.raises(ManifestError) as info:
        load_manifest(path, MANIFEST_SCHEMA, min_cases_per_class=0)
    messages = [m for _, _, m in info.value.problems]
    assert any("scan\\n1.nii" in m for m in messages), messages
    assert all("\n" not in m for m in messages)
