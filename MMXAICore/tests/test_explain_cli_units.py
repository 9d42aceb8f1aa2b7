"""The small parts behind mmxai-explain, without a model: clinical JSON validation, the image checks,
options, output folders (complete or not at all), batch case names."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mmxai_core.data.schema import ClinicalSchema, ClinicalValueError
from mmxai_core.errors import ImageReadError, MMXAIError, SchemaError
from mmxai_core.explain.clinical_input import (display_value, displayed, parse_clinical_json, read_clinical_arg,
                                               validate_clinical)
from mmxai_core.io import Image

SCHEMA = ClinicalSchema.from_dict({"fields": [
    {"name": "age", "label": "Age", "type": "numeric", "unit": "years", "range": [18, 100]},
    {"name": "density", "type": "ordinal", "categories": ["A", "B", "C", "D"]},
    {"name": "family_history", "type": "boolean"},
    {"name": "site", "type": "categorical", "categories": ["left", "right", 3]},
]})


def test_empty_object_means_every_field_unknown():
    assert validate_clinical(parse_clinical_json("{}"), SCHEMA) == dict.fromkeys(SCHEMA.names)


def test_values_are_parsed_and_unknown_spellings_accepted():
    raw = parse_clinical_json('{"age": "57", "density": "c", "family_history": "yes", "site": 3.0}')
    assert validate_clinical(raw, SCHEMA) == {"age": 57.0, "density": "C", "family_history": True, "site": 3}
    raw = {"age": None, "density": "unknown", "family_history": "NA", "site": "?"}
    assert validate_clinical(raw, SCHEMA) == dict.fromkeys(SCHEMA.names)
    shown = displayed({"age": 57.0, "density": "C", "family_history": False, "site": None}, SCHEMA)
    assert shown == {"age": "57 years", "density": "C", "family_history": "no", "site": "unknown"}
    assert display_value(SCHEMA.field("age"), 57.25) == "57.25 years"


@pytest.mark.parametrize("text,fragments", [
    ('{"age": 57', ["--clinical", "not valid JSON", "line 1"]),
    ("", ["empty"]),
    ('"age=57"', ["must be a JSON object", "text"]),
    ("null", ["must be a JSON object", "null"]),
])
def test_malformed_or_not_an_object(text, fragments):
    with pytest.raises(SchemaError) as info:
        parse_clinical_json(text, source="--clinical")
    message = str(info.value)
    assert "\n" not in message and all(f in message for f in fragments), message


@pytest.mark.parametrize("text,field,fragment", [
    ('{"age": [57]}', "age", "wrong type: got a list"),
    ('{"age": {"v": 57}}', "age", "wrong type: got an object"),
    ('{"age": true}', "age", "boolean"),
    ('{"age": "old"}', "age", "not a number"),
    ('{"age": NaN}', "age", "use null for unknown"),
    ('{"age": Infinity}', "age", "use null for unknown"),
    ('{"age": 101}', "age", "out of range"),
    ('{"density": "E"}', "density", "one of A, B, C, D"),
    ('{"density": 2}', "density", "one of A, B, C, D"),
    ('{"family_history": "perhaps"}', "family_history", "true/false"),
    ('{"site": "middle"}', "site", "one of left, right, 3"),
    ('{"age": 50, "age": 51}', "age", "more than once"),
])
def test_each_bad_value_names_its_field(text, field, fragment):
    with pytest.raises(ClinicalValueError) as info:
        validate_clinical(parse_clinical_json(text), SCHEMA, source="case.json")
    message = str(info.value)
    assert info.value.field == field and f"field '{field}'" in message and fragment in message
    assert message.startswith("case.json: ") and "\n" not in message


def test_every_bad_field_is_named_in_one_line_and_unknown_fields_get_a_hint():
    with pytest.raises(ClinicalValueError) as info:
        validate_clinical({"age": 5, "density": "Q"}, SCHEMA)
    assert "field 'age'" in str(info.value) and "field 'density'" in str(info.value)
    with pytest.raises(SchemaError, match=r"unknown field\(s\) 'dencity' \(did you mean 'density'\?\), 'zz'"):
        validate_clinical({"dencity": "A", "zz": 1}, SCHEMA)
    with pytest.raises(SchemaError, match="must be an object"):
        validate_clinical([1, 2], SCHEMA)
    with pytest.raises(ClinicalValueError, match="use null"):
        validate_clinical({"age": float("nan")}, SCHEMA)       # from Python callers too


def test_clinical_file_argument(tmp_path):
    f = tmp_path / "case.json"
    f.write_text('\ufeff{"age": 40}', encoding="utf-8")
    assert read_clinical_arg(f"@{f}") == {"age": 40}
    with pytest.raises(SchemaError, match="not found"):
        read_clinical_arg(f"@{tmp_path / 'nope.json'}")
    with pytest.raises(SchemaError, match="is a folder"):
        read_clinical_arg(f"@{tmp_path}")
    f.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(SchemaError, match="not UTF-8"):
        read_clinical_arg(f"@{f}")


def test_image_checks():
    from mmxai_core.explain.pipeline import check_image_for_model

    check_image_for_model(Image(np.zeros((1, 32, 40), np.float32)), "ok.nrrd")
    check_image_for_model(Image(np.zeros((12, 32, 40), np.int16)), "ok.nrrd")
    cases = [(Image(np.zeros((1, 32, 40), np.float32), meta={"converted_to_luminance": True}), "colour image"),
             (Image(np.zeros((5, 1, 40), np.float32)), "wrong axis"),
             (Image(np.zeros((5, 40, 1), np.float32)), "wrong axis"),
             (Image(np.zeros((1, 4, 40), np.float32)), "at least 8x8"),
             (Image(np.zeros((1, 32, 40), np.complex64)), "complex64")]
    for image, fragment in cases:
        with pytest.raises(ImageReadError, match=fragment) as info:
            check_image_for_model(image, "x.nrrd")
        assert str(info.value).startswith("x.nrrd: ")


def test_options_from_a_worker_request():
    from mmxai_core.explain.pipeline import ExplainOptions, parse_metric_names

    opts = ExplainOptions.from_mapping({"metrics": ["Stability", "faithfulness", "stability"],
                                        "target_class": "benign", "seed": 3})
    assert opts.metrics == ("stability", "faithfulness") and opts.target_class == "benign" and opts.seed == 3
    assert ExplainOptions.from_mapping({"metrics": "sanity"}).metrics == ("sanity",)
    for bad, fragment in (({"colour": 1}, "unknown option"), ({"metrics": [1]}, "list of names"),
                          ({"target_class": 1}, "class name"), ({"seed": 1.5}, "whole number"),
                          ({"metrics": ["beauty"]}, "unknown metric")):
        with pytest.raises(MMXAIError, match=fragment):
            ExplainOptions.from_mapping(bad)
    assert parse_metric_names(" stability , ,sanity") == ["stability", "sanity"]


def _result(folder, sha):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "result.json").write_text(json.dumps({"format": "mmxai.explain_result",
                                                    "identity": {"inputs_sha256": sha}}))


def test_output_folder_rules(tmp_path):
    from mmxai_core.explain.output_folder import check_output_folder, publish_folder, staging_folder

    dest = tmp_path / "out"
    check_output_folder(dest, "a", force=False)                 # absent
    dest.mkdir()
    check_output_folder(dest, "a", force=False)                 # empty
    _result(dest, "a")
    with pytest.raises(MMXAIError, match="same inputs"):
        check_output_folder(dest, "a", force=False)
    with pytest.raises(MMXAIError, match="other inputs"):
        check_output_folder(dest, "b", force=False)
    check_output_folder(dest, "b", force=True)
    (tmp_path / "f").write_text("x")
    with pytest.raises(MMXAIError, match="not a folder"):
        check_output_folder(tmp_path / "f", "a", force=True)
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "a.txt").write_text("x")
    with pytest.raises(MMXAIError, match="holds no mmxai-explain result"):
        check_output_folder(tmp_path / "theirs", "a", force=True)

    staging = staging_folder(dest)
    assert staging.parent == tmp_path and staging.name.startswith(".out.partial-")
    _result(staging, "new")
    publish_folder(staging, dest)
    assert json.loads((dest / "result.json").read_text())["identity"]["inputs_sha256"] == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "out", "theirs"]


def test_stale_partial_folders_of_dead_processes_are_removed(tmp_path):
    from mmxai_core.explain.output_folder import remove_stale_partials

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    for name in (f".case.partial-{dead_pid}-abc", f".case.partial-{os.getpid()}-abc", f".other.partial-{dead_pid}-x"):
        (tmp_path / name).mkdir()
    removed = remove_stale_partials(tmp_path, "case")
    assert [p.name for p in removed] == [f".case.partial-{dead_pid}-abc"]
    remove_stale_partials(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".case.partial-{os.getpid()}-abc"]


def test_case_folder_names_are_safe():
    from mmxai_core.explain.batch import safe_name

    assert safe_name("P0001_L_CC") == "P0001_L_CC"
    assert safe_name("../../etc/passwd") == "etc_passwd"
    assert safe_name("a b/c\\d:e") == "a_b_c_d_e"
    assert safe_name("...") == "case" and len(safe_name("x" * 500)) == 120


def test_a_failure_after_staging_leaves_nothing_behind(tmp_path, monkeypatch):
    import types

    from mmxai_core.explain import pipeline
    from mmxai_core.io import write_image

    write_image(Image(np.ones((1, 16, 16), np.float32)), tmp_path / "in.nrrd")
    seen = {}

    def broken(model, image, clinical, out_dir, *args, **kwargs):
        seen["staging"] = out_dir
        (out_dir / "heatmap.nrrd").write_text("half")
        raise RuntimeError("boom")

    monkeypatch.setattr(pipeline, "explain_case", broken)
    fake = types.SimpleNamespace(classes=["a", "b"], weights_sha256="w", load_seconds=0.0)
    dest = tmp_path / "new" / "deeper" / "out"
    with pytest.raises(RuntimeError, match="boom"):
        pipeline.explain_to_folder(fake, tmp_path / "in.nrrd", {}, dest)
    assert seen["staging"].parent == dest.parent and ".partial-" in seen["staging"].name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nrrd"]
