"""``mmxai-adapt`` CLI: success path, and bad input -> one error line, exit 2, no traceback."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import SimpleITK as sitk

from mmxai_core.cli.adapt import _field_arg, main

from test_adapter_fakes import MASS_COLUMNS, write_dicom


def run(*args, cwd):
    return subprocess.run([sys.executable, "-m", "mmxai_core.cli.adapt", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def error_lines(proc):
    return [line for line in proc.stderr.splitlines() if "error" in line]


def generic_data(tmp_path, image_name="p1.png"):
    (tmp_path / "img").mkdir()
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 3), np.uint8)), str(tmp_path / "img" / "p1.png"))
    with open(tmp_path / "t.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["id", "image", "y", "age"], ["p1", image_name, "1", "50"]])


def test_cli_generic_ok_and_missing_image(tmp_path):
    generic_data(tmp_path)
    ok = run("generic", "--table", "t.csv", "--image-root", "img", "--out", "img/mmxai", "--id-column", "id",
             "--label-column", "y", "--image-column", "image", "--field", "age:numeric", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "Research use" in ok.stderr and "1 row(s)" in ok.stdout
    assert (tmp_path / "img" / "mmxai" / "manifest.csv").read_text().splitlines()[1] == "p1,../p1.png,1,generic,,50"
    (tmp_path / "img" / "p1.png").unlink()
    bad = run("generic", "--table", "t.csv", "--image-root", "img", "--out", "out", "--id-column", "id",
              "--label-column", "y", "--image-pattern", "{id}.png", cwd=tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert len(error_lines(bad)) == 1
    assert "t.csv: row 2, column 'image pattern {id}.png': image" in error_lines(bad)[0]


def test_cli_cbis_missing_column_and_unknown_pathology(tmp_path, capsys):
    (tmp_path / "dl").mkdir()
    columns = [c for c in MASS_COLUMNS if c != "subtlety"]
    with open(tmp_path / "mass_case_description_train_set.csv", "w", newline="") as fh:
        csv.writer(fh).writerow(columns)
    proc = run("cbis-ddsm", "--csv", "mass_case_description_train_set.csv", "--image-root", "dl", "--out", "o",
               cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = error_lines(proc)
    assert line.startswith("mmxai-adapt: error: mass_case_description_train_set.csv: missing required column 'subtlety'")
    # in-process, same entry point: an unknown pathology value names file, row and column
    with open(tmp_path / "mass_case_description_train_set.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([MASS_COLUMNS, ["P_00001", 2, "LEFT", "CC", 1, "mass", "OVAL", "OVAL", 3, "MAYBE",
                                                 3, "Mass-Training_P_00001_LEFT_CC/1/2/000000.dcm", "", ""]])
    assert main(["cbis-ddsm", "--csv", str(tmp_path / "mass_case_description_train_set.csv"), "--image-root",
                 str(tmp_path / "dl"), "--out", str(tmp_path / "o")]) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if "error" in x]
    assert len(err) == 1 and "row 2, column 'pathology': unknown pathology 'MAYBE'" in err[0]


def test_cli_duke_without_target_column_and_list_series(tmp_path, capsys):
    root = tmp_path / "dicom"
    write_dicom(root / "Breast_MRI_001" / "study" / "s3" / "1-1.dcm", np.zeros((4, 4), np.uint16), modality="MR",
                series_description="ax dyn pre", position=(0, 0, 0))
    with open(tmp_path / "clin.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["Patient ID", "ER"], ["Breast_MRI_001", "1"]])
    proc = run("duke-mri", "--clinical", "clin.csv", "--dicom-root", "dicom", "--out", "o", "--target", "Mol Subtype",
               cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = error_lines(proc)
    assert "clin.csv: missing required column 'Mol Subtype'" in line
    # in-process: the same entry point, series listing and JSON summary
    assert main(["--json", "duke-mri", "--dicom-root", str(root), "--list-series"]) == 0
    assert json.loads(capsys.readouterr().out) == {"ax dyn pre": 1}
    assert main(["--json", "duke-mri", "--clinical", str(tmp_path / "clin.csv"), "--dicom-root", str(root),
                 "--out", str(tmp_path / "o"), "--target", "ER", "--field", "Patient ID:categorical"]) == 2
    assert "patient-ID column and cannot also be a clinical field" in capsys.readouterr().err
    with open(tmp_path / "clin.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["Patient ID", "ER", "Age"], ["Breast_MRI_001", "1", "50"]])
    assert main(["--json", "duke-mri", "--clinical", str(tmp_path / "clin.csv"), "--dicom-root", str(root),
                 "--out", str(tmp_path / "o"), "--target", "ER", "--field", "Age"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"] == {"": {"1": 1}}


def test_field_argument_parsing():
    assert _field_arg("ER") == ("ER", None)
    assert _field_arg("Tumor Grade:ordinal") == ("Tumor Grade", "ordinal")
    assert _field_arg("Ratio a:b") == ("Ratio a:b", None)
