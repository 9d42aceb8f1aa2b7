"""Manifest loading: every problem reported at once with row and column; clean files load; masks checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from mmxai_core.data.manifest import load_manifest
from mmxai_core.data.schema import ClinicalSchema
from mmxai_core.errors import ManifestError

FIELDS = [
    {"name": "age", "type": "numeric", "unit": "years", "range": [18, 100]},
    {"name": "density", "type": "ordinal", "categories": [1, 2, 3, 4]},
    {"name": "side", "type": "categorical", "categories": ["left", "right"]},
]


def make_schema(classes=("benign", "malignant")) -> ClinicalSchema:
    d = {"fields": FIELDS}
    if classes:
        d["classes"] = list(classes)
    return ClinicalSchema.from_dict(d)


def write_nrrd(path: Path, size=(8, 6, 1), spacing=(0.5, 0.5, 2.0), origin=(0.0, 0.0, 0.0),
               direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = sitk.Image(list(size), sitk.sitkUInt8)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection([float(v) for v in direction])
    sitk.WriteImage(img, str(path))
    return path


def write_csv(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_every_problem_in_one_error(tmp_path):
    for name in "abcdefgh":
        write_nrrd(tmp_path / "img" / f"{name}.nrrd")
    write_nrrd(tmp_path / "masks" / "a.nrrd")
    write_nrrd(tmp_path / "masks" / "b_bad.nrrd", size=(4, 6, 1))
    csv = write_csv(tmp_path / "manifest.csv", [
        "patient_id,image,label,mask,split,case_id,age,density,side,colour",
        "p1,img/a.nrrd,benign,masks/a.nrrd,train,c1,52,2,left,red",         # row 2: clean
        "p2,img/missing.nrrd,malignant,,,c2,61,3,right,",                 # row 3: file not found
        "p3,img/b.nrrd,malignant,masks/b_bad.nrrd,,c3,150,2,left,",       # row 4: age range, mask size
        "p4,img/c.nrrd,benign,,,c4,abc,5,centre,",                        # row 5: age, density, side
        "p1,img/a.nrrd,benign,,,c5,,,,",                                  # row 6: duplicate case
        "p5,img/d.nrrd,?,,,c6,40,1,left,",                                # row 7: missing label
        "p6,img/e.nrrd,cancer,,,c1,40,1,left,",                           # row 8: bad label, dup case_id
        "p7,../../etc/passwd,malignant,,,c8,40,1,left,",                  # row 9: leaves the folder
        "p8,img/f.nrrd,benign,,sometimes,c9,40,1,left,",                  # row 10: bad split
        ",img/g.nrrd,benign,,,c10,40,1,left,",                            # row 11: no patient id
        "p9,img/h.nrrd,benign",                                           # row 12: too few cells
        "p10,img/h.nrrd,malignant,masks/none.nrrd,,c12,,,,",              # row 13: mask not found
    ])
    with pytest.raises(ManifestError) as info:
        load_manifest(csv, make_schema())
    err = info.value
    where = {(r, c) for r, c, _ in err.problems}
    expected = {(1, "colour"), (3, "image"), (4, "age"), (4, "mask"), (5, "age"), (5, "density"), (5, "side"),
                (6, "image"), (7, "label"), (8, "label"), (8, "case_id"), (9, "image"), (10, "split"),
                (11, "patient_id"), (12, None), (13, "mask")}
    assert where == expected, sorted(where ^ expected, key=str)
    msg = {(r, c): m for r, c, m in err.problems}
    assert "unknown column" in msg[1, "colour"]
    assert "file not found: img/missing.nrrd" in msg[3, "image"]
    assert "out of range" in msg[4, "age"] and "[18, 100]" in msg[4, "age"]
    assert "size (4, 6, 1)" in msg[4, "mask"] and "(8, 6, 1)" in msg[4, "mask"]
    assert "not a number" in msg[5, "age"]
    assert "'5' is not a known category" in msg[5, "density"] and "1, 2, 3, 4" in msg[5, "density"]
    assert "'centre'" in msg[5, "side"]
    assert "row 2" in msg[6, "image"] and "duplicate" in msg[6, "image"]
    assert "missing label" in msg[7, "label"]
    assert "'cancer' is not one of the schema's classes: benign, malignant" in msg[8, "label"]
    assert "duplicate case_id 'c1'" in msg[8, "case_id"] and "row 2" in msg[8, "case_id"]
    assert "leaves the manifest's folder" in msg[9, "image"] and "allow_outside" in msg[9, "image"]
    assert "'sometimes'" in msg[10, "split"]
    assert "missing patient id" in msg[11, "patient_id"]
    assert "3 cells" in msg[12, None]
    # problems are in row order, and the message lists each with its row and column
    assert [r for r, _, _ in err.problems] == sorted(r for r, _, _ in err.problems)
    text = str(err)
    assert text.startswith(f"{csv}: {len(expected)} problem(s): row 1, column 'colour'")
    assert "row 9, column 'image'" in text and len(text.splitlines()) == len(expected)


@pytest.fixture
def clean(tmp_path):
    for name in "abcd":
        write_nrrd(tmp_path / "img" / f"{name}.nrrd")
    write_nrrd(tmp_path / "masks" / "a.nrrd")
    (tmp_path / "series" / "s1").mkdir(parents=True)  # a DICOM series folder counts as an image path
    csv = tmp_path / "manifest.csv"
    csv.write_text("\ufeffpatient_id,image,label,mask,dataset,split,case_id,age,side\r\n"
                   "p1,img/a.nrrd,Benign,masks/a.nrrd,demo,train,c1,52,left\r\n"
                   "p1,img/b.nrrd,MALIGNANT,,demo,,c2,52,\r\n"
                   "\r\n"
                   "p2,series/s1,malignant,,demo,Validation,,unknown,RIGHT\r\n"
                   f"p3,{tmp_path / 'img' / 'c.nrrd'},benign,,,test,c4,NA,?\r\n"
                   "p4,./img/../img/d.nrrd,benign,,,,,33.5,left\r\n", encoding="utf-8")
    return csv


def test_clean_manifest_loads(clean, tmp_path):
    m = load_manifest(clean, make_schema())
    assert len(m) == 5 and m.classes == ["benign", "malignant"]
    t = m.table
    assert t["row"].tolist() == [2, 3, 5, 6, 7]  # the blank line 4 is skipped, numbering kept
    assert t["label"].tolist() == ["benign", "malignant", "malignant", "benign", "benign"]
    assert m.labels.tolist() == [0, 1, 1, 0, 0]
    assert t["image"][0] == str(tmp_path / "img" / "a.nrrd")
    assert t["image"][4] == str(tmp_path / "img" / "d.nrrd")
    assert t["mask"].tolist()[0] == str(tmp_path / "masks" / "a.nrrd") and t["mask"][1] is None
    assert t["split"].tolist() == ["train", None, "val", "test", None]
    assert t["case_id"].tolist() == ["c1", "c2", None, "c4", None]
    assert m.records[0] == {"age": 52.0, "density": None, "side": "left"}  # absent column -> unknown
    assert m.records[2] == {"age": None, "density": None, "side": "right"}
    assert m.records[4]["age"] == 33.5
    assert m.patients.tolist() == ["p1", "p1", "p2", "p3", "p4"]
    sub = m.subset([4, 0])
    assert sub.table["patient_id"].tolist() == ["p4", "p1"] and sub.records[0]["age"] == 33.5


def test_paths_outside_the_folder(tmp_path):
    outside = write_nrrd(tmp_path / "elsewhere" / "x.nrrd")
    inner = tmp_path / "cohort"
    write_nrrd(inner / "y.nrrd")
    csv = write_csv(inner / "m.csv", ["patient_id,image,label", f"p1,../elsewhere/x.nrrd,0",
                                      f"p2,{outside},1", "p3,y.nrrd,0", "p4,y.nrrd,1"])
    with pytest.raises(ManifestError) as info:
        load_manifest(csv, make_schema(classes=None), min_cases_per_class=1)
    assert [(r, c) for r, c, _ in info.value.problems] == [(2, "image"), (3, "image")]
    m = load_manifest(csv, make_schema(classes=None), allow_outside=True, min_cases_per_class=1)
    assert m.table["image"][0] == str(outside) and m.classes == ["0", "1"]


def test_header_problems(tmp_path):
    csv = write_csv(tmp_path / "m.csv", ["patient,image,age,age,", "p1,a.png,50,50,"])
    with pytest.raises(ManifestError) as info:
        load_manifest(csv, make_schema(), check_files=False)
    where = {(r, c): m for r, c, m in info.value.problems}
    assert "duplicate column" in where[1, "age"]
    assert "required column is missing" in where[1, "patient_id"]
    assert "required column is missing" in where[1, "label"]
    assert "did you mean 'patient_id'" in where[1, "patient"]
    assert "column 5 has no name" in where[1, None]
    with pytest.raises(ManifestError, match="manifest file not found"):
        load_manifest(tmp_path / "none.csv", make_schema())
    (tmp_path / "latin1.csv").write_bytes("patient_id,image,label\np\xe9,a,0\n".encode("latin-1"))
    with pytest.raises(ManifestError, match="not UTF-8"):
        load_manifest(tmp_path / "latin1.csv", make_schema())
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ManifestError, match="no header row"):
        load_manifest(tmp_path / "empty.csv", make_schema())


def test_label_rules(tmp_path):
    schema = make_schema(classes=None)
    csv = write_csv(tmp_path / "mixed.csv", ["patient_id,image,label", "p1,a,0", "p2,b,1", "p3,c,1",
                                             "p4,d,benign", "p5,e,0.5"])
    with pytest.raises(ManifestError) as info:
        load_manifest(csv, schema, check_files=False)
    assert [(r, c) for r, c, _ in info.value.problems] == [(5, "label")]
    assert "mixed label types" in info.value.problems[0][2]

    csv = write_csv(tmp_path / "frac.csv", ["patient_id,image,label", "p1,a,0", "p2,b,0.5"])
    with pytest.raises(ManifestError, match="row 3, column 'label': numeric label '0.5' is not a whole"):
        load_manifest(csv, schema, check_files=False, min_cases_per_class=0)

    csv = write_csv(tmp_path / "case.csv", ["patient_id,image,label", "p1,a,benign", "p2,b,Benign"])
    with pytest.raises(ManifestError, match="row 3.*'Benign' differs only in case from 'benign' \\(row 2\\)"):
        load_manifest(csv, schema, check_files=False, min_cases_per_class=0)

    # numeric labels: classes are the ints as strings, sorted by value
    csv = write_csv(tmp_path / "num.csv", ["patient_id,image,label"] +
                    [f"p{i},i{i},{lab}" for i, lab in enumerate(["10", "2", "2.0", "10", "0", "0"])])
    m = load_manifest(csv, schema, check_files=False)
    assert m.classes == ["0", "2", "10"] and m.labels.tolist() == [2, 1, 1, 2, 0, 0]
    # declared numeric-looking classes match "1.0"
    m = load_manifest(write_csv(tmp_path / "d.csv", ["patient_id,image,label", "p1,a,1.0", "p2,b,0"]),
                      make_schema(classes=["0", "1"]), check_files=False, min_cases_per_class=1)
    assert m.table["label"].tolist() == ["1", "0"]


def test_single_case_class_is_an_error_for_training(tmp_path):
    csv = write_csv(tmp_path / "m.csv", ["patient_id,image,label", "p1,a,benign", "p1,b,malignant",
                                         "p2,c,benign"])
    with pytest.raises(ManifestError) as info:
        load_manifest(csv, make_schema(), check_files=False)
    (r, c, msg), = info.value.problems
    assert (r, c) == (None, "label")
    assert "class 'malignant' has only 1 patient (row 3)" in msg and "min_cases_per_class" in msg
    m = load_manifest(csv, make_schema(), check_files=False, min_cases_per_class=1)
    assert m.labels.tolist() == [0, 1, 0]
    # a declared class without any case, and a single undeclared class
    csv = write_csv(tmp_path / "one.csv", ["patient_id,image,label", "p1,a,benign", "p2,b,benign"])
    with pytest.raises(ManifestError, match="class 'malignant' has no case"):
        load_manifest(csv, make_schema(), check_files=False)
    with pytest.raises(ManifestError, match="only one class"):
        load_manifest(csv, make_schema(classes=None), check_files=False)


@pytest.mark.parametrize("kind,mask_kwargs,expected", [
    ("same", {}, None),
    ("size", {"size": (8, 5, 1)}, "mask size (8, 5, 1) does not match the image size (8, 6, 1)"),
    ("spacing", {"spacing": (0.6, 0.5, 2.0)}, "mask spacing (0.6, 0.5, 2) mm"),
    ("origin", {"origin": (0.0, 3.0, 0.0)}, "mask origin (0, 3, 0) mm"),
    ("direction", {"direction": (1, 0, 0, 0, 1, 0, 0, 0, 1)}, "mask direction (1, 0, 0, 0, 1, 0, 0, 0, 1)"),
    ("tiny", {"origin": (10.0, -5.001, 3.0)}, None),  # within 1 % of a voxel
])
def test_mask_geometry(tmp_path, kind, mask_kwargs, expected):
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)  # oblique: rotated 30 degrees about z, anisotropic
    oblique = dict(spacing=(0.5, 0.5, 2.0), origin=(10.0, -5.0, 3.0), direction=(c, -s, 0, s, c, 0, 0, 0, 1))
    write_nrrd(tmp_path / "img.nrrd", **oblique)
    write_nrrd(tmp_path / "mask.nrrd", **(oblique | mask_kwargs))
    csv = write_csv(tmp_path / "m.csv", ["patient_id,image,label,mask", "p1,img.nrrd,0,mask.nrrd",
                                         "p2,img.nrrd,1,"])
    schema = make_schema(classes=None)
    if expected is None:
        m = load_manifest(csv, schema, min_cases_per_class=0)
        assert m.table["mask"][0] == str(tmp_path / "mask.nrrd")
        return
    with pytest.raises(ManifestError) as info:
        load_manifest(csv, schema, min_cases_per_class=0)
    (r, c, msg), = info.value.problems
    assert (r, c) == (2, "mask") and expected in msg
    load_manifest(csv, schema, min_cases_per_class=0, check_masks=False)  # the check can be turned off


def test_unreadable_mask(tmp_path):
    write_nrrd(tmp_path / "img.nrrd")
    (tmp_path / "mask.nrrd").write_text("not an image")
    csv = write_csv(tmp_path / "m.csv", ["patient_id,image,label,mask", "p1,img.nrrd,0,mask.nrrd"])
    with pytest.raises(ManifestError, match="row 2, column 'mask': cannot read the mask"):
        load_manifest(csv, make_schema(classes=None), min_cases_per_class=0)


def test_numeric_and_unknown_clinical_cells(tmp_path):
    csv = write_csv(tmp_path / "m.csv", ["patient_id,image,label,age,density",
                                         "p1,a,0,  ,2", "p2,b,1,n/a,4.0", "p3,c,0,18,?", "p4,d,1,1e2,NaN"])
    m = load_manifest(csv, make_schema(classes=None), check_files=False)
    assert [r["age"] for r in m.records] == [None, None, 18.0, 100.0]
    assert [r["density"] for r in m.records] == [2, 4, None, None]
    assert m.table["age"].tolist() == ["", "n/a", "18", "1e2"]  # raw text kept
    assert np.array_equal(m.rows, [2, 3, 4, 5])


def test_mask_geometry_png(tmp_path):
    """2-D photos (a mammogram exported as PNG): the mask must have the image's pixel grid."""
    from PIL import Image as PILImage

    PILImage.fromarray(np.zeros((6, 8), np.uint8)).save(tmp_path / "img.png")
    PILImage.fromarray(np.zeros((6, 8), np.uint8)).save(tmp_path / "ok.png")
    PILImage.fromarray(np.zeros((5, 8), np.uint8)).save(tmp_path / "bad.png")
    csv = write_csv(tmp_path / "m.csv", ["patient_id,image,label,mask", "p1,img.png,0,ok.png",
                                         "p2,img.png,1,bad.png"])
    with pytest.raises(ManifestError) as info:
        load_manifest(csv, make_schema(classes=None), min_cases_per_class=0)
    assert [(r, c) for r, c, _ in info.value.problems] == [(3, "mask")]
    assert "mask size (8, 5, 1) does not match the image size (8, 6, 1)" in info.value.problems[0][2]
