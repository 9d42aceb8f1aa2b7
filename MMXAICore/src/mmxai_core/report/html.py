"""report.html: one explained case on one self-contained page. Research use only - not for diagnosis.

Built from the result dict (``result.json``, see ``docs/WORKER.md``) and the two pictures beside it
(``overlay.png``, ``shap.png``), which are embedded as base64 ``data:`` URIs so the page can be mailed or
archived alone. Sections: the research-use notice (a banner at the top, repeated at the bottom),
prediction, heatmap overlay, Shapley values (chart and table), modality split, coherence, quality
metrics, notes, model and timings. Every text from the result is HTML-escaped; the page loads nothing
from the network (no scripts, no external styles or fonts).

    write_report_html(result, folder, folder / "report.html")
"""

from __future__ import annotations

import base64
import html
import math
import os
from pathlib import Path
from typing import Any, Mapping

from mmxai_core import RESEARCH_USE_NOTICE
from mmxai_core.utils.atomic import write_text_atomic

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;margin:0 auto;max-width:1100px;
padding:0 16px 32px;color:#1b1b1b;line-height:1.4}
.notice{background:#fff3cd;border:2px solid #b58100;color:#5c4100;font-weight:700;padding:10px 14px;
margin:16px 0;border-radius:6px;font-size:1.05em}
h1{font-size:1.5em;margin:12px 0 4px}h2{font-size:1.15em;border-bottom:1px solid #ccc;padding-bottom:3px;
margin-top:26px}
table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #d0d0d0;padding:3px 8px;text-align:left;
vertical-align:top}th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
.pos{color:#b01e1e}.neg{color:#1f5fa8}.unk{color:#777;font-style:italic}
.bar{display:inline-block;height:10px;vertical-align:middle}
.big{font-size:1.3em;font-weight:700}.muted{color:#666;font-size:.9em}
img{max-width:100%;height:auto;border:1px solid #ddd}
.pics{display:flex;flex-wrap:wrap;gap:16px}.pics figure{margin:0;flex:1 1 420px}
figcaption{color:#555;font-size:.9em}
"""


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(float(x)) else None


def _f(x: Any, digits: int = 3, signed: bool = False) -> str:
    v = _num(x)
    if v is None:
        return "-" if x is None else _e(x)
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def _img(data: bytes | None, alt: str) -> str:
    if not data:
        return f'<p class="muted">({_e(alt)}: not available)</p>'
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">'


def _kv_table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


# ------------------------------------------------------------------------------------------ sections
def _prediction(r: Mapping[str, Any]) -> str:
    p = r.get("prediction") or {}
    probs = p.get("probabilities") or {}
    rows = [("Predicted class", f'<span class="big">{_e(p.get("class"))}</span>'),
            ("Rule", _e(p.get("rule")))]
    if p.get("threshold") is not None:
        rows.append(("Threshold", _f(p.get("threshold"))))
    rows.append(("Explained class", _e(p.get("explained_class"))))
    prob_rows = "".join(f'<tr><td>{_e(c)}</td><td class="num">{_f(v)}</td>'
                        f'<td><span class="bar" style="width:{int(200 * (_num(v) or 0))}px;background:#888">'
                        f"</span></td></tr>" for c, v in probs.items())
    return ("<h2>Prediction</h2>" + _kv_table(rows)
            + f"<table><tr><th>Class</th><th>Probability</th><th></th></tr>{prob_rows}</table>")


def _shapley(r: Mapping[str, Any], shap_png: bytes | None) -> str:
    s = r.get("shapley") or {}
    if not s:
        return ""
    explained = (r.get("prediction") or {}).get("explained_class", "")
    fields = list(s.get("fields") or [])
    known = sorted((f for f in fields if not f.get("unknown")), key=lambda f: -abs(_num(f.get("value")) or 0))
    unknown = [f for f in fields if f.get("unknown")]
    span = max([abs(_num(f.get("value")) or 0) for f in known] + [1e-12])
    has_se = any(f.get("standard_error") is not None for f in fields)
    rows = []
    for f in known + unknown:
        if f.get("unknown"):
            rows.append(f'<tr><td>{_e(f.get("label") or f.get("name"))}</td><td class="unk">unknown</td>'
                        f'<td class="num unk">0 (unknown)</td><td></td>' + ("<td></td>" if has_se else "") + "</tr>")
            continue
        v = _num(f.get("value")) or 0.0
        cls = "pos" if v > 0 else "neg" if v < 0 else ""
        colour = "#d62728" if v > 0 else "#1f77b4"
        bar = f'<span class="bar" style="width:{int(120 * abs(v) / span)}px;background:{colour}"></span>'
        se = f'<td class="num">{_f(f.get("standard_error"), 4)}</td>' if has_se else ""
        rows.append(f'<tr><td>{_e(f.get("label") or f.get("name"))}</td><td>{_e(f.get("entered"))}</td>'
                    f'<td class="num {cls}">{_f(v, 4, signed=True)}</td><td>{bar}</td>{se}</tr>')
    head = ("<tr><th>Field</th><th>Entered</th><th>Contribution</th><th></th>"
            + ("<th>Std. error</th>" if has_se else "") + "</tr>")
    summary = (f'<p>{_e(s.get("quantity"))}. Method: {_e(s.get("method"))}. All fields unknown: '
               f'{_f(s.get("base_value"))}; as entered: {_f(s.get("fx"))}; the contributions sum to the '
               f'difference. Positive values (red) push towards {_e(explained)}, negative (blue) away.</p>')
    return ("<h2>Clinical fields: Shapley values</h2>" + summary
            + f'<div class="pics"><figure>{_img(shap_png, "Shapley value chart")}</figure>'
            f'<figure><table>{head}{"".join(rows)}</table></figure></div>')


def _modality(r: Mapping[str, Any]) -> str:
    m = r.get("modality_split") or {}
    if not m:
        return ""
    corners = m.get("corners") or {}
    names = {"both": "image and clinical data", "image_only": "image only (clinical fields unknown)",
             "clinical_only": "clinical data only (no image)", "none": "neither"}
    corner_rows = "".join(f'<tr><td>{_e(names.get(k, k))}</td><td class="num">{_f(v)}</td></tr>'
                          for k, v in corners.items())
    return ("<h2>Modality split</h2>" + f'<p>{_e(m.get("quantity"))}.</p>'
            + _kv_table([("Image", _f(m.get("image"), signed=True)), ("Clinical data", _f(m.get("clinical"),
                                                                                        signed=True)),
                         ("Interaction (shared equally)", _f(m.get("interaction"), signed=True))])
            + f"<table><tr><th>Model output with</th><th>Value</th></tr>{corner_rows}</table>")


def _flat(obj: Any, prefix: str = "", depth: int = 0) -> list[tuple[str, str]]:
    """Leaves of a nested dict as (dotted name, text); long lists shortened."""
    if isinstance(obj, Mapping) and depth < 4:
        out: list[tuple[str, str]] = []
        for k, v in obj.items():
            out.extend(_flat(v, f"{prefix}.{k}" if prefix else str(k), depth + 1))
        return out
    if isinstance(obj, (list, tuple)):
        shown = ", ".join(_f(v, 4) if _num(v) is not None else _e(v) for v in list(obj)[:12])
        return [(prefix, shown + (f", ... ({len(obj)} values)" if len(obj) > 12 else ""))]
    return [(prefix, _f(obj, 4) if _num(obj) is not None else _e(obj))]


def _coherence(r: Mapping[str, Any]) -> str:
    c = r.get("coherence")
    if not isinstance(c, Mapping):
        return ""
    rows = [("Score", f'<span class="big">{_f(c.get("score"))}</span>')]
    rows += [(k, t) for k, t in _flat({k: v for k, v in c.items() if k not in ("score", "definition")})]
    definition = f'<p class="muted">{_e(c.get("definition"))}</p>' if c.get("definition") else ""
    return "<h2>Cross-modal coherence</h2>" + _kv_table(rows) + definition


def _metrics(r: Mapping[str, Any]) -> str:
    m = r.get("metrics")
    if not isinstance(m, Mapping) or not m:
        return ""
    parts = ["<h2>Explanation quality</h2>"]
    for name, values in m.items():
        parts.append(f"<h3>{_e(str(name).capitalize())}</h3>" + _kv_table(_flat(values)))
    return "".join(parts)


def _heatmap(r: Mapping[str, Any], overlay_png: bytes | None) -> str:
    h = r.get("heatmap") or {}
    norm = h.get("normalisation") or {}
    scale = ("fixed per model (comparable between cases)" if norm.get("mode") == "model"
             else "this case's maximum = 1 (not comparable between cases)")
    caption = (f'Grad-CAM++ for {_e(h.get("explained_class"))}; scale: {_e(scale)}; heat below '
               f'{_f(h.get("display_threshold"), 2)} not drawn; maximum {_f(h.get("max"))}.')
    return (f'<h2>Where the image evidence is</h2><figure>{_img(overlay_png, "heatmap overlay")}'
            f"<figcaption>{caption}</figcaption></figure>")


def _notes(r: Mapping[str, Any]) -> str:
    notes = [n for n in r.get("notes") or [] if n]
    if not notes:
        return ""
    return "<h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>"


def _model(r: Mapping[str, Any]) -> str:
    m = r.get("model") or {}
    inp = r.get("input") or {}
    rows = [("Model", f'{_e(m.get("name"))} {_e(m.get("version"))}'), ("Classes", _e(", ".join(m.get("classes")
                                                                                             or []))),
            ("Variant", _e(m.get("variant"))), ("Weights SHA-256", f'<code>{_e(m.get("weights_sha256"))}</code>'),
            ("Input", _e(f'{inp.get("kind", "")} {"x".join(str(s) for s in inp.get("shape_zyx") or [])} (z, y, x), '
                         f'spacing {inp.get("spacing_xyz_mm")} mm, {inp.get("source_format")}')),
            ("Software", _e(r.get("created_by")))]
    t = r.get("timings_s") or {}
    timing = ", ".join(f"{_e(k)} {_f(v, 2)} s" for k, v in t.items())
    return "<h2>Model and run</h2>" + _kv_table(rows + [("Timings", timing)])


def render_report_html(result: Mapping[str, Any], overlay_png: bytes | None = None,
                       shap_png: bytes | None = None) -> str:
    """The whole page as a string (pictures given as PNG bytes, embedded)."""
    notice = _e(result.get("notice") or RESEARCH_USE_NOTICE)
    pred = result.get("prediction") or {}
    title = f'MMXAI explanation: {_e(pred.get("class", ""))}'
    banner = (f'<div class="notice" role="alert">{notice} The output of a research model; it must not be '
              f"used to diagnose or treat anyone.</div>")
    body = "".join([
        f"<h1>{title}</h1>", banner, _prediction(result), _heatmap(result, overlay_png),
        _shapley(result, shap_png), _modality(result), _coherence(result), _metrics(result), _notes(result),
        _model(result), banner])
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{title} - {notice}</title><style>{_CSS}</style></head><body>{body}</body></html>\n")


def write_report_html(result: Mapping[str, Any], folder: str | os.PathLike,
                      path: str | os.PathLike | None = None) -> Path:
    """Write report.html (atomically) for the result whose pictures lie in ``folder``; returns the path.

    Picture names come from ``result["files"]`` (``overlay``, ``shap_plot``), defaulting to overlay.png and
    shap.png; a missing picture is shown as "not available".
    """
    folder = Path(folder)
    files = result.get("files") or {}

    def read(key: str, default: str) -> bytes | None:
        f = folder / str(files.get(key) or default)
        try:
            return f.read_bytes()
        except OSError:
            return None

    page = render_report_html(result, read("overlay", "overlay.png"), read("shap_plot", "shap.png"))
    return write_text_atomic(path if path is not None else folder / "report.html", page)


__all__ = ["render_report_html", "write_report_html"]
