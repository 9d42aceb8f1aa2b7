"""mmxai-explain on one case: every file, the result.json contract, the heatmap on the input's grid, the
threshold rule, Shapley efficiency, '{}' = all unknown, refusal to overwrite without --force, the metric
hook (coherence and --metrics from ``mmxai_core.explain.metrics``)."""

from __future__ import annotations

import base64
import json
import sys

import numpy as np
import pytest
from test_explain_cli_support import leftovers, run_explain, tiny_run

from mmxai_core import RESEARCH_USE_NOTICE
from mmxai_core.errors import MMXAIError
from mmxai_core.io import read_image

FILES = ("result.json", "heatmap.nrrd", "heatmap_label.nrrd", "heatmap_bins.json", "overlay.png", "shap.png",
         "report.html")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_run(tmp_path_factory)


def assert_same_grid(a, b):
    assert a.array.shape == b.array.shape
    np.testing.assert_allclose(a.spacing, b.spacing, rtol=1e-6)
    np.testing.assert_allclose(a.origin, b.origin, atol=1e-4)
    np.testing.assert_allclose(a.direction, b.direction, atol=1e-6)


def test_one_2d_case_writes_every_file_and_the_contract(tiny, tmp_path):
    out = tmp_path / "case"
    image = tiny.image("mg")
    proc = run_explain("--model", tiny.run, "--image", image, "--out", out, "--quiet",
                       "--clinical", '{"age": 62, "breast_density": "d", "family_history": "yes", '
                                     '"presentation": null, "ca15_3": "unknown"}')
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == f"mmxai-explain: {RESEARCH_USE_NOTICE}"
    assert "report.html" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    assert leftovers(tmp_path) == []

    r = json.loads((out / "result.json").read_text())
    assert r["notice"] == RESEARCH_USE_NOTICE
    assert r["files"] == {"heatmap": "heatmap.nrrd", "heatmap_label": "heatmap_label.nrrd",
                          "heatmap_bins": "heatmap_bins.json", "overlay": "overlay.png", "shap_plot": "shap.png",
                          "report": "report.html"}
    assert r["model"]["classes"] == ["benign", "malignant"] and r["model"]["name"] and r["model"]["version"]
    pred = r["prediction"]
    p1, thr = pred["probabilities"]["malignant"], pred["threshold"]
    assert thr is not None and abs(sum(pred["probabilities"].values()) - 1) < 1e-6
    assert pred["class"] == ("malignant" if p1 >= thr else "benign")        # the threshold, not the argmax
    assert pred["explained_class"] == "malignant"

    sh = r["shapley"]
    fields = {f["name"]: f for f in sh["fields"]}
    assert fields["age"]["entered"] == "62 years" and fields["breast_density"]["entered"] == "D"
    assert fields["family_history"]["entered"] == "yes" and fields["age"]["label"] == "Age"
    for name in ("presentation", "ca15_3", "heart_rate"):
        assert fields[name]["unknown"] and fields[name]["value"] == 0 and fields[name]["entered"] == "unknown"
    assert sh["method"] == "exact"
    assert abs(sh["base_value"] + sum(f["value"] for f in sh["fields"]) - sh["fx"]) < 1e-5
    assert abs(sh["fx"] - p1) < 1e-5
    split = r["modality_split"]
    assert abs(split["image"] + split["clinical"] - (split["corners"]["both"] - split["corners"]["none"])) < 1e-6
    assert abs(split["corners"]["image_only"] - sh["base_value"]) < 1e-6
    for step in ("load", "preprocess", "predict", "gradcam", "shapley", "write", "total"):
        assert r["timings_s"][step] >= 0, step
    assert "coherence" in r or any("coherence" in n.lower() for n in r["notes"])
    assert "metrics" not in r

    # the heatmap sits on the input's own grid
    src, heat, label = read_image(image), read_image(out / "heatmap.nrrd"), read_image(out / "heatmap_label.nrrd")
    assert_same_grid(src, heat)
    assert_same_grid(src, label)
    assert heat.array.dtype == np.float32 and 0 <= heat.array.min() and heat.array.max() <= 1
    html = (out / "report.html").read_text()
    assert html.count(RESEARCH_USE_NOTICE) >= 2 and html.count("data:image/png;base64,") == 2
    assert "Age" in html and "62 years" in html
    assert base64.b64encode((out / "shap.png").read_bytes()).decode() in html


def test_volume_with_all_fields_unknown_and_overwrite_rules(tiny, tmp_path):
    out = tmp_path / "vol"
    (tmp_path / "c.json").write_text("{}")
    args = ("--model", tiny.run, "--image", tiny.image("mr"), "--clinical", f"@{tmp_path / 'c.json'}", "--out", out,
            "--quiet")
    first = run_explain(*args)
    assert first.returncode == 0, first.stderr
    r = json.loads((out / "result.json").read_text())
    assert all(f["unknown"] and f["value"] == 0 for f in r["shapley"]["fields"])
    assert r["shapley"]["base_value"] == pytest.approx(r["shapley"]["fx"], abs=1e-6)
    assert r["input"]["kind"] == "volume" and r["input"]["shape_zyx"][0] > 1
    assert_same_grid(read_image(tiny.image("mr")), read_image(out / "heatmap.nrrd"))

    again = run_explain(*args)
    assert again.returncode == 2 and "same inputs" in again.stderr and "--force" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    other = run_explain(*args[:4], "--clinical", '{"age": 40}', *args[6:])
    assert other.returncode == 2 and "other inputs" in other.stderr
    assert json.loads((out / "result.json").read_text()) == r           # untouched
    # --force replaces it (in-process: the same code path as the command, without a second start-up)
    import torch

    from mmxai_core.explain.clinical_input import validate_clinical
    from mmxai_core.explain.pipeline import explain_to_folder, load_model

    torch.set_num_threads(1)
    model = load_model(tiny.run, "cpu")
    with pytest.raises(MMXAIError, match="same inputs"):
        explain_to_folder(model, tiny.image("mr"), validate_clinical({}, model.run.clinical.schema), out)
    forced = explain_to_folder(model, tiny.image("mr"), validate_clinical({}, model.run.clinical.schema), out,
                               force=True)
    assert forced["identity"] == r["identity"] and forced["prediction"] == r["prediction"]
    assert json.loads((out / "result.json").read_text())["timings_s"] == forced["timings_s"]
    assert leftovers(tmp_path) == []


def test_a_folder_that_is_not_an_explain_output_is_never_replaced(tiny, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    proc = run_explain("--model", tiny.run, "--image", tiny.image("mg"), "--clinical", "{}", "--out", out,
                       "--force")
    assert proc.returncode == 2 and "holds no mmxai-explain result" in proc.stderr
    assert (out / "notes.txt").read_text() == "keep me" and [p.name for p in out.iterdir()] == ["notes.txt"]


def test_metrics_not_installed_are_refused_and_coherence_left_out_with_a_note(tiny, tmp_path, monkeypatch):
    import torch

    from mmxai_core.errors import MMXAIError
    from mmxai_core.explain.clinical_input import validate_clinical
    from mmxai_core.explain.pipeline import ExplainOptions, explain_to_folder, load_model

    for name in ("stability", "coherence"):      # None in sys.modules: "not installed"
        monkeypatch.setitem(sys.modules, f"mmxai_core.explain.metrics.{name}", None)
    torch.set_num_threads(1)
    model = load_model(tiny.run, "cpu")
    clinical = validate_clinical({"age": 50}, model.run.clinical.schema)
    with pytest.raises(MMXAIError, match="stability not available"):
        explain_to_folder(model, tiny.image("mg"), clinical, tmp_path / "o", ExplainOptions(metrics=("stability",)))
    assert not (tmp_path / "o").exists() and leftovers(tmp_path) == []
    r = explain_to_folder(model, tiny.image("mg"), clinical, tmp_path / "o")
    assert "coherence" not in r and any("coherence is not available" in n for n in r["notes"])
    assert "coherence is not available" in (tmp_path / "o" / "report.html").read_text()


def test_unknown_metric_name_is_refused_in_one_line(tiny, tmp_path):
    proc = run_explain("--model", tiny.run, "--image", tiny.image("mg"), "--clinical", "{}", "--out",
                       tmp_path / "o", "--metrics", "stability,beauty")
    assert proc.returncode == 2 and "unknown metric 'beauty'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_requested_metrics_and_coherence_land_in_result_and_report(tiny, tmp_path):
    """Through :mod:`mmxai_core.explain.case_metrics` into the colleague's ``explain.metrics`` modules."""
    import torch

    from mmxai_core.explain.case_metrics import metric_function
    from mmxai_core.explain.clinical_input import validate_clinical
    from mmxai_core.explain.pipeline import ExplainOptions, explain_to_folder, load_model

    wanted = ("stability", "faithfulness", "sanity")
    if any(metric_function(n) is None for n in ("coherence", *wanted)):
        pytest.skip("mmxai_core.explain.metrics is not installed here")
    torch.set_num_threads(1)
    model = load_model(tiny.run, "cpu")
    clinical = validate_clinical({"age": 50, "breast_density": "B"}, model.run.clinical.schema)
    r = explain_to_folder(model, tiny.image("mg"), clinical, tmp_path / "o",
                          ExplainOptions(metrics=wanted, target_class="benign"))
    assert r["prediction"]["explained_class"] == "benign"
    assert -1 <= r["coherence"]["score"] <= 1 and r["coherence"]["definition"]
    m = r["metrics"]
    assert set(m) == set(wanted)
    assert 0 < m["stability"]["gradcam_ssim_noise"] <= 1 and m["stability"]["shapley_pearson"] is not None
    assert m["faithfulness"]["image_aopc"] is not None and m["faithfulness"]["clinical_aopc"] is not None
    assert m["sanity"]["ssim_headline"] is not None
    assert m["stability"]["details"]["gradcam"]["target_class"] == 0
    saved = json.loads((tmp_path / "o" / "result.json").read_text())
    assert saved["metrics"]["stability"]["gradcam_ssim_noise"] == m["stability"]["gradcam_ssim_noise"]
    assert all(f"metric_{n}" in saved["timings_s"] for n in wanted)
    html = (tmp_path / "o" / "report.html").read_text()
    assert "Cross-modal coherence" in html and "gradcam_ssim_noise" in html and "Sanity" in html
