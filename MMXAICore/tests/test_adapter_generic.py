"""Generic adapter: a CSV with id, image, label and clinical columns + an image folder."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import SimpleITK as sitk
import yaml

from mmxai_core.data.adapters import adapt_generic
from mmxai_core.data.manifest import load_manifest
from mmxai_core.data.schema import load_schema
from mmxai_core.errors import DatasetError

HEADER = ["case", "file", "diagnosis", "Age (years)", "stage", "sex", "smoker", "cohort", "roi"]
ROWS = [
    ["c1", "a/c1.png", "malignant", "63", "2", "F", "yes", "train", "a/c1_roi.png"],
    ["c2", "a/c2.png", "benign", "41.5", "0", "M", "no", "train", ""],
    ["c3", "b/c3.png", "benign", "", "1", "F", "", "test", ""],
    ["c4", "b/c4.png", "", "50", "3", "M", "no", "val", ""],     # no label -> dropped
]


def build(tmp_path, rows=ROWS):
    root = tmp_path / "data"
    for r in rows:
        for rel in (r[1], r[8]):
            if rel and "missing" not in rel:
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5), np.uint8)), str(root / rel))
    table = tmp_path / "clinical.csv"
    with open(table, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(HEADER)
        w.writerows(rows)
    return table, root


def read(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_generic_image_column_fields_mask_split(tmp_path):
    table, root = build(tmp_path)
    summary = adapt_generic(table, root, root / "mmxai", id_column="case", label_column="diagnosis",
                            image_column="file", mask_column="roi", split_column="cohort",
                            fields=["Age (years)", "stage", "sex", "smoker"], column_map={"Age (years)": "age"})
    rows = read(root / "mmxai" / "manifest.csv")
    assert [r["patient_id"] for r in rows] == ["c1", "c2", "c3"]
    assert list(rows[0]) == ["patient_id", "image", "label", "mask", "dataset", "split", "age", "stage", "sex", "smoker"]
    assert rows[0]["image"] == "../a/c1.png" and rows[0]["mask"] == "../a/c1_roi.png" and rows[1]["mask"] == ""
    assert [r["split"] for r in rows] == ["train", "train", "test"]
    assert (rows[1]["age"], rows[2]["age"], rows[0]["smoker"], rows[2]["smoker"]) == ("41.5", "", "true", "")
    fields = {f["name"]: f for f in yaml.safe_load((root / "mmxai" / "schema.yaml").read_text())["fields"]}
    assert [fields[n]["type"] for n in ("age", "stage", "sex", "smoker")] == ["numeric", "ordinal", "categorical", "boolean"]
    assert fields["stage"]["categories"] == [0, 1, 2] and fields["sex"]["categories"] == ["F", "M"]
    assert summary.dropped == {"no label": ["c4 (row 5)"]}
    assert summary.counts == {"test": {"benign": 1}, "train": {"benign": 1, "malignant": 1}}
    loaded = load_manifest(root / "mmxai" / "manifest.csv", load_schema(root / "mmxai" / "schema.yaml"),
                           allow_outside=True, min_cases_per_class=1)
    assert loaded.classes == ["benign", "malignant"]
    assert loaded.records[1] == {"age": 41.5, "stage": 0, "sex": "M", "smoker": False}


def test_generic_pattern_and_given_types(tmp_path):
    table, root = build(tmp_path)
    summary = adapt_generic(table, root / "a", tmp_path / "out", id_column="case", label_column="diagnosis",
                            image_pattern="{id}.png", fields={"stage": {"type": "ordinal", "categories": [0, 1, 2, 3, 4]},
                                                              "Age (years)": "numeric"},
                            drop_unresolved=True)
    rows = read(tmp_path / "out" / "manifest.csv")
    assert [r["image"] for r in rows] == ["../data/a/c1.png", "../data/a/c2.png"]
    assert "c3" in " ".join(summary.dropped["image or mask not found"])
    fields = yaml.safe_load((tmp_path / "out" / "schema.yaml").read_text())["fields"]
    assert fields[0]["categories"] == [0, 1, 2, 3, 4] and fields[1]["name"] == "age_years"


def test_generic_bad_input_names_file_row_column(tmp_path):
    rows = [r[:] for r in ROWS]
    rows[1][1] = "a/missing.png"
    table, root = build(tmp_path, rows)
    with pytest.raises(DatasetError, match=r"clinical\.csv: row 3, column 'file': image '.*missing\.png' not found"):
        adapt_generic(table, root, tmp_path / "out", id_column="case", label_column="diagnosis", image_column="file")
    with pytest.raises(DatasetError, match=r"clinical\.csv: missing required column 'label'"):
        adapt_generic(table, root, tmp_path / "out", id_column="case", label_column="label", image_column="file")
    with pytest.raises(DatasetError, match=r"clinical\.csv: row 2, column 'stage': value 'I' is not a known category"):
        rows[0][4] = "I"
        table, root = build(tmp_path, [rows[0], rows[2]])
        adapt_generic(table, root, tmp_path / "out", id_column="case", label_column="diagnosis",
                      image_column="file", fields={"stage": {"type": "ordinal", "categories": [0, 1, 2]}})
    with pytest.raises(DatasetError, match=r"'\{nope\}' names no column"):
        adapt_generic(table, root, tmp_path / "out", id_column="case", label_column="diagnosis",
                      image_pattern="{nope}.png")
