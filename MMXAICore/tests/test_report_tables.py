"""Report writers: files parse back, contents match the result, writes are atomic."""

import json
import os

import numpy as np
import pandas as pd
import pytest

from mmxai_core import RESEARCH_USE_NOTICE
from mmxai_core.report import tables
from mmxai_core.report.tables import (write_ablation_table, write_metrics_csv, write_metrics_json,
                                      write_metrics_markdown)
from mmxai_core.train.metrics import METRIC_NAMES, evaluate_predictions
from mmxai_core.train.thresholds import select_threshold


@pytest.fixture(scope="module")
def result():
    rng = np.random.default_rng(0)
    n = 200
    y = rng.integers(0, 2, n)
    p1 = np.clip(rng.normal(0.4 + 0.25 * y, 0.2), 0, 1)
    choice = select_threshold(y[:80], p1[:80])
    ds = np.where(np.arange(n) % 2 == 0, "site|A", "site B")
    return evaluate_predictions(y, p1, np.arange(n) // 2, threshold=choice, n_boot=200, dataset=ds)


def test_json_round_trip(tmp_path, result):
    path = write_metrics_json(result, tmp_path / "out" / "metrics.json")
    back = json.loads(path.read_text(encoding="utf-8"))
    assert back["metrics"]["auc"]["value"] == pytest.approx(result["metrics"]["auc"]["value"])
    assert back["threshold"]["source"] == "validation (youden)"
    # NaN in a hand-made dict becomes null, so the file is strict JSON
    write_metrics_json({"x": float("nan"), "y": np.float32(0.5), "z": np.arange(2)}, tmp_path / "nan.json")
    assert json.loads((tmp_path / "nan.json").read_text()) == {"x": None, "y": 0.5, "z": [0, 1]}


def test_csv_parses_with_pandas(tmp_path, result):
    path = write_metrics_csv(result, tmp_path / "metrics.csv")
    df = pd.read_csv(path)
    assert list(df.columns) == list(tables.CSV_COLUMNS)
    assert len(df) == 3 * len(METRIC_NAMES)
    assert set(df["dataset"]) == {"(all)", "site|A", "site B"}
    row = df[(df.dataset == "(all)") & (df.metric == "auc")].iloc[0]
    m = result["metrics"]["auc"]
    assert row["value"] == pytest.approx(m["value"], abs=0)
    assert (row["ci_low"], row["ci_high"]) == (pytest.approx(m["ci_low"]), pytest.approx(m["ci_high"]))
    assert row["n_boot"] == 200 and row["threshold"] == pytest.approx(result["threshold"]["value"])


def test_markdown_has_table_and_settings(tmp_path, result):
    text = write_metrics_markdown(result, tmp_path / "metrics.md", title="Test set").read_text()
    assert "| metric | value | 95% CI |" in text
    assert RESEARCH_USE_NOTICE in text
    auc = result["metrics"]["auc"]
    assert f"| AUC | {auc['value']:.3f} | [{auc['ci_low']:.3f}, {auc['ci_high']:.3f}] |" in text
    assert "patient-level percentile bootstrap, 200 resamples, seed 0" in text
    assert "## Dataset: site\\|A" in text
    assert "validation (youden)" in text


def _runs(n=120):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, n)
    runs = []
    for variant, sep in (("image-only", 0.1), ("fusion", 0.3)):
        for seed in (0, 1):
            p1 = np.clip(rng.normal(0.4 + sep * y, 0.2), 0, 1)
            runs.append({"variant": variant, "seed": seed, "y_true": y, "probs": p1, "patient_ids": np.arange(n) // 2,
                         "threshold": 0.5})
    return runs


def test_ablation_table_csv_and_markdown(tmp_path):
    summary = write_ablation_table(_runs(), tmp_path / "abl.csv", tmp_path / "abl.md", n_boot=200)
    df = pd.read_csv(tmp_path / "abl.csv")
    assert list(df["variant"]) == ["image-only", "fusion"]
    for m in ("accuracy", "auc", "f1"):
        for suffix in ("mean", "ci_low", "ci_high", "sd_seeds"):
            assert f"{m}_{suffix}" in df.columns
    fusion = df.set_index("variant").loc["fusion"]
    assert fusion["reference"] == "image-only"
    assert fusion["auc_diff"] == pytest.approx(summary["variants"][1]["comparison"]["diff"])
    assert fusion["auc_diff_ci_low"] > 0 and fusion["auc_diff_p_value"] < 0.05
    assert np.isnan(df.set_index("variant").loc["image-only", "auc_diff"])
    assert fusion["seeds"] == "0;1"
    md = (tmp_path / "abl.md").read_text()
    assert RESEARCH_USE_NOTICE in md and "(reference)" in md and "ΔAUC vs image-only" in md
    assert md.count("\n| ") == 3  # header + 2 variants
    # a precomputed summary is accepted as well
    write_ablation_table(summary, tmp_path / "abl2.csv", tmp_path / "abl2.md")
    assert (tmp_path / "abl2.csv").read_text() == (tmp_path / "abl.csv").read_text()


def test_failed_write_leaves_old_file_and_no_temp(tmp_path, result, monkeypatch):
    import mmxai_core.utils.atomic as atomic

    path = tmp_path / "metrics.csv"
    path.write_text("old\n")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", boom)
    with pytest.raises(OSError):
        write_metrics_csv(result, path)
    monkeypatch.undo()
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["metrics.csv"]
