"""report.html from a result dict: self-contained (pictures embedded, nothing loaded from elsewhere),
every section present, text escaped, the research-use notice at top and bottom, absent parts left out."""

from __future__ import annotations

import base64
import re

from mmxai_core import RESEARCH_USE_NOTICE
from mmxai_core.report.html import render_report_html, write_report_html

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


def result(**extra):
    r = {
        "notice": RESEARCH_USE_NOTICE,
        "model": {"name": "mmxai-demo", "version": "0.1.0", "classes": ["benign", "malignant"],
                  "variant": "attention", "weights_sha256": "ab" * 32},
        "prediction": {"class": "malignant", "probabilities": {"benign": 0.21, "malignant": 0.79},
                       "threshold": 0.43, "rule": "malignant when p(malignant) >= threshold, else benign",
                       "explained_class": "malignant"},
        "shapley": {"method": "exact", "quantity": "probability of the explained class; removed field = unknown",
                    "base_value": 0.48, "fx": 0.79,
                    "fields": [{"name": "age", "label": "Age", "entered": "57 years", "unknown": False, "value": 0.12},
                               {"name": "density", "label": "Density <script>alert(1)</script>", "entered": "C",
                                "unknown": False, "value": -0.05},
                               {"name": "bmi", "label": "BMI", "entered": "unknown", "unknown": True, "value": 0.0}]},
        "modality_split": {"quantity": "two-player split", "image": 0.2, "clinical": 0.11, "interaction": 0.01,
                           "corners": {"both": 0.79, "image_only": 0.6, "clinical_only": 0.55, "none": 0.48}},
        "heatmap": {"explained_class": "malignant", "normalisation": {"mode": "model", "scale": 2.0},
                    "max": 0.9, "display_threshold": 0.2},
        "input": {"kind": "2d", "shape_zyx": [1, 64, 48], "spacing_xyz_mm": [0.1, 0.1, 1.0], "source_format": "dicom"},
        "timings_s": {"preprocess": 0.05, "gradcam": 0.03},
        "created_by": "mmxai-core 0.1.0",
        "notes": [],
        "files": {"overlay": "overlay.png", "shap_plot": "shap.png"},
    }
    r.update(extra)
    return r


def test_page_is_self_contained_and_has_every_section(tmp_path):
    (tmp_path / "overlay.png").write_bytes(PNG)
    (tmp_path / "shap.png").write_bytes(PNG)
    r = result(coherence={"score": 0.8, "definition": "sign agreement", "components": {"modality_agreement": 0.9}},
               metrics={"stability": {"gradcam_ssim_noise": 0.91, "details": {"k": 8}},
                        "faithfulness": {"image_aopc": 0.2}},
               notes=["The checkpoint stores no fixed scale & so on."])
    path = write_report_html(r, tmp_path)
    assert path == tmp_path / "report.html"
    html = path.read_text()
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert html.count(RESEARCH_USE_NOTICE) >= 3                       # title, top banner, bottom banner
    assert html.index(RESEARCH_USE_NOTICE) < html.index("<h2>Prediction")
    assert html.count("data:image/png;base64," + base64.b64encode(PNG).decode()) == 2
    assert not re.search(r"""(src|href)=["'](?!data:)""", html)       # nothing fetched from elsewhere
    assert "<script" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    for text in ("malignant", "0.790", "0.430", "57 years", "+0.1200", "-0.0500", "unknown", "Modality split",
                 "+0.200", "Cross-modal coherence", "0.800", "sign agreement", "Explanation quality",
                 "gradcam_ssim_noise", "details.k", "image_aopc", "&amp; so on", "mmxai-demo 0.1.0", "ab" * 32,
                 "fixed per model"):
        assert text in html, text
    # largest |value| first, unknown fields last
    assert html.index("57 years") < html.index("Density") < html.index("BMI")
    assert not list(tmp_path.glob("*.tmp*"))


def test_missing_parts_are_left_out_or_marked(tmp_path):
    r = result(heatmap={"explained_class": "malignant", "normalisation": {"mode": "case"}, "max": 0.5,
                        "display_threshold": 0.2})
    del r["modality_split"]
    html = render_report_html(r, overlay_png=None, shap_png=None)
    assert "Modality split" not in html and "Cross-modal coherence" not in html and "Explanation quality" not in html
    assert "heatmap overlay: not available" in html and "Shapley value chart: not available" in html
    assert "not comparable between cases" in html
    assert html.count(RESEARCH_USE_NOTICE) >= 3
    page = write_report_html(r, tmp_path, tmp_path / "other.html").read_text()   # no pictures in the folder
    assert "not available" in page
