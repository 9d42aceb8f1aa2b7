"""What a checkpoint folder says about itself, read in the GUI process without torch.

A checkpoint is a folder with ``weights.safetensors`` and ``metadata.json`` (see the core's
``mmxai_core.model.checkpoint``). Here only ``metadata.json`` is read (plain JSON): the model's name, classes,
decision threshold, validation metrics and the clinical schema, which is parsed by the core's own
``ClinicalSchema`` (one source of truth for field types, ranges, categories and DICOM mappings). Whether the
weights load is the worker's business: it reports a bad checkpoint as an input error.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import core

FORMAT_NAME = "mmxai-checkpoint"
WEIGHTS_FILE = "weights.safetensors"
METADATA_FILE = "metadata.json"
DEMO_MODEL_DIR = core.MODULE_DIR / "Resources" / "DemoModel"
"""Where the extension ships its demo checkpoint (weights.safetensors + metadata.json)."""

_VALIDATION_METRICS = ("auc", "sensitivity", "specificity", "accuracy")


class CheckpointInfoError(Exception):
    """The folder is not a usable MMXAI checkpoint; the message says why, in plain words."""


@dataclass
class CheckpointInfo:
    """The parts of ``metadata.json`` the panel shows and uses."""

    path: Path
    name: str
    classes: list[str]
    schema: Any  # mmxai_core.data.schema.ClinicalSchema
    threshold: float | None = None
    positive_class: str | None = None
    validation: dict[str, tuple[float, float | None, float | None]] = field(default_factory=dict)
    package_version: str | None = None
    notice: str | None = None

    @property
    def explained_class(self) -> str:
        """The class whose probability the explanations describe (binary: the positive class)."""
        return self.positive_class or (self.classes[1] if len(self.classes) == 2 else self.classes[-1])

    def summary(self) -> str:
        """One short paragraph for the panel: name, classes, validation metrics, threshold."""
        lines = [f"{self.name} (classes: {', '.join(self.classes)})"]
        if self.validation:
            parts = []
            for k, (v, lo, hi) in self.validation.items():
                ci = f" [{lo:.2f}-{hi:.2f}]" if lo is not None and hi is not None else ""
                parts.append(f"{k.upper() if k == 'auc' else k} {v:.2f}{ci}")
            lines.append("Validation: " + ", ".join(parts))
        else:
            lines.append("Validation: no metrics recorded")
        if self.threshold is not None:
            lines.append(f"Threshold: p({self.explained_class}) >= {self.threshold:.2f}")
        return "\n".join(lines)


def demo_model_path() -> Path:
    return DEMO_MODEL_DIR


def demo_model_available() -> bool:
    return (DEMO_MODEL_DIR / METADATA_FILE).is_file() and (DEMO_MODEL_DIR / WEIGHTS_FILE).is_file()


def read_checkpoint_info(path: str | Path) -> CheckpointInfo:
    """Read ``metadata.json`` of the checkpoint folder ``path``; CheckpointInfoError in plain words."""
    try:
        core.ensure_core_importable()
    except ImportError as exc:
        raise CheckpointInfoError(str(exc)) from None
    from mmxai_core.data.schema import ClinicalSchema
    from mmxai_core.errors import SchemaError

    p = Path(path) if path else None
    if p is None or not str(path).strip():
        raise CheckpointInfoError("No model selected: choose the demo model or a checkpoint folder.")
    if p == DEMO_MODEL_DIR and not demo_model_available():
        raise CheckpointInfoError(
            f"The demo model is not installed ({DEMO_MODEL_DIR} holds no weights.safetensors + metadata.json). "
            "Choose a checkpoint folder made by mmxai-train instead.")
    if not p.exists():
        raise CheckpointInfoError(f"{p}: folder not found.")
    if p.is_file():
        p = p.parent
    meta_path, weights = p / METADATA_FILE, p / WEIGHTS_FILE
    if not meta_path.is_file() or not weights.is_file():
        raise CheckpointInfoError(f"{p} is not an MMXAI checkpoint: expected a folder with {WEIGHTS_FILE} and "
                                  f"{METADATA_FILE} (as written by mmxai-train).")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointInfoError(f"{meta_path}: not readable JSON ({exc}).") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise CheckpointInfoError(f"{p} is not an MMXAI checkpoint: {METADATA_FILE} does not say "
                                  f"format '{FORMAT_NAME}'.")
    schema_dict = (meta.get("clinical_preprocessor") or {}).get("schema") if isinstance(
        meta.get("clinical_preprocessor"), dict) else None
    if schema_dict is None:
        schema_dict = meta.get("schema")
    if not isinstance(schema_dict, dict):
        raise CheckpointInfoError(f"{meta_path}: no clinical schema (clinical_preprocessor.schema) recorded.")
    try:
        schema = ClinicalSchema.from_dict(schema_dict, source=str(meta_path))
    except SchemaError as exc:
        raise CheckpointInfoError(f"the checkpoint's clinical schema is invalid: {exc}") from None
    classes = [str(c) for c in (meta.get("classes") or schema.classes or [])]
    if len(classes) < 2:
        raise CheckpointInfoError(f"{meta_path}: no class names recorded.")
    thr = meta.get("threshold")
    threshold = positive = None
    if isinstance(thr, dict):
        threshold = _number(thr.get("value"))
        positive = thr.get("positive_class") if isinstance(thr.get("positive_class"), str) else None
    elif _number(thr) is not None:
        threshold = _number(thr)
    validation = {}
    val = ((meta.get("metrics") or {}).get("val") or {}) if isinstance(meta.get("metrics"), dict) else {}
    figures = val.get("metrics") if isinstance(val, dict) else None
    if isinstance(figures, dict):
        for key in _VALIDATION_METRICS:
            m = figures.get(key)
            if isinstance(m, dict) and _number(m.get("value")) is not None:
                validation[key] = (_number(m["value"]), _number(m.get("ci_low")), _number(m.get("ci_high")))
    name = meta.get("name") or meta.get("model_name") or schema.name or p.name
    if p.resolve() == DEMO_MODEL_DIR.resolve():
        name = f"{name} (demo model)"
    return CheckpointInfo(path=p, name=str(name), classes=classes, schema=schema, threshold=threshold,
                          positive_class=positive, validation=validation,
                          package_version=meta.get("package_version"), notice=meta.get("notice"))


def _number(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(float(x)) else None
