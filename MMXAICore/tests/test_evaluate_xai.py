"""``mmxai-evaluate --xai`` / :func:`mmxai_core.explain.evaluate_xai.evaluate_xai` on the tiny model.

Four cases (two with a lesion mask, one MR volume and one mammogram each way, one ground-truth discordant
case) in a manifest of their own beside a copy of the cohort's ground_truth.json. Research use only.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_explain_cli_support import env_one_thread, tiny_run

PATIENTS = ("P0001", "P0003", "P0002", "P0014")     # masked MR, masked MG, unmasked MG, unmasked MR (discordant)
METRICS = ("stability", "faithfulness", "sanity", "localisation", "coherence")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_run(tmp_path_factory)


@pytest.fixture(scope="module")
def small_manifest(tiny, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("xai-cohort")
    with tiny.manifest.open(newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames
        rows = {r["patient_id"]: r for r in reader}
    out = folder / "manifest.csv"
    with out.open("w", newline="") as fh:
        w = csv.DictWriter(fh, header)
        w.writeheader()
        for p in PATIENTS:
            r = dict(rows[p])
            for col in ("image", "mask"):       # copied: manifest paths must stay inside its folder
                if r[col]:
                    src, dst = tiny.cohort / r[col], folder / r[col]
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
            w.writerow(r)
    shutil.copy(tiny.cohort / "ground_truth.json", folder / "ground_truth.json")
    return out


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _evaluate(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmxai_core.cli.evaluate", *map(str, args)], check=False,
                          capture_output=True,
                          text=True, timeout=120, env=env_one_thread())


def test_evaluate_xai_all_metrics(tiny, small_manifest, tmp_path):
    import torch

    from mmxai_core.train.evaluate import evaluate_checkpoint

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        report = evaluate_checkpoint(tiny.run, small_manifest, tmp_path / "eval", n_boot=20, threads=1,
                                     device="cpu", xai=True, xai_options={"n_boot": 50})
    finally:
        torch.set_num_threads(threads)
    out = tmp_path / "eval"
    for name in ("xai_cases.csv", "xai_summary.json", "xai_summary.md", "xai_details.json", "xai_deletion.png",
                 "xai_stability.png", "xai_sanity.png", "xai_shapley_fields.png", "xai_localisation.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]     # no staging left

    rows = _read_csv(out / "xai_cases.csv")
    assert [r["patient_id"] for r in rows] == list(PATIENTS)
    assert all(r["error"] == "" for r in rows)
    for r in rows:
        masked = r["has_mask"] == "True"
        assert masked == (r["patient_id"] in ("P0001", "P0003"))
        for col in ("pointing_game", "pointing_game_baseline", "energy_in_mask", "iou"):
            assert (r[col] != "") == masked, (r["patient_id"], col)
        for col in ("gradcam_ssim_noise", "gradcam_ssim_rigid", "image_aopc", "image_aopc_random",
                    "sanity_ssim_headline", "sanity_ssim_final", "sanity_ssim_lowest", "coherence"):
            float(r[col])
    assert {r["kind"] for r in rows} == {"2d", "volume"}

    summary = json.loads((out / "xai_summary.json").read_text())
    assert summary == report.result["xai"]
    assert summary["metrics"] == list(METRICS) and summary["n_cases"] == 4
    params = summary["parameters"]
    for m in METRICS:
        assert params[m], m
    assert params["stability"]["2d"]["gradcam"]["k"] == params["settings_by_kind"]["2d"]["stability_k"]
    assert params["stability"]["volume"]["gradcam"]["k"] == params["settings_by_kind"]["volume"]["stability_k"]
    assert params["faithfulness"]["volume"]["image"]["n_random"] == 4
    assert params["settings_by_kind"]["volume"]["stability_k"] < params["settings_by_kind"]["2d"]["stability_k"]
    assert "patient bootstrap" in summary["ci"]["method"]
    assert summary["localisation"]["n_cases"] == 2
    assert summary["coherence_auroc"]["n_discordant"] == 1 and summary["coherence_auroc"]["n_other"] == 3
    assert summary["coherence_auroc"]["auroc"] is not None
    fields = summary["clinical_fields"]
    assert {e["field"] for e in fields["ranking"] if e["noise"]} == {"heart_rate", "blood_group", "left_handed"}
    assert isinstance(fields["informative_above_noise"], bool)
    labels = {t["metric"] for t in summary["table"]}
    assert {"gradcam_ssim_noise", "image_aopc", "sanity_ssim_headline", "pointing_game", "coherence"} <= labels
    md = (out / "xai_summary.md").read_text()
    assert "| metric | mean | 95% CI | baseline |" in md and "Research use" in md and "patient bootstrap" in md
    assert "xai" in json.loads((out / "metrics.json").read_text())


def test_cli_subset_and_max_cases(tiny, small_manifest, tmp_path):
    out = tmp_path / "eval"
    proc = _evaluate("--model", tiny.run, "--manifest", small_manifest, "--out", out, "--threads", "1",
                     "--n-boot", "10", "--device", "cpu", "--xai", "--xai-metrics", "localisation,stability",
                     "--xai-max-cases", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "xai_summary.md" in proc.stdout
    rows = _read_csv(out / "xai_cases.csv")
    assert len(rows) == 2
    summary = json.loads((out / "xai_summary.json").read_text())
    assert summary["metrics"] == ["stability", "localisation"] and summary["n_cases"] == 2
    assert "sanity" not in summary["parameters"] and summary["parameters"]["localisation"]
    assert all(r["sanity_ssim_headline"] == "" and r["image_aopc"] == "" for r in rows)
    assert (out / "xai_summary.md").is_file() and (out / "metrics.json").is_file()


def test_cli_bad_metric_name(tiny, small_manifest, tmp_path):
    out = tmp_path / "eval"
    proc = _evaluate("--model", tiny.run, "--manifest", small_manifest, "--out", out, "--xai",
                     "--xai-metrics", "stability,bogus")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "bogus" in lines[0] and "Traceback" not in proc.stderr
    assert not out.exists()
