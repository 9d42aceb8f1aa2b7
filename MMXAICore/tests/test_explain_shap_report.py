"""Interventional SHAP over background rows (optional shap extra, a different quantity) and the Shapley bar
chart (signed bars sorted by |value|, labels, unknown fields, notice, atomic PNG)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from mmxai_core import RESEARCH_USE_NOTICE
from mmxai_core.errors import MMXAIError
from mmxai_core.explain.shapley import ShapleyResult, clinical_shapley
from mmxai_core.explain.value_function import CoalitionValue
from mmxai_core.model import create_model, model_config
from mmxai_core.report.shap_plot import NEGATIVE, POSITIVE, plot_shapley, shapley_figure

FIELDS = [("age", "numeric", 0), ("grade", "categorical", 3), ("er", "categorical", 2), ("size", "numeric", 0),
          ("ki67", "numeric", 0)]
VALUES = np.array([0.4, 2, 1, 0.8, 0.3], np.float32)
MISSING = np.array([False, False, False, False, True])


@pytest.fixture(scope="module")
def model():
    cfg = model_config("tiny", clinical_fields=FIELDS, embed_dim=32, depth=1, num_heads=4, fusion_heads=4,
                       mil_hidden=16, trunk_out_index=3, image_size=64, dropout=0.0)
    model = create_model(cfg, seed=0).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith("image_encoder.trunk"):
                p.add_(torch.randn(p.shape, generator=gen) * 0.15)
    return model


@pytest.fixture(scope="module")
def image():
    return torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(5))


# ------------------------------------------------------------------------------------------ interventional
def test_interventional_with_an_all_unknown_background_equals_the_unknown_game(model, image):
    pytest.importorskip("shap", reason="optional extra")
    from mmxai_core.explain.interventional import interventional_shapley

    bg = np.full((1, 5), np.nan)
    inter = interventional_shapley(model, image, VALUES, MISSING, background_values=bg)
    ours = clinical_shapley(model, image, VALUES, MISSING)
    np.testing.assert_allclose(inter.values, ours.values, atol=1e-6, rtol=0)
    assert inter.base_value == pytest.approx(ours.base_value, abs=1e-6)
    assert inter.method == "interventional-exact"


def test_interventional_base_is_the_background_mean_and_labelled(model, image):
    pytest.importorskip("shap", reason="optional extra")
    from mmxai_core.explain.interventional import interventional_shapley

    rng = np.random.default_rng(0)
    bg = np.stack([rng.random(6), rng.integers(0, 3, 6), rng.integers(0, 2, 6), rng.random(6), rng.random(6)], 1)
    bg[2, 0] = np.nan                                        # background rows may hold unknowns too
    res = interventional_shapley(model, image, VALUES, MISSING, background_values=bg, class_names=["b", "m"])
    assert res.values[4] == 0.0 and res.entered[4] == "unknown"           # user-unknown stays a null player
    assert res.values.sum() == pytest.approx(res.prediction - res.base_value, abs=1e-6)
    vf = CoalitionValue(model, image, VALUES, MISSING)
    rows = bg.copy()
    rows[:, 4] = np.nan                                      # the user's unknown field stays unknown
    expected_base = vf.evaluate_rows(np.nan_to_num(rows).astype(np.float32), np.isnan(rows)).mean()
    assert res.base_value == pytest.approx(expected_base, abs=1e-6)
    assert res.prediction == pytest.approx(vf(np.ones((1, 4), bool))[0], abs=1e-6)
    d = res.to_dict()
    json.dumps(d)
    assert "interventional" in d["quantity"] and "background" in d["baseline"] and d["target_name"] == "m"
    perm = interventional_shapley(model, image, VALUES, MISSING, background_values=bg, method="permutation",
                                  max_evals=200)
    assert perm.method == "interventional-permutation"
    assert perm.values.sum() == pytest.approx(perm.prediction - perm.base_value, abs=1e-5)


def test_interventional_without_shap_is_a_clear_error(model, image, monkeypatch):
    import sys

    from mmxai_core.explain.interventional import interventional_shapley

    monkeypatch.setitem(sys.modules, "shap", None)           # import shap -> ImportError
    with pytest.raises(MMXAIError, match="mmxai-core\\[shap\\]"):
        interventional_shapley(model, image, VALUES, MISSING, background_values=np.zeros((2, 5)))


# ------------------------------------------------------------------------------------------------- plot
def toy_result(**kw) -> ShapleyResult:
    base = dict(field_names=("age", "grade", "er", "size"), entered=("61 years", "G3", "unknown", "12 mm"),
                known=np.array([True, True, False, True]), values=np.array([0.05, -0.2, 0.0, 0.11]),
                base_value=0.4, prediction=0.36, method="exact", target=1, target_name="malignant")
    base.update(kw)
    return ShapleyResult(**base)


def test_figure_bars_sorted_coloured_and_labelled():
    fig = shapley_figure(toy_result())
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    # top to bottom: |value| descending, the unknown field last
    ticks = list(ax.get_yticks())
    top_down = [lab for _, lab in sorted(zip(ticks, labels), reverse=True)]
    assert top_down == ["grade = G3", "size = 12 mm", "age = 61 years", "er = unknown"]
    bars = [p for p in ax.patches if p.get_width() != 0]
    colours = {round(b.get_y() + b.get_height() / 2): b.get_facecolor() for b in bars}
    from matplotlib.colors import to_rgba
    assert colours[3] == to_rgba(NEGATIVE) and colours[2] == to_rgba(POSITIVE)
    texts = [t.get_text() for t in ax.texts] + [t.get_text() for t in fig.texts]
    assert "unknown (0)" in texts and "-0.200" in texts and "+0.110" in texts
    assert RESEARCH_USE_NOTICE in texts
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("towards malignant" in t for t in legend) and any("away from malignant" in t for t in legend)


def test_plot_writes_png_atomically_with_notice(tmp_path, model, image):
    res = clinical_shapley(model, image, VALUES, MISSING, method="permutation", n_permutations=32)
    path = plot_shapley(res, tmp_path / "sub" / "shap.png", title="Case 1")
    assert path.exists() and [p.name for p in path.parent.iterdir()] == ["shap.png"]
    with PILImage.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 400
        assert im.info.get("Description") == RESEARCH_USE_NOTICE


def test_plot_failure_leaves_no_file(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    def broken(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(OSError, match="disk full"):
        plot_shapley(toy_result(), tmp_path / "bad.png")
    assert list(tmp_path.iterdir()) == []


def test_end_to_end_with_the_preprocessor_shows_entered_values(tmp_path):
    from mmxai_core.data.clinical import ClinicalPreprocessor
    from mmxai_core.data.schema import ClinicalSchema

    schema = ClinicalSchema.from_dict({"fields": [
        {"name": "age", "type": "numeric", "unit": "years"},
        {"name": "grade", "type": "ordinal", "categories": ["G1", "G2", "G3"]},
        {"name": "er", "type": "boolean"},
    ]})
    pre = ClinicalPreprocessor(schema).fit([{"age": 40, "grade": "G1", "er": True},
                                            {"age": 80, "grade": "G3", "er": False}])
    arrays = pre.transform([{"age": 61, "grade": "G3", "er": None}])
    cfg = model_config("tiny", clinical_fields=pre.model_fields(), embed_dim=32, depth=1, num_heads=4,
                       fusion_heads=4, mil_hidden=16, trunk_out_index=3, image_size=64, dropout=0.0)
    model = create_model(cfg, seed=0).eval()
    res = clinical_shapley(model, torch.zeros(1, 1, 64, 64), arrays.values[0], arrays.missing[0], preprocessor=pre,
                           class_names=["benign", "malignant"])
    assert res.entered == ("61 years", "G3", "unknown") and res.target_name == "malignant"
    assert res.values[2] == 0.0
    fig = shapley_figure(res)
    labels = {t.get_text() for t in fig.axes[0].get_yticklabels()}
    assert labels == {"age = 61 years", "grade = G3", "er = unknown"}
    plot_shapley(res, tmp_path / "case.png")
