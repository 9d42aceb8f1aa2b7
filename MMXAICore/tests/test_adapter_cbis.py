"""CBIS-DDSM adapter on a tiny fake download: real CSV columns, TCIA folder names, DICOM headers."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk
import yaml

from mmxai_core.data.adapters import adapt_cbis_ddsm
from mmxai_core.data.adapters._dicom import parse_age
from mmxai_core.data.manifest import load_manifest
from mmxai_core.data.schema import load_schema
from mmxai_core.errors import DatasetError
from mmxai_core.io import read_geometry

from test_adapter_fakes import cbis_csv, csv_image_path, tcia_path, write_dicom

ROWS, COLS = 40, 32


def _grey(rows, cols, seed=0):
    return np.random.default_rng(seed).integers(100, 4000, size=(rows, cols)).astype(np.uint16)


def _mask(rows, cols, r0, r1, c0, c1):
    m = np.zeros((rows, cols), np.uint8)
    m[r0:r1, c0:c1] = 255
    return m


def _row(case, abn_id, pathology, *, kind="mass", **extra):
    """One CSV row of image ``case`` (e.g. 'Mass-Training_P_00001_LEFT_CC')."""
    _, pid1, pid2, side, view = case.split("_")
    row = {"patient_id": f"{pid1}_{pid2}", "left or right breast": side, "image view": view,
           "abnormality id": abn_id, "abnormality type": "mass" if kind == "mass" else "calcification",
           "pathology": pathology, "subtlety": 3, "assessment": 3,
           "image file path": csv_image_path(case),
           "cropped image file path": csv_image_path(f"{case}_{abn_id}", "000000.dcm"),
           "ROI mask file path": csv_image_path(f"{case}_{abn_id}", "000001.dcm")}
    row.update(extra)
    return row


def build(tmp_path, *, mask2_shape=(20, 16)):
    """Four mammograms: two mass-train (one with two abnormalities, benign + malignant), two calc-test."""
    root = tmp_path / "download"
    a, b = "Mass-Training_P_00001_LEFT_CC", "Mass-Training_P_00002_RIGHT_MLO"
    c, d = "Calc-Test_P_00003_LEFT_CC", "Calc-Test_P_00004_RIGHT_CC"
    write_dicom(tcia_path(root, a, "1.000000-full mammogram images-24515"), _grey(ROWS, COLS, 1), age="057Y")
    write_dicom(tcia_path(root, b, "1.000000-full mammogram images-11111"), _grey(ROWS, COLS, 2), age="045Y")
    write_dicom(tcia_path(root, c, "1.000000-full mammogram images-22222"), _grey(ROWS, COLS, 3))
    write_dicom(tcia_path(root, d, "1.000000-full mammogram images-33333"), _grey(ROWS, COLS, 4), age="061Y")
    # A, abnormality 1: mask and crop in two series folders (the newer TCIA layout)
    write_dicom(tcia_path(root, f"{a}_1", "1.000000-ROI mask images-1"), _mask(ROWS, COLS, 2, 6, 2, 6))
    write_dicom(tcia_path(root, f"{a}_1", "1.000000-cropped images-2"), _grey(8, 8, 5))
    # A, abnormality 2: crop and mask in one folder (1-1 crop, 1-2 mask); the mask at half size
    h, w = mask2_shape
    write_dicom(tcia_path(root, f"{a}_2", "1.000000-ROI-3", "1-1.dcm"), _grey(10, 10, 6))
    write_dicom(tcia_path(root, f"{a}_2", "1.000000-ROI-3", "1-2.dcm"), _mask(h, w, 10, 15, 8, 12))
    for case in (b, c, d):
        write_dicom(tcia_path(root, f"{case}_1", "1.000000-ROI mask images-9"), _mask(ROWS, COLS, 30, 35, 20, 25))
    csvs = tmp_path / "csv"
    cbis_csv(csvs / "mass_case_description_train_set.csv", "mass", [
        _row(a, 1, "BENIGN", breast_density=2, **{"mass shape": "OVAL", "mass margins": "CIRCUMSCRIBED"}),
        _row(a, 2, "MALIGNANT", breast_density=2, subtlety=5, assessment=5,
             **{"mass shape": "IRREGULAR", "mass margins": "SPICULATED"}),
        _row(b, 1, "BENIGN_WITHOUT_CALLBACK", breast_density=3,
             **{"mass shape": "LOBULATED", "mass margins": "ILL_DEFINED"}),
    ])
    cbis_csv(csvs / "calc_case_description_test_set.csv", "calc", [
        _row(c, 1, "MALIGNANT", kind="calc", **{"breast density": 4, "calc type": "PLEOMORPHIC",
                                               "calc distribution": "CLUSTERED"}),
        _row(d, 1, "BENIGN", kind="calc", **{"breast density": 0, "calc type": "AMORPHOUS",
                                            "calc distribution": "N/A"}),
    ])
    return csvs, root


def read_manifest(path):
    with open(path, newline="") as fh:
        return {f"{r['patient_id']}": r for r in csv.DictReader(fh)}


def test_cbis_manifest_labels_splits_fields_and_masks(tmp_path):
    csvs, root = build(tmp_path)
    out = root  # the manifest at the data root: relative paths stay inside it
    summary = adapt_cbis_ddsm(csvs, root, out)
    rows = read_manifest(out / "manifest.csv")
    assert set(rows) == {"P_00001", "P_00002", "P_00003", "P_00004"}
    a, b, c, d = (rows[p] for p in ("P_00001", "P_00002", "P_00003", "P_00004"))
    # any malignant abnormality -> malignant; BENIGN_WITHOUT_CALLBACK -> benign
    assert (a["label"], b["label"], c["label"], d["label"]) == ("malignant", "benign", "malignant", "benign")
    assert (a["split"], b["split"], c["split"], d["split"]) == ("train", "train", "test", "test")
    assert summary.counts == {"test": {"benign": 1, "malignant": 1}, "train": {"benign": 1, "malignant": 1}}
    # age from the DICOM header, not the CSV; absent -> unknown
    assert (a["age"], b["age"], c["age"], d["age"]) == ("57", "45", "", "61")
    # density from both spellings; 0 read as unknown and reported
    assert (a["breast_density"], b["breast_density"], c["breast_density"], d["breast_density"]) == ("2", "3", "4", "")
    assert any("breast density '0'" in n for n in summary.notes)
    # descriptors of the primary (lowest-numbered) mass; subtlety = max; N/A = unknown
    assert (a["mass_shape"], a["mass_margins"], a["subtlety"], a["n_abnormalities"]) == ("OVAL", "CIRCUMSCRIBED", "5", "2")
    assert (c["calc_type"], c["mass_shape"], d["calc_distribution"]) == ("PLEOMORPHIC", "", "")
    assert "assessment" not in a
    # paths relative to the manifest, pointing at the real download files
    assert (out / a["image"]).resolve() == tcia_path(root, "Mass-Training_P_00001_LEFT_CC",
                                                     "1.000000-full mammogram images-24515").resolve()
    assert not a["image"].startswith("/")
    # schema: CONVENTIONS format, categories observed
    schema = yaml.safe_load((out / "schema.yaml").read_text())
    by_name = {f["name"]: f for f in schema["fields"]}
    assert by_name["age"]["dicom"] == "PatientAge" and by_name["age"]["type"] == "numeric"
    assert by_name["breast_density"] == {**by_name["breast_density"], "type": "ordinal", "categories": [1, 2, 3, 4]}
    assert by_name["mass_shape"]["categories"] == ["IRREGULAR", "LOBULATED", "OVAL"]
    assert "assessment" not in by_name
    assert list(a)[:7] == ["patient_id", "image", "label", "mask", "dataset", "split", "case_id"]
    assert list(a)[7:] == [f["name"] for f in schema["fields"]]
    assert a["case_id"] == "P_00001_LEFT_CC" and schema["classes"] == ["benign", "malignant"]
    assert json.loads((out / "adapter_summary.json").read_text())["rows"] == 4

    # mask union on the image grid: abnormality 1 as is, abnormality 2 resampled x2 (nearest neighbour)
    image = sitk.ReadImage(str(out / a["image"]))
    mask = sitk.ReadImage(str(out / a["mask"]))
    assert mask.GetSize()[:2] == image.GetSize()[:2] == (COLS, ROWS)
    assert np.allclose(mask.GetSpacing()[:2], image.GetSpacing()[:2]) and np.allclose(mask.GetSpacing()[:2], (0.1, 0.2))
    assert np.allclose(mask.GetOrigin()[:2], image.GetOrigin()[:2])
    arr = sitk.GetArrayFromImage(mask).reshape(ROWS, COLS)
    expected = np.zeros((ROWS, COLS), np.uint8)
    expected[2:6, 2:6] = 1
    expected[20:30, 16:24] = 1
    assert np.array_equal(arr, expected)
    assert any("resampled" in n for n in summary.notes)
    # the binary mask was picked, not the grey crop stored beside it
    arr_b = sitk.GetArrayFromImage(sitk.ReadImage(str(out / b["mask"]))).reshape(ROWS, COLS)
    assert arr_b.sum() == 25 and set(np.unique(arr_b)) == {0, 1}

    # the outputs load with the package's own schema and manifest readers (masks on their image's grid)
    loaded = load_manifest(out / "manifest.csv", load_schema(out / "schema.yaml"))
    assert loaded.classes == ["benign", "malignant"] and list(loaded.labels) == [1, 0, 1, 0]
    assert loaded.records[0]["age"] == 57.0 and loaded.records[0]["breast_density"] == 2
    assert loaded.table["split"].tolist() == ["train", "train", "test", "test"]
    assert read_geometry(out / a["image"]).same_geometry(read_geometry(out / a["mask"]))


def test_cbis_assessment_only_on_request(tmp_path):
    csvs, root = build(tmp_path)
    summary = adapt_cbis_ddsm(csvs, root, tmp_path / "out", include_assessment=True, masks=False)
    rows = read_manifest(tmp_path / "out" / "manifest.csv")
    assert rows["P_00001"]["assessment"] == "5"  # maximum over the image's abnormalities
    assert "mask" not in rows["P_00001"]
    # output folder beside the data: '../' paths, said in the notes, loadable with allow_outside=True
    assert rows["P_00001"]["image"].startswith("../download/CBIS-DDSM/")
    assert any("allow_outside=True" in n for n in summary.notes)
    loaded = load_manifest(tmp_path / "out" / "manifest.csv", load_schema(tmp_path / "out" / "schema.yaml"),
                           allow_outside=True)
    assert [r["assessment"] for r in loaded.records] == [5, 3, 3, 3]
    field = {f["name"]: f for f in yaml.safe_load((tmp_path / "out" / "schema.yaml").read_text())["fields"]}["assessment"]
    assert field["type"] == "ordinal" and "label" in field["help"].lower() and "leak" in " ".join(summary.notes)


def test_cbis_mask_with_other_aspect_ratio_is_refused(tmp_path):
    csvs, root = build(tmp_path, mask2_shape=(40, 40))
    with pytest.raises(DatasetError, match=r"1-2\.dcm: ROI mask is 40x40.*aspect ratio"):
        adapt_cbis_ddsm(csvs, root, tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.csv").exists()


def test_cbis_unresolved_rows_named_or_dropped(tmp_path):
    csvs, root = build(tmp_path)
    path = csvs / "mass_case_description_train_set.csv"
    with open(path, "a", newline="") as fh:
        missing = "Mass-Training_P_00009_LEFT_MLO"
        csv.writer(fh).writerow(["P_00009", 2, "LEFT", "MLO", 1, "mass", "OVAL", "OVAL", 3, "BENIGN", 2,
                                 csv_image_path(missing), "", csv_image_path(missing + "_1")])
    with pytest.raises(DatasetError) as info:
        adapt_cbis_ddsm(csvs, root, tmp_path / "out")
    first = str(info.value).splitlines()[0]
    assert "mass_case_description_train_set.csv: row 5, column 'image file path'" in first
    assert "Mass-Training_P_00009_LEFT_MLO" in first and "drop" in first
    summary = adapt_cbis_ddsm(csvs, root, tmp_path / "out", drop_unresolved=True)
    assert summary.rows == 4
    assert [k for k in summary.dropped] == ["image file not found"]
    assert "P_00009_LEFT_MLO" in summary.dropped["image file not found"][0]


def test_cbis_unknown_pathology_and_missing_column(tmp_path):
    csvs, root = build(tmp_path)
    path = csvs / "mass_case_description_train_set.csv"
    text = path.read_text()
    path.write_text(text.replace("BENIGN_WITHOUT_CALLBACK", "PROBABLY_FINE"))
    with pytest.raises(DatasetError, match=r"mass_case_description_train_set\.csv: row 4, column 'pathology': "
                                           r"unknown pathology 'PROBABLY_FINE'"):
        adapt_cbis_ddsm(csvs, root, tmp_path / "out")
    path.write_text(text.replace("mass margins", "margins"))
    with pytest.raises(DatasetError, match=r"mass_case_description_train_set\.csv: missing required column 'mass margins'"):
        adapt_cbis_ddsm(csvs, root, tmp_path / "out")


def test_cbis_image_in_train_and_test_goes_to_test(tmp_path):
    csvs, root = build(tmp_path, mask2_shape=(ROWS, COLS))
    # the same mammogram as P_00001 LEFT CC also listed in the calc test CSV (its own TCIA folder)
    case = "Calc-Test_P_00001_LEFT_CC"
    write_dicom(tcia_path(root, case, "1.000000-full mammogram images-7"), _grey(ROWS, COLS, 1), age="057Y")
    write_dicom(tcia_path(root, f"{case}_1", "1.000000-ROI mask images-8"), _mask(ROWS, COLS, 0, 1, 0, 1))
    path = csvs / "calc_case_description_test_set.csv"
    with open(path, "a", newline="") as fh:
        csv.writer(fh).writerow(["P_00001", 2, "LEFT", "CC", 1, "calcification", "PUNCTATE", "CLUSTERED", 2,
                                 "BENIGN", 2, csv_image_path(case), "", csv_image_path(case + "_1")])
    summary = adapt_cbis_ddsm(csvs, root, tmp_path / "out", masks=False)
    row = read_manifest(tmp_path / "out" / "manifest.csv")["P_00001"]
    assert (row["split"], row["abnormality_type"], row["n_abnormalities"], row["calc_type"]) == \
        ("test", "calcification+mass", "3", "PUNCTATE")
    assert any("both a train and a test" in n for n in summary.notes)


@pytest.mark.parametrize("text,years", [("057Y", 57.0), ("006M", 0.5), ("052W", 0.996), ("030D", 0.08),
                                        ("63", 63.0), ("", None), ("abc", None), (None, None)])
def test_parse_age(text, years):
    assert parse_age(text) == (None if years is None else pytest.approx(years, abs=0.01))
