"""``mmxai-train --ablation``: 2 variants x 2 seeds, 1 epoch, 32 px. One split file for every run, one shared
image cache, the table (CSV + Markdown) with CIs and the paired comparison against attention, DeLong, the
bar chart; a rerun reuses the finished runs; bad lists are refused with one line."""

from __future__ import annotations

import csv
import json

import pytest

from mmxai_core.cli.train import main as train_main
from mmxai_core.data.synthetic.output import write_cohort

TINY = ["--train.epochs=1", "--train.batch_size=8", "--train.threads=1", "--train.n_boot=200", "--quiet",
        "--preprocess.output_size_hw=32,32", "--preprocess.target_spacing_xy=5,5", "--preprocess.target_spacing_z=8",
        "--preprocess.n4=off", "--model.embed_dim=16", "--model.depth=1", "--model.mil_hidden=8",
        "--data.val_fraction=0.25", "--data.test_fraction=0.25"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("ablation")
    cohort = root / "cohort"
    write_cohort(cohort, n=24, seed=3, kind="mixed")
    args = ["--ablation", "--variants", "attention,clinical_only", "--seeds", "0,1", "--manifest",
            str(cohort / "manifest.csv"), "--schema", str(cohort / "schema.yaml"), "--out", str(root / "abl"), *TINY]
    return root, cohort, args


def test_ablation_files_and_one_split(study, capsys):
    root, _, args = study
    code = train_main(args)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    abl = root / "abl"
    for name in ("ablation.json", "ablation.csv", "ablation.md", "ablation_bars.png", "splits.json"):
        assert (abl / name).is_file(), name
    assert (abl / "ablation_bars.png").read_bytes()[:4] == b"\x89PNG"
    runs = sorted(p.name for p in (abl / "runs").iterdir())
    assert runs == ["attention-s0", "attention-s1", "clinical_only-s0", "clinical_only-s1"]
    # every run uses the study's one split file
    shared = json.loads((abl / "splits.json").read_text())["patients"]
    for r in runs:
        assert json.loads((abl / "runs" / r / "splits.json").read_text())["patients"] == shared, r
        assert not (abl / "runs" / r / "cache").exists()        # the shared cache, not one per run
    assert any((abl / "cache").glob("*.npy"))
    rows = list(csv.DictReader((abl / "ablation.csv").open()))
    assert [r["variant"] for r in rows] == ["attention", "clinical_only"]
    assert rows[0]["n_seeds"] == "2" and rows[0]["seeds"] == "0;1"
    assert rows[0]["auc_ci_low"] and float(rows[0]["auc_ci_low"]) <= float(rows[0]["auc_mean"])
    assert rows[0]["auc_diff"] == "" and rows[1]["auc_diff"] != "" and rows[1]["auc_diff_p_value"] != ""
    md = (abl / "ablation.md").read_text()
    assert "ΔAUC vs attention" in md and "DeLong" in md and "Research use only" in md
    info = json.loads((abl / "ablation.json").read_text())
    assert info["status"] == "complete" and [e["status"] for e in info["runs"]] == ["trained"] * 4
    assert set(info["delong"]) == {"clinical_only"} and 0 <= info["delong"]["clinical_only"]["p_value"] <= 1
    assert all(e["cases_per_s"] > 0 for e in info["runs"])
    assert "AUC" in captured.out and "(reference)" in captured.out


def test_rerun_reuses_finished_runs(study, capsys):
    root, _, args = study
    if not (root / "abl" / "ablation.json").is_file():
        pytest.skip("needs the first test's study")
    before = (root / "abl" / "runs" / "attention-s0" / "checkpoint" / "weights.safetensors").stat().st_mtime_ns
    assert train_main(args) == 0
    capsys.readouterr()
    info = json.loads((root / "abl" / "ablation.json").read_text())
    assert [e["status"] for e in info["runs"]] == ["reused"] * 4
    assert (root / "abl" / "runs" / "attention-s0" / "checkpoint" / "weights.safetensors").stat().st_mtime_ns == before


@pytest.mark.parametrize("extra, fragment", [
    (["--variants", "attention,attention"], "listed twice"),
    (["--variants", "concat,resnet"], "unknown variant"),
    (["--variants", "concat,image_only"], "not among the variants"),
    (["--seeds", "0,x"], "'x' is not valid"),
    (["--seed", "3"], "--seeds"),
])
def test_bad_lists_are_refused(study, tmp_path, capsys, extra, fragment):
    _, cohort, _ = study
    out = tmp_path / "abl"
    code = train_main(["--ablation", "--manifest", str(cohort / "manifest.csv"), "--schema",
                       str(cohort / "schema.yaml"), "--out", str(out), *TINY, *extra])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert code == 2 and len(errors) == 1 and fragment in errors[0], err
    assert not out.exists()
