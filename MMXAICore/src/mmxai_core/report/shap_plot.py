"""Bar chart of the clinical fields' Shapley values of one case (research use, not for diagnosis).

Signed horizontal bars, largest |value| on top; each row is labelled ``field = entered value`` and its
bar carries the signed contribution. Red bars push the output towards the explained class, blue bars away
from it. Fields the user left unknown are listed at the bottom as ``unknown (0)`` (no bar). Sampled
estimates get +-1.96 standard-error whiskers. The research-use notice is drawn on the figure and stored
in the PNG metadata. Matplotlib's object API with the Agg canvas (no pyplot, no global backend).

    from mmxai_core.report.shap_plot import plot_shapley
    plot_shapley(result, "shap.png")           # result: mmxai_core.explain.shapley.ShapleyResult
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from mmxai_core import RESEARCH_USE_NOTICE
from mmxai_core.utils.atomic import atomic_path

POSITIVE = "#d62728"   # red: towards the explained class
NEGATIVE = "#1f77b4"   # blue: away from it
NEUTRAL = "0.55"


def _target_text(result: Any) -> str:
    name = result.target_name if result.target_name is not None else f"class {result.target}"
    return f"p({name})" if result.output == "probability" else f"log-odds of {name}"


def _fmt(v: float) -> str:
    return f"{v:+.3g}" if abs(v) < 1e-3 and v != 0 else f"{v:+.3f}"


def shapley_figure(result: Any, title: str | None = None) -> Figure:
    """The chart of a :class:`~mmxai_core.explain.shapley.ShapleyResult` as a matplotlib Figure."""
    order = result.order()
    n = len(order)
    values = np.asarray(result.values, dtype=float)
    known = np.asarray(result.known, dtype=bool)
    se = None if result.standard_errors is None else np.asarray(result.standard_errors, dtype=float)
    rows = max(n, 1)
    bottom, height = 1.2, 1.2 + 0.75 + 0.42 * rows       # inches: x axis + legend + notice, titles
    fig = Figure(figsize=(8.0, height))
    ax = fig.add_axes((0.34, bottom / height, 0.62, 0.42 * rows / height))
    ys = np.arange(n)[::-1]                                # first in order = top row
    span = float(np.max(np.abs(values) + (1.96 * se if se is not None else 0.0))) if n else 0.0
    span = span if span > 0 else 1.0
    labels = []
    for y, i in zip(ys, order):
        name = result.field_names[i]
        if not known[i]:
            labels.append(f"{name} = unknown")
            ax.text(0.02 * span, y, "unknown (0)", va="center", ha="left", fontsize=8, color=NEUTRAL,
                    style="italic")
            continue
        v = values[i]
        labels.append(f"{name} = {result.entered[i]}")
        colour = POSITIVE if v > 0 else NEGATIVE if v < 0 else NEUTRAL
        err = None if se is None else [[1.96 * se[i]], [1.96 * se[i]]]
        ax.barh(y, v, height=0.62, color=colour, xerr=err, ecolor="0.25", capsize=2)
        reach = abs(v) + (1.96 * se[i] if se is not None else 0.0)
        ax.text(np.sign(v or 1.0) * (reach + 0.03 * span), y, _fmt(v), va="center",
                ha="left" if v >= 0 else "right", fontsize=8)
    ax.axvline(0.0, color="0.2", linewidth=0.8)
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=9)
    ax.set_ylim(-0.7, max(n, 1) - 0.3)
    ax.set_xlim(-1.45 * span, 1.45 * span)
    target = _target_text(result)
    ax.set_xlabel(f"contribution to {target}", fontsize=9)
    ax.tick_params(axis="x", labelsize=8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    method = result.method + ("" if se is None else f", {result.n_permutations} permutations, +-1.96 SE")
    fig.suptitle(title or f"Clinical fields: Shapley values ({method})", fontsize=11, y=1.0 - 0.1 / height,
                 va="top")
    total = float(np.sum(values))
    fig.text(0.5, 1.0 - 0.45 / height,
             f"{target}: f(x) = {result.prediction:.3f}, base = {result.base_value:.3f} "
             f"({result.baseline}), sum = {total:+.3f}", ha="center", va="top", fontsize=8, color="0.25")
    cls = result.target_name if result.target_name is not None else f"class {result.target}"
    fig.legend(handles=[Patch(color=POSITIVE, label=f"raises {target}: towards {cls}"),
                        Patch(color=NEGATIVE, label=f"lowers {target}: away from {cls}")],
               loc="lower center", bbox_to_anchor=(0.5, 0.3 / height), fontsize=8, frameon=False, ncol=2)
    fig.text(0.5, 0.06 / height, RESEARCH_USE_NOTICE, ha="center", va="bottom", fontsize=8, color="0.3",
             style="italic")
    return fig


def plot_shapley(result: Any, path: str | os.PathLike, title: str | None = None, dpi: int = 120) -> Path:
    """Write the chart (:func:`shapley_figure`) as PNG atomically, the research-use notice in the PNG
    metadata (``Description``); returns the path."""
    fig = shapley_figure(result, title)
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi,
                    metadata={"Description": RESEARCH_USE_NOTICE, "Software": "mmxai-core"})
    return Path(path)


__all__ = ["NEGATIVE", "POSITIVE", "plot_shapley", "shapley_figure"]
