"""The worker's result files read into plain data, and the result text (no Qt, no MRML).

File contract: ``MMXAICore/docs/WORKER.md`` (result.json, heatmap.nrrd, heatmap_label.nrrd,
heatmap_bins.json, overlay.png, shap.png, report.html).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import NOTICE

REPORT_FILES = ("report", "overlay", "shap_plot")
"""Keys in result.json's ``files`` that "Export report" writes (plus result.json and heatmap_bins.json)."""


class ResultError(Exception):
    """The worker's result files are missing or do not follow the contract."""


@dataclass
class ShapleyRow:
    name: str
    label: str
    entered: str
    unknown: bool
    value: float


@dataclass
class Bins:
    """Heatmap bins: label k (1..n) holds values in [edges[k-1], edges[k]); label 0 is transparent."""

    threshold: float
    edges: list[float]
    names: list[str]
    rgba: list[tuple[float, float, float, float]]  # per label 0..n, components in [0, 1]

    @property
    def n_labels(self) -> int:
        return len(self.rgba)


@dataclass
class CaseResult:
    """One case's result, read from the worker's output folder (in memory; the folder is removed)."""

    data: dict[str, Any]
    bins: Bins
    files: dict[str, bytes] = field(default_factory=dict)  # name -> content, for display and export
    file_names: dict[str, str] = field(default_factory=dict)  # name -> file name in the output folder

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in (self.data.get("model") or {}).get("classes") or []]

    @property
    def prediction(self) -> dict[str, Any]:
        return self.data.get("prediction") or {}

    @property
    def explained_class(self) -> str:
        p = self.prediction
        return str(p.get("explained_class") or p.get("class") or "")

    @property
    def shapley_rows(self) -> list[ShapleyRow]:
        rows = []
        for f in (self.data.get("shapley") or {}).get("fields") or []:
            unknown = bool(f.get("unknown"))
            rows.append(ShapleyRow(name=str(f.get("name", "")), label=str(f.get("label") or f.get("name", "")),
                                   entered="unknown" if unknown else str(f.get("entered", "")),
                                   unknown=unknown, value=0.0 if unknown else _num(f.get("value"), 0.0)))
        return rows


def read_bins(path: Path) -> Bins:
    """heatmap_bins.json: the core's ``bins`` entries (label, name, rgba 0..255) or ``colors`` lists."""
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ResultError(f"{Path(path).name}: unreadable ({exc})") from None
    threshold = _num(d.get("threshold"), 0.0)
    edges = [float(x) for x in d.get("edges") or []]
    names: list[str] = []
    rgba: list[tuple[float, float, float, float]] = []
    if isinstance(d.get("bins"), list) and d["bins"]:
        entries = sorted(d["bins"], key=lambda e: int(e.get("label", 0)))
        for k, e in enumerate(entries):
            if int(e.get("label", k)) != k:
                raise ResultError(f"{Path(path).name}: bin labels must be 0..n without gaps")
            names.append(str(e.get("name") or f"bin {k}"))
            rgba.append(_rgba(e.get("rgba")))
    elif isinstance(d.get("colors"), list) and d["colors"]:
        rgba = [_rgba(c) for c in d["colors"]]
        names = ["below threshold"] + [f"{edges[k - 1]:.2f}-{edges[k]:.2f}" if k < len(edges) else f"bin {k}"
                                       for k in range(1, len(rgba))]
    else:
        raise ResultError(f"{Path(path).name}: no bins or colors")
    rgba[0] = (0.0, 0.0, 0.0, 0.0)  # label 0 is always transparent
    if len(edges) != len(rgba):
        edges = [threshold + (1.0 - threshold) * k / max(1, len(rgba) - 1) for k in range(len(rgba))]
    return Bins(threshold=threshold, edges=edges, names=names, rgba=rgba)


def read_result(output_dir: Path, result_path: str | None = None) -> CaseResult:
    """Read result.json, heatmap_bins.json and the report files of one worker run into memory."""
    output_dir = Path(output_dir)
    rp = Path(result_path) if result_path else output_dir / "result.json"
    if not rp.is_absolute():
        rp = output_dir / rp
    try:
        data = json.loads(rp.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ResultError(f"the worker's result.json is unreadable ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("prediction"), dict):
        raise ResultError("the worker's result.json has no prediction")
    names = {"heatmap": "heatmap.nrrd", "heatmap_label": "heatmap_label.nrrd", "heatmap_bins": "heatmap_bins.json",
             "overlay": "overlay.png", "shap_plot": "shap.png", "report": "report.html"}
    names.update({k: str(v) for k, v in (data.get("files") or {}).items() if isinstance(v, str)})
    for key in ("heatmap", "heatmap_label", "heatmap_bins"):
        if not (output_dir / names[key]).is_file():
            raise ResultError(f"the worker wrote no {names[key]}")
    bins = read_bins(output_dir / names["heatmap_bins"])
    files = {"result": rp.read_bytes(), "heatmap_bins": (output_dir / names["heatmap_bins"]).read_bytes()}
    for key in REPORT_FILES:
        f = output_dir / names.get(key, "")
        if names.get(key) and f.is_file():
            files[key] = f.read_bytes()
    names["result"] = rp.name
    return CaseResult(data=data, bins=bins, files=files, file_names=names)


# ------------------------------------------------------------------------------------ formatting
def format_result_text(result: CaseResult) -> str:
    """The result as plain text: class, probabilities, threshold, modality split, Shapley values,
    stability / faithfulness / coherence figures when present, and the research-use label."""
    d = result.data
    pred = result.prediction
    lines = [f"MMXAI - {NOTICE}"]
    model = d.get("model") or {}
    if model:
        version = f" {model['version']}" if model.get("version") else ""
        lines.append(f"Model: {model.get('name', '?')}{version}")
    cls = str(pred.get("class", "?"))
    probs = {str(k): _num(v) for k, v in (pred.get("probabilities") or {}).items()}
    explained = result.explained_class or cls
    p_cls = probs.get(cls)
    lines.append(f"Predicted class: {cls}" + (f" (p = {p_cls:.2f})" if p_cls is not None else ""))
    if probs:
        lines.append("Probabilities: " + ", ".join(f"{k} {v:.2f}" for k, v in probs.items() if v is not None))
    thr = _num(pred.get("threshold"))
    if thr is not None:
        lines.append(f"Threshold: {explained} when p({explained}) >= {thr:.2f}")
    split = d.get("modality_split") or {}
    if split:
        img, clin = _num(split.get("image")), _num(split.get("clinical"))
        parts = []
        if img is not None:
            parts.append(f"image {img:+.2f}")
        if clin is not None:
            parts.append(f"clinical {clin:+.2f}")
        corners = split.get("corners") or {}
        extra = ", ".join(f"{k.replace('_', ' ')} {_num(v):.2f}" for k, v in corners.items() if _num(v) is not None)
        lines.append(f"Modality split (change in p({explained})): " + ", ".join(parts)
                     + (f" [{extra}]" if extra else ""))
    sh = d.get("shapley") or {}
    rows = result.shapley_rows
    if rows:
        base, fx = _num(sh.get("base_value")), _num(sh.get("fx"))
        head = f"Shapley values of the clinical fields (change in p({explained})"
        if base is not None and fx is not None:
            head += f"; all unknown {base:.2f} -> entered {fx:.2f}"
        lines.append(head + "):")
        known = sorted((r for r in rows if not r.unknown), key=lambda r: -abs(r.value))
        for r in known:
            lines.append(f"  {'+' if r.value >= 0 else '-'} {r.label} = {r.entered}: {r.value:+.3f}")
        unknown = [r.label for r in rows if r.unknown]
        if unknown:
            lines.append("  unknown (no contribution): " + ", ".join(unknown))
    for key, title in (("stability", "Stability"), ("faithfulness", "Faithfulness")):
        figures = _figures((d.get("metrics") or {}).get(key))
        if figures:
            lines.append(f"{title}: {figures}")
    coh = d.get("coherence") or {}
    if _num(coh.get("score")) is not None:
        lines.append(f"Cross-modal coherence: {_num(coh['score']):.2f}")
    heat = d.get("heatmap") or {}
    hmax = _num(heat.get("max"))
    if hmax is not None:
        shown = "" if hmax >= result.bins.threshold else " - below the display threshold, so no overlay is drawn"
        lines.append(f"Heatmap maximum {hmax:.2f} on the model's fixed scale (bins from "
                     f"{result.bins.threshold:.2f}){shown}")
    for note in d.get("notes") or []:
        lines.append(f"Note: {note}")
    lines.append(NOTICE)
    return "\n".join(lines)


def _figures(obj: Any, prefix: str = "", depth: int = 0) -> str:
    """Numeric leaves of a metrics dict, 'name value' joined (two levels deep at most)."""
    if not isinstance(obj, dict) or depth > 1:
        return ""
    parts = []
    for k, v in obj.items():
        name = f"{prefix}{k}".replace("_", " ")
        if _num(v) is not None and not isinstance(v, bool):
            parts.append(f"{name} {_num(v):.3g}")
        elif isinstance(v, dict):
            sub = _figures(v, f"{name} ", depth + 1)
            if sub:
                parts.append(sub)
    return ", ".join(parts)


def _num(x: Any, default: float | None = None) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return default
    return float(x) if math.isfinite(float(x)) else default


def _rgba(c: Any) -> tuple[float, float, float, float]:
    if not isinstance(c, (list, tuple)) or len(c) not in (3, 4):
        raise ResultError(f"bad bin colour {c!r}")
    vals = [float(x) for x in c]
    if any(v > 1.0 for v in vals):  # 0..255
        vals = [v / 255.0 for v in vals]
    if len(vals) == 3:
        vals.append(1.0)
    return tuple(min(1.0, max(0.0, v)) for v in vals)  # type: ignore[return-value]
