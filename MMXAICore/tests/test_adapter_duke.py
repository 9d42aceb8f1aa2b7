"""Duke Breast Cancer MRI adapter: a 2-row-header xlsx and fake DICOM series folders per patient."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import yaml

from mmxai_core.data.adapters import adapt_duke_mri, series_descriptions
from mmxai_core.data.manifest import load_manifest
from mmxai_core.data.schema import load_schema
from mmxai_core.errors import DatasetError
from mmxai_core.io import read_image

from test_adapter_fakes import write_dicom

GROUPS = ["Patient Information", None, None, "Tumor Characteristics", None, None]
NAMES = ["Patient ID", "Age at diagnosis", "Menopause", "Mol Subtype", "ER", "Tumor Grade"]
DATA = [
    ["Breast_MRI_001", 45, 0, 0, 1, 2],
    ["Breast_MRI_002", 61, 1, 2, 0, 3],
    ["Breast_MRI_003", 52, 1, None, 1, 1],   # no target value -> dropped
    ["Breast_MRI_004", 38, 0, 1, 1, 2],      # no folder -> dropped
    ["Breast_MRI_005", 70, 1, 3, 0, 3],      # no pre-contrast series -> dropped
    ["Breast_MRI_006", 49, 0, 1, 1, 2],      # two series match "pre" -> dropped unless excluded
]
SERIES = {
    "Breast_MRI_001": ["ax dyn pre", "ax dyn 1st pass"],
    "Breast_MRI_002": ["ax 3d dyn pre", "Ph1/ax 3d dyn"],
    "Breast_MRI_003": ["ax dyn pre"],
    "Breast_MRI_005": ["ax dyn 1st pass"],
    "Breast_MRI_006": ["ax dyn pre", "ax dyn pre sub"],
}


def write_xlsx(path, rows):
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    for r in rows:
        ws.append(r)
    wb.save(path)
    return path


def build(tmp_path):
    xlsx = write_xlsx(tmp_path / "Clinical_and_Other_Features.xlsx", [GROUPS, NAMES, *DATA])
    root = tmp_path / "Duke-Breast-Cancer-MRI"
    for pid, descriptions in SERIES.items():
        study = root / pid / "01-01-1990-NA-MRI BREAST BILATERAL-12345"
        for n, desc in enumerate(descriptions, start=3):
            folder = study / f"{n}.000000-{desc.replace('/', '_')}-{40000 + n}"
            for k in range(2):  # two slices of one series
                write_dicom(folder / f"1-{k + 1}.dcm", np.full((6, 5), 10 * k, np.uint16), modality="MR",
                            series_description=desc, series_number=n, series_uid=f"1.2.3.{n}.{len(pid)}",
                            position=(0, 0, 2.0 * k), instance=k + 1, age="045Y")
    return xlsx, root


def manifest(path):
    with open(path, newline="") as fh:
        return {r["patient_id"]: r for r in csv.DictReader(fh)}


def test_duke_xlsx_two_header_rows_target_fields_and_series(tmp_path):
    xlsx, root = build(tmp_path)
    out = root  # manifest at the download's root
    summary = adapt_duke_mri(xlsx, root, out, target="Mol Subtype", header_rows=2,
                             fields=["Age at diagnosis", "Menopause", "ER", "Tumor Grade"],
                             column_map={"Age at diagnosis": "age"}, series_pattern="pre")
    rows = manifest(out / "manifest.csv")
    assert set(rows) == {"Breast_MRI_001", "Breast_MRI_002"}
    r1 = rows["Breast_MRI_001"]
    assert (r1["label"], r1["split"], r1["dataset"]) == ("0", "", "duke-breast-mri")
    assert r1["image"].endswith("3.000000-ax dyn pre-40003") and (out / r1["image"]).is_dir()
    assert "1st" not in rows["Breast_MRI_002"]["image"] and rows["Breast_MRI_002"]["label"] == "2"
    assert list(r1) == ["patient_id", "image", "label", "dataset", "split", "age", "menopause", "er", "tumor_grade"]
    assert (r1["age"], r1["menopause"], r1["er"], r1["tumor_grade"]) == ("45", "false", "true", "2")
    fields = {f["name"]: f for f in yaml.safe_load((out / "schema.yaml").read_text())["fields"]}
    assert fields["age"]["type"] == "numeric" and fields["age"]["label"] == "Age at diagnosis"
    assert fields["menopause"]["type"] == "boolean" and fields["er"]["type"] == "boolean"
    assert fields["tumor_grade"] == {**fields["tumor_grade"], "type": "ordinal", "categories": [2, 3]}
    assert "mol_subtype" not in fields  # the target is never a field
    dropped = {reason: " ".join(items) for reason, items in summary.dropped.items()}
    assert "Breast_MRI_003" in dropped["no value in the target column 'Tumor Characteristics / Mol Subtype'"]
    assert "Breast_MRI_004" in dropped["no patient folder"]
    single = dropped["no single matching series"]
    assert "Breast_MRI_005" in single and "'ax dyn 1st pass'" in single
    assert "Breast_MRI_006" in single and "2 series match" in single
    assert summary.counts == {"": {"0": 1, "2": 1}}
    assert r1["image"].startswith("Breast_MRI_001/")
    loaded = load_manifest(out / "manifest.csv", load_schema(out / "schema.yaml"), min_cases_per_class=1)
    assert loaded.classes == ["0", "2"] and loaded.records[0] == {"age": 45.0, "menopause": False, "er": True,
                                                                  "tumor_grade": 2}
    volume = read_image(loaded.table["image"][0])  # the chosen series folder reads as one volume
    assert volume.shape == (2, 6, 5)


def test_duke_post_contrast_preset_exclude_and_label_map(tmp_path):
    xlsx, root = build(tmp_path)
    summary = adapt_duke_mri(xlsx, root, tmp_path / "o1", target="ER", header_rows=2, series_pattern="post1",
                             label_map={1: "ER+", 0: "ER-"}, fields={"Tumor Grade": {"type": "ordinal",
                                                                                    "categories": [1, 2, 3]}})
    rows = manifest(tmp_path / "o1" / "manifest.csv")
    assert set(rows) == {"Breast_MRI_001", "Breast_MRI_002", "Breast_MRI_005"}
    assert rows["Breast_MRI_002"]["image"].endswith("Ph1_ax 3d dyn-40004")
    assert rows["Breast_MRI_001"]["label"] == "ER+" and rows["Breast_MRI_002"]["label"] == "ER-"
    assert summary.fields == ["tumor_grade"]
    assert yaml.safe_load((tmp_path / "o1" / "schema.yaml").read_text())["classes"] == ["ER+", "ER-"]
    adapt_duke_mri(xlsx, root, tmp_path / "o2", target="Mol Subtype", header_rows=2, series_exclude=r"\bsub\b",
                   fields=["ER"])
    assert "Breast_MRI_006" in manifest(tmp_path / "o2" / "manifest.csv")
    assert series_descriptions(root)["ax dyn pre"] == 3


def test_duke_csv_and_bad_input(tmp_path):
    _, root = build(tmp_path)
    table = tmp_path / "clinical.csv"
    with open(table, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(NAMES)
        w.writerows([["" if v is None else v for v in r] for r in DATA])
    summary = adapt_duke_mri(table, root, tmp_path / "out", target="Tumor Grade", fields={"ER": "categorical"})
    assert summary.rows == 3  # 001, 002, 003 have one "pre" series
    with pytest.raises(DatasetError, match="choose at least one clinical column"):
        adapt_duke_mri(table, root, tmp_path / "out", target="Tumor Grade")
    with pytest.raises(DatasetError, match=r"clinical\.csv: missing required column 'HER2'"):
        adapt_duke_mri(table, root, tmp_path / "out", target="HER2")
    with pytest.raises(DatasetError, match="target column and cannot also be a clinical field"):
        adapt_duke_mri(table, root, tmp_path / "out", target="ER", fields=["ER"])
    with pytest.raises(DatasetError, match=r"clinical\.csv: row 3, column 'Mol Subtype': value '2' is not in the label map"):
        adapt_duke_mri(table, root, tmp_path / "out", target="Mol Subtype", label_map={"0": "lum"})
