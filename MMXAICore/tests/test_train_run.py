"""A whole run on a tiny synthetic cohort (MG + MR): files, checkpoint, inference loader, resume equality,
the output-folder guard, split reuse for ablations."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mmxai_core.data.synthetic.output import write_cohort
from mmxai_core.errors import CheckpointError
from mmxai_core.train.config import resolve_config
from mmxai_core.train.run import run_training
from mmxai_core.train.state import RunFolderError

# tiny model, 64 px, 8 mm slices: ~1 s per epoch on one CPU thread
COMMON = {"train.epochs": "3", "train.batch_size": "8", "train.threads": "1", "train.n_boot": "50",
          "train.progress": "false", "train.patience": "5",
          "preprocess.output_size_hw": "64,64", "preprocess.target_spacing_xy": "2.5,2.5",
          "preprocess.target_spacing_z": "8", "preprocess.n4": "off",
          "model.embed_dim": "32", "model.depth": "1", "model.mil_hidden": "16",
          "data.val_fraction": "0.2", "data.test_fraction": "0.2"}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("cohort") / "synth"
    write_cohort(out, n=30, seed=5, kind="mixed")
    return out


@pytest.fixture(scope="module")
def full_run(cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "full"
    cfg = resolve_config(None, COMMON)
    result = run_training(cfg, cohort / "manifest.csv", cohort / "schema.yaml", out)
    return out, result


def test_run_writes_a_complete_run_folder(full_run, cohort):
    out, result = full_run
    assert result.status == "complete" and len(result.history) == 3
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "complete" and info["format"] == "mmxai.train_run"
    for name in ("config.resolved.yaml", "splits.json", "log.csv", "metrics.json", "metrics.md",
                 "predictions/val.csv", "predictions/test.csv", "checkpoint/weights.safetensors",
                 "checkpoint/metadata.json", "state/state.json"):
        assert (out / name).is_file(), name
    assert not list(out.rglob("*.tmp*")) and not list(out.rglob("*.pt")) and not list(out.rglob("*.pkl"))
    rows = list(csv.DictReader((out / "log.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert all(float(r["data_s"]) >= 0 and float(r["model_s"]) > 0 and r["val_auc"] for r in rows)
    # variable slice counts really went through the model (MR volumes and 1-slice mammograms)
    assert rows[0]["slices_per_s"] != rows[0]["cases_per_s"]
    # the resolved config re-creates the same run identity
    again = resolve_config(out / "config.resolved.yaml", {"train.threads": "1"})
    assert again.fingerprint() == info["config_sha256"]
    md = (out / "metrics.md").read_text()
    assert "95% CI" in md and "Research use only" in md
    test_auc = result.metrics["test"]["metrics"]["auc"]
    assert test_auc["ci_low"] is not None and test_auc["ci_low"] <= test_auc["value"] <= test_auc["ci_high"]


def test_checkpoint_metadata_and_inference_loader(full_run, tmp_path):
    from mmxai_core.data.dataset import ImageStore, MultimodalDataset
    from mmxai_core.data.manifest import load_manifest
    from mmxai_core.data.splits import load_splits
    from mmxai_core.train.device import make_runtime
    from mmxai_core.train.predict import load_run_checkpoint, predict
    from mmxai_core.train.thresholds import select_threshold

    out, result = full_run
    text = (out / "checkpoint" / "metadata.json").read_text()
    meta = json.loads(text)
    for key in ("model_config", "clinical_preprocessor", "image_preprocess", "augment", "classes", "threshold",
                "masking_rates", "data_fingerprint", "metrics", "versions", "training"):
        assert key in meta, key
    assert set(meta["metrics"]) == {"val", "test"} and meta["classes"] == ["benign", "malignant"]
    assert {"torch", "timm", "python", "mmxai-core"} <= set(meta["versions"])
    assert meta["masking_rates"]["clinical_mask_rate"] == pytest.approx(0.15)
    # no identifiers, paths or split assignment in the checkpoint
    assert "P0001" not in text and "patients" not in meta and "manifest.csv" not in text and "/tmp" not in text
    val = result.predictions["val"]
    expected = select_threshold(val.labels, val.probs).threshold
    assert meta["threshold"]["value"] == pytest.approx(expected) and meta["threshold"]["source"] == "validation"
    # released weights are the best validation epoch's
    best = load_file(str(out / "state" / json.loads((out / "state/state.json").read_text())["files"]["best_model"]))
    released = load_file(str(out / "checkpoint" / "weights.safetensors"))
    assert all(torch.equal(best[k], released[k]) for k in released)

    loaded = load_run_checkpoint(out)
    assert loaded.classes == ["benign", "malignant"] and loaded.threshold == pytest.approx(expected)
    manifest = load_manifest(json.loads((out / "run.json").read_text())["manifest"], loaded.clinical.schema)
    test_rows = load_splits(out / "splits.json").indices(manifest)["test"]
    sub = manifest.subset(test_rows)
    data = MultimodalDataset(sub, loaded.clinical.transform(sub.records), ImageStore(loaded.image_preprocess))
    preds = predict(loaded.model, data, make_runtime("cpu"), batch_size=4)
    np.testing.assert_allclose(preds.probs, result.predictions["test"].probs, atol=1e-6)
    assert list(preds.patient_ids) == list(result.predictions["test"].patient_ids)
    assert loaded.decide(preds.probs).tolist() == (preds.probs[:, 1] >= loaded.threshold).astype(int).tolist()

    # incomplete or foreign checkpoints are refused with a clear message
    broken = tmp_path / "broken"
    shutil.copytree(out / "checkpoint", broken)
    m = json.loads((broken / "metadata.json").read_text())
    del m["clinical_preprocessor"]
    (broken / "metadata.json").write_text(json.dumps(m))
    with pytest.raises(CheckpointError, match="missing clinical_preprocessor"):
        load_run_checkpoint(broken)
    m["checkpoint_kind"] = None
    (broken / "metadata.json").write_text(json.dumps(m))
    with pytest.raises(CheckpointError, match="not an mmxai-train checkpoint"):
        load_run_checkpoint(broken)


def _cli(*args, cwd=None):
    env = {k: v for k, v in os.environ.items() if k != "MMXAI_DEBUG"}
    return subprocess.run([sys.executable, "-m", "mmxai_core.cli.train", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


def test_resume_after_interruption_gives_the_same_weights(full_run, cohort, tmp_path):
    """CLI: stop after epoch 1 (as a crash would leave it), then --resume; on the CPU the final weights are
    bit-identical to the uninterrupted in-process run."""
    out_full, result = full_run
    out = tmp_path / "resumed"
    overrides = [f"--{k}={v}" for k, v in COMMON.items()]
    first = _cli("--manifest", str(cohort / "manifest.csv"), "--schema", str(cohort / "schema.yaml"),
                 "--out", str(out), *overrides, "--train.stop_after_epochs=1")
    assert first.returncode == 0, first.stderr
    assert "stopped after epoch 1" in first.stderr and "Research use only" in first.stderr
    state = json.loads((out / "state/state.json").read_text())
    assert state["epoch"] == 1 and not (out / "checkpoint").exists()
    assert json.loads((out / "run.json").read_text())["status"] == "running"
    # without --resume the unfinished run is protected
    with pytest.raises(RunFolderError, match="unfinished run of this configuration; continue it with --resume"):
        run_training(resolve_config(None, COMMON), cohort / "manifest.csv", cohort / "schema.yaml", out)
    # --resume alone: config, manifest and schema come from the run folder
    second = _cli("--out", str(out), "--resume", "--train.threads=1", "--quiet")
    assert second.returncode == 0, second.stderr
    assert "resuming after epoch 1" in second.stderr and "auc" in second.stdout
    full = load_file(str(out_full / "state" / json.loads((out_full / "state/state.json").read_text())["files"]["model"]))
    last = load_file(str(out / "state" / json.loads((out / "state/state.json").read_text())["files"]["model"]))
    assert all(torch.equal(full[k], last[k]) for k in full), "last-epoch weights differ"
    a = load_file(str(out_full / "checkpoint/weights.safetensors"))
    b = load_file(str(out / "checkpoint/weights.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a), "released weights differ"
    log_a = [r["val_loss"] for r in csv.DictReader((out_full / "log.csv").open())]
    log_b = [r["val_loss"] for r in csv.DictReader((out / "log.csv").open())]
    assert log_a == log_b
    assert (out / "splits.json").read_text() == (out_full / "splits.json").read_text()


def test_output_folder_guard(full_run, cohort):
    out, _ = full_run
    before = (out / "run.json").read_text()
    other = resolve_config(None, {**COMMON, "optim.lr": "1e-3"})
    with pytest.raises(RunFolderError, match=r"holds a different run \(configuration differ"):
        run_training(other, cohort / "manifest.csv", cohort / "schema.yaml", out)
    same = resolve_config(None, COMMON)
    with pytest.raises(RunFolderError, match="already holds this finished run"):
        run_training(same, cohort / "manifest.csv", cohort / "schema.yaml", out)
    assert (out / "run.json").read_text() == before


def test_ablation_variants_reuse_splits_and_image_cache(full_run, cohort, tmp_path):
    """The ablation runner's calls: other variants, same splits and shared image cache, from Python."""
    out, result = full_run
    for variant in ("image_only", "clinical_only"):
        cfg = resolve_config(None, {**COMMON, "model.variant": variant, "train.epochs": "1",
                                    "data.cache_dir": str(out / "cache")})
        res = run_training(cfg, cohort / "manifest.csv", cohort / "schema.yaml", tmp_path / variant,
                           splits=out / "splits.json")
        assert res.status == "complete"
        for split in ("val", "test"):
            assert list(res.predictions[split].case_keys) == list(result.predictions[split].case_keys)
            assert res.predictions[split].probs.shape == result.predictions[split].probs.shape
        assert res.image_stats["preprocessed"] == 0   # from the shared cache, or not needed at all
        assert res.image_stats["from_cache"] == (0 if variant == "clinical_only" else result.image_stats["preprocessed"])
        assert not (tmp_path / variant / "cache").exists()
        assert (tmp_path / variant / "splits.json").read_text() == (out / "splits.json").read_text()


def test_multiclass_run_uses_argmax(tmp_path):
    import SimpleITK as sitk

    from mmxai_core.train.predict import load_run_checkpoint

    rng = np.random.default_rng(2)
    lines = ["patient_id,image,label,age"]
    for i in range(24):
        img = sitk.GetImageFromArray(rng.normal(50, 10, size=(1, 40, 40)).astype(np.float32))
        sitk.WriteImage(img, str(tmp_path / f"c{i}.nrrd"))
        lines.append(f"P{i},c{i}.nrrd,{('a', 'b', 'c')[i % 3]},{30 + i}")
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "schema.yaml").write_text("fields:\n  - {name: age, type: numeric}\n")
    cfg = resolve_config(None, {**COMMON, "train.epochs": "1", "data.val_fraction": "0.25",
                                "data.test_fraction": "0.25", "preprocess.output_size_hw": "32,32"})
    res = run_training(cfg, tmp_path / "manifest.csv", tmp_path / "schema.yaml", tmp_path / "run")
    assert res.threshold["value"] is None and res.threshold["rule"] == "argmax"
    assert res.metrics["test"]["task"] == "multiclass" and res.predictions["test"].probs.shape[1] == 3
    loaded = load_run_checkpoint(tmp_path / "run" / "checkpoint")
    probs = res.predictions["test"].probs
    assert loaded.threshold is None and loaded.decide(probs).tolist() == probs.argmax(1).tolist()


def test_unknown_calibration_moves_only_the_unknown_embeddings(cohort, tmp_path):
    """One optimiser step (the whole training split in one batch): with ``train.unknown_calibration`` the
    training forward is the same (image encoded once, then decoded) and the calibration loss's gradient
    reaches the clinical "unknown" embeddings only, so every other weight equals the plain run's."""
    weights = {}
    for name, w in (("plain", "0"), ("calibrated", "50")):
        cfg = resolve_config(None, {**COMMON, "train.epochs": "1", "train.batch_size": "64", "train.n_boot": "0",
                                    "train.unknown_calibration": w})
        run_training(cfg, cohort / "manifest.csv", cohort / "schema.yaml", tmp_path / name)
        weights[name] = load_file(str(tmp_path / name / "checkpoint" / "weights.safetensors"))
    assert weights["plain"].keys() == weights["calibrated"].keys()
    changed = [k for k in weights["plain"] if not torch.equal(weights["plain"][k], weights["calibrated"][k])]
    assert changed == ["clinical_encoder.unknown"]
    with pytest.raises(Exception, match="train.unknown_calibration"):
        resolve_config(None, {**COMMON, "train.unknown_calibration": "-1"})


def test_unknown_refit_moves_only_the_unknown_embeddings_and_is_recorded(cohort, tmp_path):
    """``train.unknown_refit`` after training: the released weights differ from the plain run's only in the
    clinical "unknown" embeddings, and the checkpoint says how the refit went."""
    weights, meta = {}, {}
    for name, passes in (("plain", "0"), ("refit", "2")):
        cfg = resolve_config(None, {**COMMON, "train.epochs": "1", "train.n_boot": "0",
                                    "train.unknown_refit": passes})
        run_training(cfg, cohort / "manifest.csv", cohort / "schema.yaml", tmp_path / name)
        weights[name] = load_file(str(tmp_path / name / "checkpoint" / "weights.safetensors"))
        meta[name] = json.loads((tmp_path / name / "checkpoint" / "metadata.json").read_text())
    changed = [k for k in weights["plain"] if not torch.equal(weights["plain"][k], weights["refit"][k])]
    assert changed == ["clinical_encoder.unknown"]
    assert "unknown_refit" not in meta["plain"]["training"]
    report = meta["refit"]["training"]["unknown_refit"]
    assert report["passes"] == 2 and report["rows"] > 0
    assert report["loss_last_pass"] <= report["loss_first_pass"]
    with pytest.raises(Exception, match="train.unknown_refit"):
        resolve_config(None, {**COMMON, "train.unknown_refit": "-1"})
