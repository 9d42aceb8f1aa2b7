"""Figures of evaluation results: reliability diagram and grouped metric bars with CI error bars.

Research use, not for diagnosis. Every figure carries :data:`NOTICE` as visible text and as PNG
metadata (``Description``). Figures are built on :class:`matplotlib.figure.Figure` with the Agg canvas
(no pyplot, no global backend switch) and saved atomically.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mmxai_core.train.metrics import EvaluationError
from mmxai_core.utils.atomic import atomic_path

NOTICE = "Research use only - not for diagnosis"
_LABELS = {"accuracy": "Accuracy", "sensitivity": "Sensitivity", "specificity": "Specificity", "f1": "F1",
           "auc": "AUC"}


def _stamp(fig: Figure) -> None:
    fig.text(0.5, 0.005, NOTICE, ha="center", va="bottom", fontsize=8, color="0.3", style="italic")


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save ``fig`` as PNG atomically, with the research-use notice in the PNG metadata."""
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, metadata={"Description": NOTICE, "Software": "mmxai-core"})
    return Path(path)


def reliability_figure(calibration: Mapping, title: str | None = None) -> Figure:
    """Reliability diagram from :func:`mmxai_core.train.calibration.reliability_curve` data.

    Top: observed frequency (binary) or accuracy (multi-class) per bin against mean confidence, with the
    diagonal of perfect calibration; bottom: cases per bin.
    """
    edges = np.asarray(calibration["bin_edges"], dtype=float)
    count = np.asarray(calibration["count"], dtype=float)
    conf = np.array([np.nan if v is None else v for v in calibration["mean_confidence"]], dtype=float)
    obs = np.array([np.nan if v is None else v for v in calibration["observed"]], dtype=float)
    centres, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    binary = calibration.get("mode") == "positive_class"
    fig = Figure(figsize=(5.0, 6.0))
    ax, axh = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.bar(centres, np.nan_to_num(obs), width=width * 0.95, color="#9ecae1", edgecolor="#3182bd",
           label="observed per bin")
    ax.plot([0, 1], [0, 1], "--", color="0.4", label="perfect calibration")
    ok = np.isfinite(conf)
    ax.plot(conf[ok], obs[ok], "o-", color="#e6550d", label="mean confidence vs observed")
    ax.set_ylim(0, 1)
    ax.set_ylabel("observed frequency of class 1" if binary else "accuracy")
    ax.set_title(title or f"Reliability (ECE {calibration.get('ece', float('nan')):.3f}, "
                          f"{calibration.get('n_bins')} bins)")
    ax.legend(loc="upper left", fontsize=8)
    axh.bar(centres, count, width=width * 0.95, color="0.6")
    axh.set_xlim(0, 1)
    axh.set_xlabel("predicted p(class 1)" if binary else "top-class confidence")
    axh.set_ylabel("cases")
    fig.subplots_adjust(left=0.14, right=0.97, top=0.93, bottom=0.12, hspace=0.08)
    _stamp(fig)
    return fig


def plot_reliability(calibration: Mapping, path: str | os.PathLike, title: str | None = None) -> Path:
    """Write the reliability diagram (:func:`reliability_figure`) as PNG; returns the path."""
    return save_figure(reliability_figure(calibration, title), path)


def _entries(results: Mapping | Sequence) -> list[tuple[str, Mapping]]:
    if isinstance(results, Mapping) and "variants" in results and "compare_metric" in results:
        results = results["variants"]
    if isinstance(results, Mapping):
        items = list(results.items())
    else:
        items = [(str(r["variant"]), r) for r in results]
    out = []
    for name, r in items:
        if "metrics" not in r:
            raise EvaluationError(f"results[{name!r}]: no 'metrics' entry")
        out.append((str(name), r["metrics"]))
    if not out:
        raise EvaluationError("results: nothing to plot")
    return out


def _ci_label(results: Any) -> str:
    boot = results.get("bootstrap") if isinstance(results, Mapping) else None
    if boot is None and isinstance(results, Mapping) and results:
        first = next(iter(results.values()))
        boot = first.get("bootstrap") if isinstance(first, Mapping) else None
    level = boot.get("ci_level") if isinstance(boot, Mapping) else None
    return f"{100 * level:g}% CI" if level else "CI"


def metric_bars_figure(results: Mapping | Sequence, metrics: Sequence[str] = ("accuracy", "auc", "f1"),
                       title: str | None = None) -> Figure:
    """Grouped bars: one group per variant, one bar per metric, asymmetric CI error bars.

    ``results``: mapping variant -> an :func:`~mmxai_core.train.metrics.evaluate_predictions` result (or
    any dict with ``metrics[name] = {"value", "ci_low", "ci_high"}``), a list of such dicts with a
    ``variant`` key, or an :func:`~mmxai_core.train.compare.ablation_summary`. Undefined values are
    left out; undefined CIs get no error bar.
    """
    entries = _entries(results)
    n_var, n_met = len(entries), len(metrics)
    fig = Figure(figsize=(max(5.0, 1.2 + 0.9 * n_var * max(n_met, 1) * 0.6), 4.2))
    ax = fig.subplots()
    width = 0.8 / max(n_met, 1)
    x = np.arange(n_var)
    colours = ["#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363"]
    for j, m in enumerate(metrics):
        vals, lo, hi = [], [], []
        for _, ms in entries:
            e = ms.get(m) or {}
            v = e.get("value")
            vals.append(np.nan if v is None else float(v))
            lo.append(np.nan if e.get("ci_low") is None or v is None else float(v) - float(e["ci_low"]))
            hi.append(np.nan if e.get("ci_high") is None or v is None else float(e["ci_high"]) - float(v))
        err = np.clip(np.array([lo, hi], dtype=float), 0, None)
        err = np.nan_to_num(err, nan=0.0)
        ax.bar(x + (j - (n_met - 1) / 2) * width, vals, width=width * 0.95, yerr=err, capsize=3,
               color=colours[j % len(colours)], label=_LABELS.get(m, m), error_kw={"elinewidth": 1})
    ax.set_xticks(x)
    ax.set_xticklabels([n for n, _ in entries], rotation=20 if n_var > 3 else 0, ha="right" if n_var > 3 else "center")
    ax.set_ylim(0, 1.15)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel(f"value (error bars: {_ci_label(results)})")
    ax.set_title(title or "Metrics per model variant")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=min(n_met, 5), loc="upper center", frameon=False)
    fig.subplots_adjust(left=0.1, right=0.98, top=0.9, bottom=0.2 if n_var > 3 else 0.14)
    _stamp(fig)
    return fig


def plot_metric_bars(results: Mapping | Sequence, path: str | os.PathLike,
                     metrics: Sequence[str] = ("accuracy", "auc", "f1"), title: str | None = None) -> Path:
    """Write the grouped metric bar chart (:func:`metric_bars_figure`) as PNG; returns the path."""
    return save_figure(metric_bars_figure(results, metrics, title), path)


__all__ = ["NOTICE", "save_figure", "reliability_figure", "plot_reliability", "metric_bars_figure",
           "plot_metric_bars"]
