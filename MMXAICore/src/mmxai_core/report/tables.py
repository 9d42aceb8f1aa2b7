"""Metric tables as JSON, CSV and Markdown; ablation tables. Every file is written atomically.

Research use, not for diagnosis.

Inputs are the dicts of :func:`mmxai_core.train.metrics.evaluate_predictions` and
:func:`mmxai_core.train.compare.ablation_summary`. Undefined values are written as ``null`` (JSON),
an empty cell (CSV) or ``n/a`` (Markdown).
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from mmxai_core import RESEARCH_USE_NOTICE
from mmxai_core.train.metrics import METRIC_NAMES, metric_rows
from mmxai_core.utils.atomic import write_json_atomic, write_text_atomic

METRIC_LABELS = {"accuracy": "accuracy", "sensitivity": "sensitivity", "specificity": "specificity",
                 "f1": "F1", "auc": "AUC"}


def to_jsonable(obj: Any) -> Any:
    """Copy of ``obj`` with numpy scalars/arrays as Python values and NaN / inf as None."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _fmt(v: Any, digits: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{float(v):.{digits}f}"


def _fmt_ci(lo: Any, hi: Any, digits: int = 3) -> str:
    return "n/a" if lo is None or hi is None else f"[{float(lo):.{digits}f}, {float(hi):.{digits}f}]"


def _fmt_p(p: Any) -> str:
    if p is None:
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _csv_text(header: Sequence[str], rows: Sequence[Mapping]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(header), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else (repr(row[k]) if isinstance(row[k], float) else row[k]))
                         for k in header})
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------------
# single evaluation


def write_metrics_json(result: Mapping, path: str | os.PathLike) -> Path:
    """Write an evaluation result as JSON (NaN -> null); returns the path."""
    return write_json_atomic(path, to_jsonable(result))


CSV_COLUMNS = ("dataset", "metric", "value", "ci_low", "ci_high", "ci_level", "n_boot", "n_boot_valid",
               "n_boot_skipped", "n_cases", "n_patients", "threshold")


def write_metrics_csv(result: Mapping, path: str | os.PathLike) -> Path:
    """Write one row per (dataset, metric): columns :data:`CSV_COLUMNS`; dataset ``(all)`` is the whole set."""
    rows = metric_rows(result)
    boot = result.get("bootstrap", {})
    thr = (result.get("threshold") or {}).get("value")
    for r in rows:
        r.update(ci_level=boot.get("ci_level"), n_boot=boot.get("n_boot"), threshold=thr)
    return write_text_atomic(path, _csv_text(CSV_COLUMNS, to_jsonable(rows)))


def _metric_table(part: Mapping, ci_level: float) -> list[str]:
    pct = f"{100 * ci_level:g}%"
    lines = [f"| metric | value | {pct} CI |", "|---|---|---|"]
    for name, m in part["metrics"].items():
        lines.append(f"| {METRIC_LABELS.get(name, name)} | {_fmt(m.get('value'))} | "
                     f"{_fmt_ci(m.get('ci_low'), m.get('ci_high'))} |")
    return lines


def _part_lines(part: Mapping) -> list[str]:
    lines = [f"- cases: {part.get('n_cases')}, patients: {part.get('n_patients')}, "
             f"class counts: {part.get('class_counts')}"]
    cal = part.get("calibration")
    if cal:
        lines.append(f"- calibration ({cal['mode'].replace('_', ' ')}, {cal['n_bins']} equal-width bins): "
                     f"ECE {_fmt(cal.get('ece'))}, Brier {_fmt(cal.get('brier'))}")
    return lines


def write_metrics_markdown(result: Mapping, path: str | os.PathLike, title: str = "Evaluation") -> Path:
    """Write a Markdown report: settings, then a table ``metric | value | 95% CI`` (overall, then per
    dataset), then warnings."""
    boot = result.get("bootstrap", {})
    ci_level = boot.get("ci_level", 0.95)
    thr = result.get("threshold") or {}
    lines = [f"# {_cell(title)}", "", f"*{RESEARCH_USE_NOTICE}*", ""]
    task = result.get("task", "")
    lines.append(f"- task: {task}, {result.get('n_classes')} classes"
                 + (f", positive class {result.get('positive_class')}" if result.get("positive_class") is not None
                    else ""))
    if thr.get("value") is not None:
        lines.append(f"- threshold: p(class 1) >= {thr['value']:.4g} ({thr.get('source')})")
    else:
        lines.append(f"- prediction: {thr.get('source', 'argmax')}")
    lines.append(f"- {100 * ci_level:g}% CI: {boot.get('unit', 'patient')}-level {boot.get('method', 'percentile')} "
                 f"bootstrap, {boot.get('n_boot')} resamples, seed {boot.get('seed')}")
    lines += _part_lines(result) + [""] + _metric_table(result, ci_level)
    for name, part in result.get("by_dataset", {}).items():
        lines += ["", f"## Dataset: {_cell(name)}", ""] + _part_lines(part) + [""] + _metric_table(part, ci_level)
    warnings = list(result.get("warnings", []))
    for name, part in result.get("by_dataset", {}).items():
        warnings += [f"{name}: {w}" for w in part.get("warnings", [])]
    if warnings:
        lines += ["", "## Warnings", ""] + [f"- {_cell(w)}" for w in warnings]
    return write_text_atomic(path, "\n".join(lines) + "\n")


# ----------------------------------------------------------------------------------------------------
# ablation


def ablation_csv_columns(summary: Mapping) -> list[str]:
    """Column names of the ablation CSV for ``summary`` (see :func:`write_ablation_table`)."""
    cols = ["variant", "n_seeds", "seeds"]
    for m in summary["metrics"]:
        cols += [f"{m}_mean", f"{m}_ci_low", f"{m}_ci_high", f"{m}_sd_seeds"]
    cm = summary["compare_metric"]
    cols += ["reference", f"{cm}_diff", f"{cm}_diff_ci_low", f"{cm}_diff_ci_high", f"{cm}_diff_p_value",
             "n_boot", "ci_level"]
    return cols


def write_ablation_table(rows: Sequence[Mapping] | Mapping, csv_path: str | os.PathLike,
                         md_path: str | os.PathLike, reference: str | None = None,
                         metrics: Sequence[str] = METRIC_NAMES, compare_metric: str = "auc", n_boot: int = 1000,
                         seed: int = 0, ci_level: float = 0.95) -> dict:
    """Write an ablation table (one row per variant) as CSV and Markdown; returns the summary.

    ``rows``: runs for :func:`mmxai_core.train.compare.ablation_summary` (dicts with ``variant``,
    ``seed``, ``y_true``, ``probs``, ``patient_ids``, optional ``threshold``), or an already computed
    summary. Columns: per metric the mean over seeds, the patient-bootstrap CI of that mean and the SD
    over seeds; then the paired-bootstrap difference of ``compare_metric`` against ``reference`` with
    its CI and p-value.
    """
    if isinstance(rows, Mapping) and "variants" in rows:
        summary = rows
    else:
        from mmxai_core.train.compare import ablation_summary

        summary = ablation_summary(rows, reference=reference, metrics=metrics, compare_metric=compare_metric,
                                   n_boot=n_boot, seed=seed, ci_level=ci_level)
    cm = summary["compare_metric"]
    boot = summary["bootstrap"]
    table = []
    for v in summary["variants"]:
        row: dict[str, Any] = {"variant": v["variant"], "n_seeds": v["n_seeds"],
                               "seeds": ";".join(str(s) for s in v["seeds"]), "reference": summary["reference"],
                               "n_boot": boot["n_boot"], "ci_level": boot["ci_level"]}
        for m in summary["metrics"]:
            e = v["metrics"][m]
            row.update({f"{m}_mean": e["value"], f"{m}_ci_low": e["ci_low"], f"{m}_ci_high": e["ci_high"],
                        f"{m}_sd_seeds": e["sd_seeds"]})
        c = v.get("comparison")
        if c:
            row.update({f"{cm}_diff": c["diff"], f"{cm}_diff_ci_low": c["ci_low"], f"{cm}_diff_ci_high": c["ci_high"],
                        f"{cm}_diff_p_value": c["p_value"]})
        table.append(row)
    write_text_atomic(csv_path, _csv_text(ablation_csv_columns(summary), to_jsonable(table)))

    pct = f"{100 * boot['ci_level']:g}%"
    label = METRIC_LABELS.get(cm, cm)
    head = (["variant", "seeds"] + [f"{METRIC_LABELS.get(m, m)} mean [{pct} CI] (SD seeds)" for m in summary["metrics"]]
            + [f"Δ{label} vs {summary['reference']} [{pct} CI]", "p"])
    lines = ["# Ablation", "", f"*{RESEARCH_USE_NOTICE}*", "",
             f"- {summary['n_cases']} test cases, {summary['n_patients']} patients; "
             "every variant scored on the same cases",
             f"- value: mean over seeds; CI: {boot['unit']}-level {boot['method']} bootstrap of the seed mean "
             f"({boot['n_boot']} resamples, seed {boot['seed']}); SD seeds: spread over training seeds",
             f"- Δ{label}: paired bootstrap of the seed-mean difference (variant - {summary['reference']}), "
             "two-sided percentile-bootstrap p-value", "",
             "| " + " | ".join(_cell(h) for h in head) + " |", "|" + "---|" * len(head)]
    for v in summary["variants"]:
        cells = [_cell(v["variant"]), str(v["n_seeds"])]
        for m in summary["metrics"]:
            e = v["metrics"][m]
            sd = "" if e["sd_seeds"] is None else f" ({_fmt(e['sd_seeds'])})"
            cells.append(f"{_fmt(e['value'])} {_fmt_ci(e['ci_low'], e['ci_high'])}{sd}")
        c = v.get("comparison")
        if c:
            d = "n/a" if c["diff"] is None else f"{c['diff']:+.3f}"
            cells += [f"{d} {_fmt_ci(c['ci_low'], c['ci_high'])}", _fmt_p(c["p_value"])]
        else:
            cells += ["(reference)", ""]
        lines.append("| " + " | ".join(cells) + " |")
    if summary.get("warnings"):
        lines += ["", "## Warnings", ""] + [f"- {_cell(w)}" for w in summary["warnings"]]
    write_text_atomic(md_path, "\n".join(lines) + "\n")
    return summary


__all__ = ["to_jsonable", "write_metrics_json", "write_metrics_csv", "write_metrics_markdown",
           "write_ablation_table", "ablation_csv_columns", "CSV_COLUMNS"]
