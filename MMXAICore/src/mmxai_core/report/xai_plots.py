"""Figures of explanation quality: deletion curves, stability distributions, the sanity cascade and
per-metric bars against their random baselines.

Research use, not for diagnosis. Every figure carries :data:`mmxai_core.RESEARCH_USE_NOTICE` as visible text
and as PNG metadata (``Description``); figures are built on :class:`matplotlib.figure.Figure` with the Agg
canvas (no pyplot, no global backend switch) and written atomically (a temporary file beside the
destination, renamed on success). Inputs are the dicts returned by :mod:`mmxai_core.explain.metrics`.

    from mmxai_core.report.xai_plots import plot_deletion, plot_stability, plot_sanity, plot_metric_bars
    plot_deletion(image_deletion_result, "deletion.png")
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mmxai_core import RESEARCH_USE_NOTICE
from mmxai_core.utils.atomic import atomic_path

ATTRIBUTED = "#d62728"
RANDOM = "0.45"


def _stamp(fig: Figure) -> None:
    fig.text(0.5, 0.005, RESEARCH_USE_NOTICE, ha="center", va="bottom", fontsize=8, color="0.3", style="italic")


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save ``fig`` as PNG atomically with the research-use notice in the PNG metadata; returns the path."""
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi,
                    metadata={"Description": RESEARCH_USE_NOTICE, "Software": "mmxai-core"})
    return Path(path)


def _fmt(x: Any) -> str:
    """3 significant digits (small AOPCs of a saturated model stay readable)."""
    return "n/a" if x is None else f"{float(x):.3g}"


def _floats(values: Sequence[Any]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


# ------------------------------------------------------------------------------------------ deletion
def deletion_figure(result: Mapping[str, Any], title: str | None = None) -> Figure:
    """Score of the explained class against the amount deleted: the attributed order and the random
    orders (mean +- 1 std band). Takes an ``image_deletion`` or ``clinical_deletion`` result."""
    clinical = result.get("metric") == "clinical_deletion"
    attributed = result["attributed"]
    score = _floats(attributed["score"])
    if clinical:
        x = np.arange(score.size)
        xlabel = "clinical fields set to unknown"
    else:
        x = 100.0 * np.asarray(result["parameters"]["fractions"], dtype=float)
        xlabel = "most attributed voxels removed (%)"
    fig = Figure(figsize=(6.0, 4.4))
    ax = fig.add_axes((0.12, 0.2, 0.84, 0.68))
    ax.plot(x, score, "o-", color=ATTRIBUTED, label=f"attributed order (AOPC {_fmt(attributed['aopc'])})")
    rand = result.get("random")
    if rand:
        mean, std = _floats(rand["score_mean"]), _floats(rand["score_std"])
        aopc = rand["aopc"]["mean"]
        ax.plot(x, mean, "s--", color=RANDOM, label=f"random orders, mean (AOPC {_fmt(aopc)})")
        ax.fill_between(x, mean - std, mean + std, color=RANDOM, alpha=0.2, label="random +- 1 std")
    if clinical:
        ax.set_xticks(x)
        names = result.get("removed_order") or []
        ax.set_xticklabels(["none"] + [f"{j}: {n}" for j, n in enumerate(names, start=1)], rotation=30,
                           ha="right", fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(str(result.get("score", "score of the explained class")))
    params = result.get("parameters", {})
    detail = (f"rank by {params.get('rank_by')}, removal = unknown" if clinical else
              f"removal {params.get('removal')}"
              + (f" (sigma {params.get('blur_sigma_px')} px)" if params.get("removal") == "blur" else ""))
    ax.set_title(title or f"{'Clinical' if clinical else 'Image'} deletion ({detail})", fontsize=10)
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    _stamp(fig)
    return fig


def plot_deletion(result: Mapping[str, Any], path: str | os.PathLike, title: str | None = None) -> Path:
    """Write :func:`deletion_figure` as PNG."""
    return save_figure(deletion_figure(result, title), path)


# ------------------------------------------------------------------------------------------ stability
def stability_distributions(results: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> dict[str, list[float]]:
    """Distributions to plot from stability results.

    One ``gradcam_stability`` / ``shapley_stability`` dict -> its K values per perturbation; a list of such
    dicts (one per case) -> the per-case means. Keys: ``"noise SSIM"``, ``"rigid SSIM"``, ``"Shapley
    Pearson"`` (those present).
    """
    single = isinstance(results, Mapping)
    items = [results] if single else list(results)
    out: dict[str, list[float]] = {}
    for item in items:
        for key, label in (("noise", "noise SSIM"), ("rigid", "rigid SSIM"), ("pearson", "Shapley Pearson")):
            entry = item.get(key)
            if not entry:
                continue
            vals = entry["values"] if single else [entry["mean"]]
            out.setdefault(label, []).extend(float(v) for v in vals if v is not None and np.isfinite(v))
    return out


def stability_figure(distributions: Mapping[str, Sequence[float]], title: str | None = None) -> Figure:
    """Box plots with the individual values (jittered points) of each named distribution
    (e.g. :func:`stability_distributions`)."""
    names = list(distributions)
    fig = Figure(figsize=(max(4.0, 1.8 * len(names) + 1.5), 4.4))
    ax = fig.add_axes((0.14, 0.2, 0.8, 0.68))
    rng = np.random.default_rng(0)
    data = [np.asarray(distributions[n], dtype=float) for n in names]
    if names:
        ax.boxplot([d if d.size else [np.nan] for d in data], showfliers=False)
        ax.set_xticks(np.arange(1, len(names) + 1))
        ax.set_xticklabels([f"{n}\n(n={d.size})" for n, d in zip(names, data)], fontsize=8)
    for i, d in enumerate(data, start=1):
        ax.plot(i + rng.uniform(-0.12, 0.12, d.size), d, "o", ms=3, alpha=0.6, color=ATTRIBUTED)
    ax.set_ylim(min(0.0, *(float(d.min()) for d in data if d.size)) if any(d.size for d in data) else 0.0, 1.02)
    ax.set_ylabel("similarity to the unperturbed explanation")
    ax.set_title(title or "Explanation stability under perturbation", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    _stamp(fig)
    return fig


def plot_stability(results: Sequence[Mapping[str, Any]] | Mapping[str, Any], path: str | os.PathLike,
                   title: str | None = None) -> Path:
    """Write the stability distributions of one result or a list of per-case results as PNG."""
    return save_figure(stability_figure(stability_distributions(results), title), path)


# ------------------------------------------------------------------------------------------ sanity
def sanity_figure(result: Mapping[str, Any], title: str | None = None) -> Figure:
    """SSIM to the trained model's map after each cascading randomisation stage (per case thin lines,
    mean thick), the headline stage marked."""
    curve = result["curve"]
    stages = [c["stage"] for c in curve]
    x = np.arange(len(stages))
    per_case = np.array([_floats(c["ssim_per_case"]) for c in curve])          # (stages, cases)
    fig = Figure(figsize=(max(6.0, 0.55 * len(stages) + 2.0), 4.6))
    ax = fig.add_axes((0.1, 0.3, 0.86, 0.6))
    if per_case.ndim == 2 and per_case.shape[1] > 1:
        ax.plot(x, per_case, "-", color=RANDOM, alpha=0.35, lw=0.8)
    ax.plot(x, np.nanmean(per_case, axis=1), "o-", color=ATTRIBUTED, lw=2, label="mean SSIM over cases")
    head = result.get("headline", {}).get("stage")
    if head in stages:
        i = stages.index(head)
        ax.axvline(i, color="0.3", ls="--", lw=1)
        ax.annotate(f"headline {_fmt(result['headline']['ssim_mean'])}", (i, 1.0), fontsize=8,
                    xytext=(4, -12), textcoords="offset points")
    ax.set_xticks(x)
    ax.set_xticklabels(stages, rotation=40, ha="right", fontsize=8)
    ax.set_ylim(min(-0.05, float(np.nanmin(per_case)) - 0.05) if np.isfinite(per_case).any() else -0.05, 1.05)
    ax.set_ylabel("SSIM to the trained model's map")
    ax.set_title(title or "Sanity check: cascading randomisation from the head down", fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3)
    _stamp(fig)
    return fig


def plot_sanity(result: Mapping[str, Any], path: str | os.PathLike, title: str | None = None) -> Path:
    """Write :func:`sanity_figure` as PNG."""
    return save_figure(sanity_figure(result, title), path)


# ------------------------------------------------------------------------------------------ bars
def metric_bars_figure(metrics: Mapping[str, Mapping[str, Any]], title: str | None = None) -> Figure:
    """One bar per metric, with its random baseline beside it where given.

    ``metrics``: ``{name: {"value": v, "baseline": b (optional), "ci": [lo, hi] (optional)}}``.
    """
    names = list(metrics)
    x = np.arange(len(names))
    vals = _floats([metrics[n].get("value") for n in names])
    base = _floats([metrics[n].get("baseline") for n in names])
    fig = Figure(figsize=(max(5.0, 1.3 * len(names) + 2.0), 4.6))
    ax = fig.add_axes((0.12, 0.27, 0.84, 0.62))
    width = 0.38
    ax.bar(x - width / 2, np.nan_to_num(vals), width, color=ATTRIBUTED, label="explanation")
    if np.isfinite(base).any():
        ax.bar(x + width / 2, np.nan_to_num(base), width, color=RANDOM, label="random baseline")
    for i, n in enumerate(names):
        ci = metrics[n].get("ci")
        if ci is not None and None not in ci:
            ax.errorbar(i - width / 2, vals[i], yerr=[[vals[i] - ci[0]], [ci[1] - vals[i]]], color="k", capsize=3)
        if np.isfinite(vals[i]):
            ax.text(i - width / 2, vals[i], _fmt(vals[i]), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=25, ha="right", fontsize=8)
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_title(title or "Explanation quality", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    _stamp(fig)
    return fig


def plot_metric_bars(metrics: Mapping[str, Mapping[str, Any]], path: str | os.PathLike,
                     title: str | None = None) -> Path:
    """Write :func:`metric_bars_figure` as PNG."""
    return save_figure(metric_bars_figure(metrics, title), path)


__all__ = ["save_figure", "deletion_figure", "plot_deletion", "stability_distributions", "stability_figure",
           "plot_stability", "sanity_figure", "plot_sanity", "metric_bars_figure", "plot_metric_bars"]
