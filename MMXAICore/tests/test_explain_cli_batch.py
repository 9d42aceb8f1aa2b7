"""mmxai-explain over a manifest: one folder per case, a summary, resumable after SIGKILL (the rerun
computes only the missing cases, no half-written folder remains), another batch in the folder refused."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from test_explain_cli_support import env_one_thread, leftovers, run_explain, tiny_run


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_run(tmp_path_factory)


def case_folders(out):
    return sorted(p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))


def small_manifest(tiny, n_test=3):
    """A manifest beside the cohort's with ``n_test`` rows of test patients and one of a training patient."""
    splits = json.loads((tiny.run / "splits.json").read_text())["patients"]
    with tiny.manifest.open() as fh:
        reader = csv.DictReader(fh)
        rows, fields = list(reader), reader.fieldnames
    test = [r for r in rows if splits[r["patient_id"]] == "test"][:n_test]
    train = [r for r in rows if splits[r["patient_id"]] == "train"][:1]
    path = tiny.cohort / "manifest_batch_test.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(train + test)
    return path, len(test)


def test_batch_killed_then_resumed_completes_only_the_missing_cases(tiny, tmp_path):
    out = tmp_path / "batch"
    manifest, n_test = small_manifest(tiny)
    args = ["--model", tiny.run, "--manifest", manifest, "--split", "test", "--splits",
            tiny.run / "splits.json", "--out", out]
    proc = subprocess.Popen([sys.executable, "-m", "mmxai_core.cli.explain", *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env_one_thread())
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if out.is_dir() and case_folders(out):
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, "the batch ended before it could be killed"
    first = case_folders(out)
    assert first and not (out / "summary.csv").exists()
    for name in first:                      # every case folder that exists is complete
        assert (out / name / "result.json").is_file() and (out / name / "report.html").is_file()
    stamps = {n: (out / n / "result.json").stat().st_mtime_ns for n in first}

    again = run_explain(*args)
    assert again.returncode == 0, again.stderr
    summary = json.loads((out / "summary.json").read_text())
    rows = summary["rows"]
    assert summary["cases"] == len(rows) == n_test and len(rows) > len(first)
    assert summary["skipped_complete"] == len(first) and summary["computed"] == len(rows) - len(first)
    assert {r["case"] for r in rows if r["status"] == "complete (earlier run)"} == set(first)
    assert all(r["status"] in ("complete", "complete (earlier run)") for r in rows)
    assert case_folders(out) == sorted(r["case"] for r in rows)
    assert {n: (out / n / "result.json").stat().st_mtime_ns for n in first} == stamps   # not recomputed
    assert leftovers(out) == [] and leftovers(tmp_path) == []
    with (out / "summary.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert [t["case"] for t in table] == [r["case"] for r in rows]
    assert all(t["predicted"] in ("benign", "malignant") and 0 <= float(t["p_malignant"]) <= 1 for t in table)
    splits = json.loads((tiny.run / "splits.json").read_text())
    assert {r["patient_id"] for r in rows} <= {p for p, s in splits["patients"].items() if s == "test"}

    # a third run has nothing left to do; another batch in the same folder is refused
    third = run_explain(*args, "--quiet")
    assert third.returncode == 0 and "0 explained now" in third.stdout
    other = run_explain(*args[:4], "--split", "train", "--splits", tiny.run / "splits.json", "--out", out)
    assert other.returncode == 2 and "holds a batch of other inputs" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1


def test_a_refused_case_is_recorded_and_the_batch_goes_on(tiny, tmp_path):
    import shutil

    import numpy as np
    import torch
    from PIL import Image as PILImage

    from mmxai_core.explain.batch import explain_manifest
    from mmxai_core.explain.pipeline import load_model

    folder = tmp_path / "cohort"
    folder.mkdir()
    shutil.copy(tiny.image("mg"), folder / "mg.dcm")
    rgb = np.zeros((40, 40, 3), np.uint8)
    rgb[..., 0] = 255
    PILImage.fromarray(rgb, "RGB").save(folder / "photo.png")
    (folder / "manifest.csv").write_text("patient_id,image,label,case_id,age\n"
                                         "P1,photo.png,benign,c/1,50\nP2,mg.dcm,malignant,c/2,\n")
    torch.set_num_threads(1)
    model = load_model(tiny.run, "cpu")
    lines = []
    first = explain_manifest(model, folder / "manifest.csv", tmp_path / "out", progress_bar=False, log=lines.append)
    assert (first.computed, first.failed, first.exit_code) == (1, 1, 2)
    assert [r["status"] for r in first.rows] == ["refused", "complete"] and [r["case"] for r in first.rows] == ["c_1", "c_2"]
    assert "colour image" in first.rows[0]["error"] and len(lines) == 1 and "c_1" in lines[0]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".lock", "batch.json", "c_2", "summary.csv",
                                                                     "summary.json"]
    again = explain_manifest(model, folder / "manifest.csv", tmp_path / "out", progress_bar=False, log=lines.append)
    assert (again.computed, again.skipped, again.failed) == (0, 1, 1)      # the refused case is tried again
