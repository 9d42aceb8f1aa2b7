"""``mmxai-train`` refuses bad input with one line on stderr, exit code 2, no traceback, nothing written."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import torch

SCHEMA = """classes: [benign, malignant]
fields:
  - {name: age, type: numeric, range: [0, 120]}
  - {name: grade, type: ordinal, categories: [1, 2, 3]}
"""
FAST = ["--train.threads=1", "--quiet", "--preprocess.output_size_hw=32,32", "--preprocess.n4=off",
        "--preprocess.target_spacing_xy=2,2", "--data.val_fraction=0.25", "--data.test_fraction=0.25"]


def cohort(folder, n=12, labels=None, ages=None, bad_row=None):
    """n one-slice NRRD images + manifest.csv + schema.yaml; ``bad_row`` overflows to NaN when scaled."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    lines = ["patient_id,image,label,age,grade"]
    for i in range(n):
        arr = rng.normal(100, 20, size=(1, 40, 40)).astype(np.float32)
        if i == bad_row:
            arr = np.full((1, 40, 40), 3e38, np.float32)
            arr[:, ::2] = -3e38
        img = sitk.GetImageFromArray(arr)
        sitk.WriteImage(img, str(folder / f"c{i}.nrrd"))
        label = labels[i] if labels else ("malignant" if i % 2 else "benign")
        age = ages[i] if ages else 40 + i
        lines.append(f"P{i},c{i}.nrrd,{label},{age},{1 + i % 3}")
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n")
    (folder / "schema.yaml").write_text(SCHEMA)
    return ["--manifest", str(folder / "manifest.csv"), "--schema", str(folder / "schema.yaml")]


def run(*args):
    env = {k: v for k, v in os.environ.items() if k != "MMXAI_DEBUG"}
    return subprocess.run([sys.executable, "-m", "mmxai_core.cli.train", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def assert_refused(proc, *fragments):
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(errors) == 1, proc.stderr  # the error alone: the research-use notice waits for accepted inputs
    assert errors[0].startswith("mmxai-train: error: ")
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def test_manifest_and_schema_disagree(tmp_path):
    ages = [str(40 + i) for i in range(12)]
    ages[3] = "old"
    args = cohort(tmp_path / "c", ages=ages)
    proc = run(*args, "--out", str(tmp_path / "run"), *FAST)
    assert_refused(proc, "manifest.csv", "row 5", "age")
    assert not (tmp_path / "run").exists()


def test_class_with_a_single_case(tmp_path):
    labels = ["benign"] * 11 + ["malignant"]
    args = cohort(tmp_path / "c", labels=labels)
    proc = run(*args, "--out", str(tmp_path / "run"), *FAST)
    assert_refused(proc, "malignant", "1 patient")
    assert not (tmp_path / "run").exists()


def test_empty_split(tmp_path):
    args = cohort(tmp_path / "c")
    splits = {"format": "mmxai.splits", "version": 1, "seed": 0, "val_fraction": 0.25, "test_fraction": 0.25,
              "classes": ["benign", "malignant"],
              "patients": {f"P{i}": ("train" if i < 8 else "val") for i in range(12)}}
    (tmp_path / "splits.json").write_text(json.dumps(splits))
    proc = run(*args, "--out", str(tmp_path / "run"), "--splits", str(tmp_path / "splits.json"), *FAST)
    assert_refused(proc, "split 'test' is empty")
    assert not (tmp_path / "run").exists()


def test_nan_after_preprocessing_names_the_case(tmp_path):
    args = cohort(tmp_path / "c", bad_row=6)
    proc = run(*args, "--out", str(tmp_path / "run"), *FAST)
    assert_refused(proc, "case P6/c6.nrrd (manifest row 8)", "NaN")
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_gpu_asked_for_but_absent(tmp_path):
    args = cohort(tmp_path / "c", n=4)
    proc = run(*args, "--out", str(tmp_path / "run"), "--device", "cuda", *FAST)
    assert_refused(proc, "CUDA requested but not available")
    assert not (tmp_path / "run").exists()


def test_output_folder_with_another_run(tmp_path):
    args = cohort(tmp_path / "c")
    out = tmp_path / "run"
    out.mkdir()
    other = {"format": "mmxai.train_run", "manifest_sha256": "0" * 64, "config_sha256": "1" * 64, "status": "complete"}
    (out / "run.json").write_text(json.dumps(other))
    proc = run(*args, "--out", str(out), *FAST)
    assert_refused(proc, "holds a different run", "manifest fingerprint and configuration differ", "--force")
    assert sorted(p.name for p in out.iterdir()) == ["run.json"]


def test_bad_overrides_are_named_in_one_line(tmp_path, capsys):
    from mmxai_core.cli.train import main

    args = cohort(tmp_path / "c", n=4)
    out = str(tmp_path / "run")
    for argv, fragments in (([*args, "--out", out, "--optim.lrr=1"], ("unknown config key 'optim.lrr'",
                                                                     "did you mean 'optim.lr'")),
                            ([*args, "--out", out, "--train.epochs=many"], ("'train.epochs'", "integer")),
                            ([*args, "--out", out, "--model.preset", "huge"], ("'model.preset'", "tiny"))):
        assert main(argv) == 2
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if "error:" in line]
        assert len(errors) == 1 and all(f in errors[0] for f in fragments), err
    with pytest.raises(SystemExit) as exc:
        main([*args, "--out", out, "--bogus"])
    assert exc.value.code == 2 and "unrecognized argument: --bogus" in capsys.readouterr().err
    assert main(["--out", out, "--print-config", "--optim.lr=1e-3"]) == 0
    assert "lr: 0.001" in capsys.readouterr().out
    assert not (tmp_path / "run").exists()
