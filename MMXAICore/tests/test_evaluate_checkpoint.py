"""``mmxai-evaluate`` and the checkpoint's Grad-CAM++ scale: a tiny trained run (1 epoch, 32 px), then the
evaluation of its checkpoint: files, CIs from >= 1000 patient resamples, the validation threshold applied,
calibration, per-dataset breakdown; bad input refused with one line, exit 2, nothing written."""

from __future__ import annotations

import csv
import json
import math
import shutil

import numpy as np
import pytest

from mmxai_core.cli.evaluate import main as evaluate_main
from mmxai_core.data.synthetic.output import write_cohort
from mmxai_core.train.config import resolve_config
from mmxai_core.train.run import run_training

# tiny model, 32 px, 8 mm slices, one epoch on one CPU thread
TINY = {"train.epochs": "1", "train.batch_size": "8", "train.threads": "1", "train.n_boot": "50",
        "train.progress": "false", "preprocess.output_size_hw": "32,32", "preprocess.target_spacing_xy": "5,5",
        "preprocess.target_spacing_z": "8", "preprocess.n4": "off", "model.embed_dim": "16", "model.depth": "1",
        "model.mil_hidden": "8", "data.val_fraction": "0.25", "data.test_fraction": "0.25"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    cohort = root / "cohort"
    write_cohort(cohort, n=24, seed=3, kind="mixed")
    result = run_training(resolve_config(None, TINY), cohort / "manifest.csv", cohort / "schema.yaml", root / "run")
    return root, cohort, root / "run", result


def _refused(capsys, code, *fragments):
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    # the error alone: the research-use notice waits for accepted inputs
    assert len(errors) == 1 and errors[0].startswith("mmxai-evaluate: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def _nothing_written(out):
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.eval-")]


def test_checkpoint_stores_the_models_cam_scale(trained):
    _, _, run, result = trained
    meta = json.loads((run / "checkpoint" / "metadata.json").read_text())
    entry = meta["explain"]
    assert math.isfinite(entry["cam_scale"]) and entry["cam_scale"] > 0
    assert entry["percentile"] == 99.0
    assert entry["n_cases"] == min(32, len(result.predictions["val"]))
    from mmxai_core.explain.gradcam import cam_scale_from_metadata
    assert cam_scale_from_metadata(meta) == pytest.approx(entry["cam_scale"])


def test_evaluate_test_split_matches_the_run(trained, capsys):
    root, cohort, run, result = trained
    out = root / "eval-test"
    code = evaluate_main(["--model", str(run / "checkpoint"), "--manifest", str(cohort / "manifest.csv"),
                          "--schema", str(cohort / "schema.yaml"), "--split", "test", "--splits",
                          str(run / "splits.json"), "--out", str(out), "--threads", "1"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "auc" in captured.out and "ECE" in captured.out
    for name in ("metrics.json", "metrics.csv", "metrics.md", "reliability.png", "predictions.csv"):
        assert (out / name).is_file(), name
    assert (out / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((out / "metrics.json").read_text())
    test = result.predictions["test"]
    assert report["n_cases"] == len(test) and report["bootstrap"]["n_boot"] >= 1000
    assert report["bootstrap"]["unit"] == "patient"
    # the checkpoint's validation threshold, applied unchanged
    meta = json.loads((run / "checkpoint" / "metadata.json").read_text())
    assert report["threshold"]["value"] == pytest.approx(meta["threshold"]["value"])
    assert report["threshold"]["source"].startswith("validation")
    for metric in ("accuracy", "sensitivity", "specificity", "f1", "auc"):
        m = report["metrics"][metric]
        assert m["value"] == pytest.approx(result.metrics["test"]["metrics"][metric]["value"], abs=1e-6), metric
        if m["ci_low"] is not None:
            assert m["ci_low"] <= m["value"] + 1e-9 <= m["ci_high"] + 2e-9
    assert 0 <= report["calibration"]["ece"] <= 1
    assert set(report["by_dataset"]) == {"synth-mg", "synth-mr"}
    assert sum(p["n_cases"] for p in report["by_dataset"].values()) == len(test)
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert [r["case"] for r in rows] == list(test.case_keys)
    expected = np.where(test.probs[:, 1] >= meta["threshold"]["value"], "malignant", "benign")
    assert [r["predicted"] for r in rows] == expected.tolist()
    md = (out / "metrics.md").read_text()
    assert "95% CI" in md and "Dataset: synth-mr" in md and "Research use only" in md
    metric_rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert {r["dataset"] for r in metric_rows} == {"(all)", "synth-mg", "synth-mr"}


def test_not_a_checkpoint_folder(trained, tmp_path, capsys):
    _, cohort, _, _ = trained
    out = tmp_path / "eval"
    code = evaluate_main(["--model", str(cohort), "--manifest", str(cohort / "manifest.csv"), "--out", str(out)])
    _refused(capsys, code, "not an MMXAI checkpoint")
    _nothing_written(out)


def test_manifest_columns_must_fit_the_checkpoint(trained, tmp_path, capsys):
    _, cohort, run, _ = trained
    text = (cohort / "manifest.csv").read_text().splitlines()
    # rename a clinical column: an unknown column for the checkpoint's schema
    bad = tmp_path / "manifest.csv"
    bad.write_text("\n".join([text[0].replace("ca15_3", "ca125")] + text[1:]) + "\n")
    shutil.copytree(cohort / "images", tmp_path / "images")
    shutil.copytree(cohort / "masks", tmp_path / "masks")
    out = tmp_path / "eval"
    code = evaluate_main(["--model", str(run), "--manifest", str(bad), "--out", str(out)])
    _refused(capsys, code, "ca125")
    _nothing_written(out)


def test_schema_must_match_the_checkpoint(trained, tmp_path, capsys):
    _, cohort, run, _ = trained
    schema = (cohort / "schema.yaml").read_text().replace("name: heart_rate", "name: pulse")
    (tmp_path / "schema.yaml").write_text(schema)
    out = tmp_path / "eval"
    code = evaluate_main(["--model", str(run), "--manifest", str(cohort / "manifest.csv"), "--schema",
                          str(tmp_path / "schema.yaml"), "--out", str(out)])
    _refused(capsys, code, "do not match the checkpoint", "pulse")
    _nothing_written(out)


def test_empty_split(trained, tmp_path, capsys):
    _, cohort, run, _ = trained
    # only the training patients: the test split of the run's split file is empty
    splits = json.loads((run / "splits.json").read_text())
    train_patients = {p for p, s in splits["patients"].items() if s == "train"}
    lines = (cohort / "manifest.csv").read_text().splitlines()
    keep = [lines[0]] + [line for line in lines[1:] if line.split(",")[0] in train_patients]
    (cohort / "train_only.csv").write_text("\n".join(keep) + "\n")
    splits["patients"] = {p: s for p, s in splits["patients"].items() if p in train_patients}
    (tmp_path / "splits.json").write_text(json.dumps(splits))
    out = tmp_path / "eval"
    code = evaluate_main(["--model", str(run), "--manifest", str(cohort / "train_only.csv"), "--split", "test",
                          "--splits", str(tmp_path / "splits.json"), "--out", str(out)])
    _refused(capsys, code, "split 'test' is empty")
    _nothing_written(out)


def test_shipped_demo_model_loads_and_names_no_patient():
    """The Slicer module's demo checkpoint: loads, under 10 MB, has the Grad-CAM++ scale, no patient ids."""
    import re
    from pathlib import Path

    from mmxai_core.train.predict import load_run_checkpoint

    folder = Path(__file__).resolve().parents[2] / "MMXAISlicer" / "Resources" / "DemoModel"
    if not (folder / "metadata.json").is_file():
        pytest.skip("the demo model is not shipped in this checkout")
    loaded = load_run_checkpoint(folder)
    assert loaded.classes == ["benign", "malignant"] and loaded.threshold is not None
    size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    assert size < 10 * 2**20
    text = (folder / "metadata.json").read_text()
    assert not re.search(r"(?<![A-Za-z0-9])P\d{4}(?![A-Za-z0-9])", text)   # synthetic patient ids look like P0001
    assert "manifest.csv" not in text
    assert loaded.metadata["explain"]["cam_scale"] > 0
    assert "mmxai_core.demo" in loaded.metadata["provenance"]["made_by"]


def test_shipped_demo_model_was_trained_with_the_demo_configuration():
    """The shipped checkpoint is what ``make demo`` trains: every key the demo sets has the demo's value in
    the checkpoint's resolved training config (a changed demo configuration needs a re-exported model)."""
    from pathlib import Path

    from mmxai_core.demo import DEMO_OVERRIDES
    from mmxai_core.train.config import resolve_config
    from mmxai_core.train.predict import load_run_checkpoint

    folder = Path(__file__).resolve().parents[2] / "MMXAISlicer" / "Resources" / "DemoModel"
    if not (folder / "metadata.json").is_file():
        pytest.skip("the demo model is not shipped in this checkout")
    shipped = load_run_checkpoint(folder).metadata["training"]
    expected = resolve_config(None, DEMO_OVERRIDES).to_dict()
    for key in DEMO_OVERRIDES:
        section, name = key.split(".", 1)
        assert shipped["config"][section][name] == expected[section][name], key
    assert ("unknown_refit" in shipped) == (expected["train"]["unknown_refit"] > 0)
