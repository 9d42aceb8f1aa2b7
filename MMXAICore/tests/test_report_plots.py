"""Figures: PNGs exist, are non-trivial images, and carry the research-use notice."""

import numpy as np
import pytest
from matplotlib.image import imread
from PIL import Image as PILImage

from mmxai_core.report.plots import (NOTICE, metric_bars_figure, plot_metric_bars, plot_reliability,
                                     reliability_figure)
from mmxai_core.train.calibration import reliability_curve
from mmxai_core.train.compare import ablation_summary
from mmxai_core.train.metrics import EvaluationError, evaluate_predictions


def _data(n=300, seed=0, sep=0.25):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p1 = np.clip(rng.normal(0.4 + sep * y, 0.2), 0, 1)
    return y, p1


def _check_png(path):
    assert path.exists() and path.stat().st_size > 10_000
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 300
    assert img[..., :3].std() > 0.05  # not a blank canvas
    assert PILImage.open(path).info.get("Description") == NOTICE


def _texts(fig):
    return [t.get_text() for t in fig.texts]


def test_reliability_png(tmp_path):
    y, p1 = _data()
    cal = reliability_curve(y, p1)
    path = plot_reliability(cal, tmp_path / "figs" / "reliability.png")
    _check_png(path)
    assert NOTICE in _texts(reliability_figure(cal))
    # multi-class (top-class mode) and a curve with empty bins also draw
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(3) * 5, 50)
    _check_png(plot_reliability(reliability_curve(rng.integers(0, 3, 50), p, n_bins=20), tmp_path / "mc.png"))


def test_metric_bars_png_from_results_and_from_ablation(tmp_path):
    results = {}
    for name, sep in (("image", 0.1), ("clinical", 0.15), ("fusion", 0.3)):
        y, p1 = _data(seed=2, sep=sep)
        results[name] = evaluate_predictions(y, p1, np.arange(y.size), n_boot=100)
    fig = metric_bars_figure(results)
    assert NOTICE in _texts(fig)
    ax = fig.axes[0]
    assert len(ax.patches) == 9  # 3 variants x 3 metrics
    heights = [p.get_height() for p in ax.patches[6:9]]  # third metric (F1) bars
    assert heights == pytest.approx([results[v]["metrics"]["f1"]["value"] for v in results])
    _check_png(plot_metric_bars(results, tmp_path / "bars.png"))

    y, _ = _data(seed=3)
    runs = [{"variant": v, "seed": s, "y_true": y, "patient_ids": np.arange(y.size),
             "probs": np.clip(np.random.default_rng(s).normal(0.4 + sep * y, 0.2), 0, 1)}
            for v, sep in (("a", 0.1), ("b", 0.3)) for s in (0, 1)]
    summary = ablation_summary(runs, n_boot=50)
    _check_png(plot_metric_bars(summary, tmp_path / "abl.png", metrics=("auc", "sensitivity")))


def test_metric_bars_rejects_empty():
    with pytest.raises(EvaluationError):
        metric_bars_figure({})
