"""All behaviour of the MMXAI panel, without Qt (tested fully outside Slicer).

The presenter owns the panel's state and talks to three things it is given:

* a **view** (thin, toolkit-specific) with the methods listed in :class:`View`;
* the **logic** (:class:`~MMXAISlicerLib.logic.MMXAISlicerLogic`) holding the MRML scene;
* a **store** for values that persist in the scene (:mod:`.params`).

Plus pluggable services: ``header_source(node, keywords)`` for DICOM prefill, ``gpu_probe()`` for the device
choice, ``dependency_check()`` (Slicer: offer to install packages on first Run), ``runner_factory()`` for the
worker process.

Form: one entry per field of the checkpoint's clinical schema (the core's ``ClinicalSchema``): numeric
fields get a spin box with the unit and the schema's range (the spin box accepts a wider range so an
out-of-range entry is reported, not silently clamped) and an "unknown" check box; categorical, ordinal and
boolean fields get a combo box whose first entry is "unknown". Values are validated with the core's
``parse_value``, the same code the worker uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from . import NOTICE, nodes
from .checkpoint import CheckpointInfo, CheckpointInfoError, demo_model_available, demo_model_path, \
    read_checkpoint_info
from .device import GpuInfo, device_choices
from .logic import RunError, RunOutputs

UNKNOWN = "unknown"
DEMO, CUSTOM = "demo", "custom"
P_MODEL_CHOICE, P_MODEL_PATH, P_DEVICE, P_OPACITY, P_THRESHOLD, P_TRUST = (
    "ModelChoice", "ModelPath", "Device", "HeatmapOpacity", "HeatmapThreshold", "TrustFigures")
R_VOLUME = "InputVolume"
FIELD_PREFIX = "Clinical."
TRUST_METRICS = ["stability", "faithfulness"]


@dataclass
class FieldModel:
    """What the view needs to build one form row."""

    name: str
    label: str
    kind: str  # number | choice
    unit: str = ""
    help: str = ""
    allowed: str = ""
    minimum: float | None = None  # the schema's range
    maximum: float | None = None
    spin_minimum: float = -1e6  # what the spin box lets you type
    spin_maximum: float = 1e6
    decimals: int = 1
    step: float = 1.0
    choices: list[str] = field(default_factory=list)  # choice: "unknown" first
    dicom: str | None = None

    @property
    def range_text(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        if self.minimum is None and self.maximum is None:
            return f"any number{unit}"
        if self.minimum is None:
            return f"<= {_fmt(self.maximum)}{unit}"
        if self.maximum is None:
            return f">= {_fmt(self.minimum)}{unit}"
        return f"{_fmt(self.minimum)}-{_fmt(self.maximum)}{unit}"


class View:
    """The methods the presenter calls on its view (a thin Qt panel, or a recorder in tests)."""

    def set_model_choices(self, labels: list[str], index: int) -> None: ...
    def set_model_info(self, text: str, ok: bool) -> None: ...
    def build_form(self, fields: list[FieldModel]) -> None: ...
    def set_field_value(self, name: str, value: Any) -> None: ...  # None = unknown; float; choice text
    def set_field_error(self, name: str, message: str) -> None: ...
    def set_device_choices(self, choices: list[tuple[str, str]], index: int) -> None: ...
    def set_trust(self, checked: bool) -> None: ...
    def set_volume(self, node_id: str | None) -> None: ...
    def set_run_state(self, can_run: bool, running: bool) -> None: ...
    def set_progress(self, fraction: float | None) -> None: ...
    def set_status(self, text: str, level: str) -> None: ...  # info | warning | error
    def show_results(self, text: str, shap_png: bytes | None, overlay_png: bytes | None) -> None: ...
    def clear_results(self) -> None: ...
    def set_result_controls(self, enabled: bool, opacity: float, threshold: float) -> None: ...
    def ask_checkpoint_folder(self) -> str | None: ...
    def ask_export_folder(self) -> str | None: ...
    def start_polling(self, callback: Callable[[], None]) -> None: ...
    def stop_polling(self) -> None: ...
    def show_chart(self, chart_node, table_node) -> None: ...


class PanelPresenter:
    def __init__(self, view: View, logic, store, header_source: Callable | None = None,
                 gpu_probe: Callable[[], list[GpuInfo]] | None = None,
                 dependency_check: Callable[[], None] | None = None,
                 runner_factory: Callable | None = None):
        self.view, self.logic, self.store = view, logic, store
        self.header_source = header_source
        self.gpu_probe = gpu_probe or (lambda: [])
        self.dependency_check = dependency_check
        self.runner_factory = runner_factory
        self.dependencies_ok = False
        self.info: CheckpointInfo | None = None
        self.model_error = ""
        self.fields: list[FieldModel] = []
        self.values: dict[str, Any] = {}
        self.errors: dict[str, str] = {}
        self.volume_id: str | None = None
        self.devices: list[tuple[str, str]] = [("CPU", "cpu")]
        self.gpus: list[GpuInfo] = []
        self.device = "auto"
        self.trust = True
        self.opacity, self.threshold = 0.5, 0.0
        self.job = None
        self.outputs: RunOutputs | None = None
        self.status = ("", "info")
        self._restoring = False
        self._metrics: list[str] = []
        self._run_note = ""

    # ====================================================================================== setup
    def initialize(self) -> None:
        """Build the panel from the stored values (or defaults): devices, model, form, volume."""
        self.gpus = list(self.gpu_probe() or [])
        self.devices = device_choices(self.gpus)
        self.restore()

    def restore(self) -> None:
        """(Re)read everything from the store: after initialize and after a scene is loaded."""
        self._restoring = True
        try:
            keys = [k for _, k in self.devices]
            self.device = self.store.get(P_DEVICE, "auto")
            if self.device not in keys:
                self.device = "auto"
            self.view.set_device_choices(self.devices, keys.index(self.device))
            self.trust = self.store.get(P_TRUST, "true") == "true"
            self.view.set_trust(self.trust)
            self.opacity = _clamp(_to_float(self.store.get(P_OPACITY, "0.5"), 0.5), 0.0, 1.0)
            self.threshold = _clamp(_to_float(self.store.get(P_THRESHOLD, "0"), 0.0), 0.0, 1.0)
            choice = self.store.get(P_MODEL_CHOICE, DEMO)
            path = self.store.get(P_MODEL_PATH, "")
            self._load_model(choice, path)
            self.volume_id = self.store.get_node_id(R_VOLUME)
            self.view.set_volume(self.volume_id)
            self._show_existing_results()
        finally:
            self._restoring = False
        self._refresh()

    # ====================================================================================== model
    def model_labels(self) -> list[str]:
        demo = "Demo model (shipped)" if demo_model_available() else "Demo model (not installed)"
        labels = [demo, "Choose checkpoint folder..."]
        path = self.store.get(P_MODEL_PATH, "")
        if path:
            labels.append(f"Checkpoint: {path}")
        return labels

    def on_model_choice(self, index: int) -> None:
        """0 demo, 1 choose a folder, 2 the last chosen folder."""
        if self.running:
            return
        self._edited()
        if index == 0:
            self._load_model(DEMO, "")
        elif index == 1:
            path = self.view.ask_checkpoint_folder()
            if path:
                self.on_checkpoint_chosen(path)
            else:
                self._load_model(self.store.get(P_MODEL_CHOICE, DEMO), self.store.get(P_MODEL_PATH, ""))
        else:
            self._load_model(CUSTOM, self.store.get(P_MODEL_PATH, ""))
        self._refresh()

    def on_checkpoint_chosen(self, path: str) -> None:
        self._edited()
        self._load_model(CUSTOM, str(path))
        self._refresh()

    def _load_model(self, choice: str, path: str) -> None:
        self.store.set(P_MODEL_CHOICE, choice)
        if choice == CUSTOM:
            self.store.set(P_MODEL_PATH, path)
        labels = self.model_labels()
        self.view.set_model_choices(labels, 0 if choice == DEMO else 2)
        target = demo_model_path() if choice == DEMO else path
        try:
            self.info = read_checkpoint_info(target)
            self.model_error = ""
            self.view.set_model_info(self.info.summary(), True)
        except CheckpointInfoError as exc:
            self.info = None
            self.model_error = str(exc)
            self.view.set_model_info(self.model_error, False)
        self._build_form()

    @property
    def model_path(self) -> str:
        return str(self.info.path) if self.info else ""

    # ======================================================================================= form
    def _build_form(self) -> None:
        self.fields = [field_model(f) for f in self.info.schema.fields] if self.info else []
        self.view.build_form(self.fields)
        self.values, self.errors = {}, {}
        for f in self.fields:
            raw = self.store.get(FIELD_PREFIX + f.name, UNKNOWN)
            self._set_value(f, None if raw == UNKNOWN else raw, update_view=True)

    def field(self, name: str) -> FieldModel:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def on_field_changed(self, name: str, raw: Any) -> None:
        """A value typed or picked in the form (None or 'unknown' = unknown)."""
        try:
            f = self.field(name)
        except KeyError:
            return
        self._edited()
        self._set_value(f, raw, update_view=False)
        self._refresh()

    def reset_form(self) -> None:
        for f in self.fields:
            self._set_value(f, None, update_view=False)
            self.view.set_field_value(f.name, None)
        self._refresh()

    def _set_value(self, f: FieldModel, raw: Any, update_view: bool) -> None:
        from mmxai_core.errors import SchemaError

        if isinstance(raw, str) and raw.strip().casefold() == UNKNOWN:
            raw = None
        spec = self.info.schema.field(f.name)
        try:
            from mmxai_core.data.schema import parse_value

            parse_value(spec, raw)
            self.errors.pop(f.name, None)
            self.view.set_field_error(f.name, "")
        except SchemaError as exc:
            msg = str(exc).replace(f"field '{f.name}': ", f"{f.label}: ")
            self.errors[f.name] = msg
            self.view.set_field_error(f.name, msg)
        self.values[f.name] = raw
        self.store.set(FIELD_PREFIX + f.name, UNKNOWN if raw is None else _store_text(raw))
        if update_view:
            self.view.set_field_value(f.name, _view_value(f, raw))

    def clinical_values(self) -> dict[str, Any]:
        return {k: v for k, v in self.values.items() if v is not None}

    # ===================================================================================== volume
    def on_volume_changed(self, node_id: str | None) -> None:
        if self.running:
            return
        changed = node_id != self.volume_id
        if changed and not self._restoring:
            self._edited()
        self.volume_id = node_id or None
        self.store.set_node_id(R_VOLUME, self.volume_id)
        if changed and not self._restoring:
            self._prefill()
            self.outputs = None
            self.view.clear_results()
            self._show_existing_results()
        self._refresh()

    def volume_node(self):
        return self.logic.scene.GetNodeByID(self.volume_id) if self.volume_id else None

    def _prefill(self) -> None:
        node = self.volume_node()
        if node is None or self.info is None or self.header_source is None:
            return
        keywords = sorted({f.dicom for f in self.fields if f.dicom})
        if not keywords:
            return
        try:
            header = self.header_source(node, keywords) or {}
        except Exception as exc:  # noqa: BLE001 - prefill is a convenience, never a blocker
            self._set_status(f"Could not read the DICOM header for prefill: {exc}", "warning")
            return
        filled = self.info.schema.prefill_from_dicom(header)
        shown = []
        for name, value in filled.items():
            f = self.field(name)
            self._set_value(f, value, update_view=True)
            shown.append(f"{f.label} = {_fmt(value)}{' ' + f.unit if f.unit else ''}")
        if shown:
            self._set_status("Prefilled from the DICOM header: " + ", ".join(shown)
                             + ". Check that every field belongs to this patient.", "info")

    # ===================================================================================== device
    def on_device_changed(self, index: int) -> None:
        if 0 <= index < len(self.devices):
            self.device = self.devices[index][1]
            self.store.set(P_DEVICE, self.device)
        self._edited()
        self._refresh()

    def on_trust_changed(self, checked: bool) -> None:
        self.trust = bool(checked)
        self.store.set(P_TRUST, "true" if self.trust else "false")

    def device_warning(self) -> str:
        if self.device in ("auto", "cuda") and self.gpus and self.gpus[0].low_memory:
            g = self.gpus[0]
            return (f"The GPU has only {g.free_mib / 1024:.1f} GiB free; if the run fails for lack of memory, "
                    "choose CPU.")
        return ""

    # ======================================================================================== run
    @property
    def running(self) -> bool:
        return self.job is not None and not self.job.finished

    def problems(self) -> list[str]:
        """Why Run is not possible now (empty when it is)."""
        out = []
        if self.volume_node() is None:
            out.append("Select an input volume.")
        if self.info is None:
            out.append(self.model_error or "Choose a model.")
        out.extend(self.errors[f.name] for f in self.fields if f.name in self.errors)
        return out

    def _refresh(self) -> None:
        """Enable Run when possible; show what is missing (an explicit message stays until the next edit)."""
        problems = self.problems()
        self.view.set_run_state(not problems and not self.running, self.running)
        if self.running or self._restoring:
            return
        text = self.status[0]
        if text and not text.startswith(("Not ready", "Ready")):
            return
        if problems:
            self._set_status("Not ready: " + " ".join(problems), "info")
        else:
            warn = self.device_warning()
            self._set_status("Ready. " + (warn or NOTICE), "warning" if warn else "info")

    def _edited(self) -> None:
        """A user edit replaces an old explicit message (error, done, cancelled) with the readiness line."""
        if not self.running:
            self.status = ("", "info")

    def on_run(self) -> None:
        if self.running:
            return
        problems = self.problems()
        if problems:
            self._set_status(" ".join(problems), "error")
            self._refresh()
            return
        if self.dependency_check is not None and not self.dependencies_ok:
            self._set_status("Checking the Python packages MMXAI needs...", "info")
            try:
                self.dependency_check()
            except Exception as exc:  # noqa: BLE001 - DependencyError or a failed install, in plain words
                self._set_status(str(exc), "error")
                self._refresh()
                return
            self.dependencies_ok = True
        self._run_note = ""
        self._start(TRUST_METRICS if self.trust else [])

    def _start(self, metrics: list[str]) -> None:
        runner = self.runner_factory() if self.runner_factory else None
        self._metrics = list(metrics)
        try:
            self.job = self.logic.start(self.volume_node(), self.clinical_values(), self.model_path,
                                        self.device, on_event=self._on_event, runner=runner, metrics=metrics)
        except RunError as exc:
            self.job = None
            self._set_status(str(exc), "error")
            self._refresh()
            return
        self.view.set_progress(0.0)
        self._set_status("Running... (the panel stays usable; Cancel stops the worker)", "info")
        self._refresh()
        self.view.start_polling(self.poll)

    def poll(self) -> None:
        """Called by the view's timer on the GUI thread: deliver the worker's output."""
        if self.job is None:
            self.view.stop_polling()
            return
        self.job.poll(0.0)
        if self.job.finished:
            self.view.stop_polling()

    def on_cancel(self) -> None:
        if self.running:
            self.job.cancel()

    def _on_event(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "progress":
            self.view.set_progress(event.get("fraction"))
            if event.get("message"):
                self._set_status(f"Running: {event['message']}", "info")
        elif kind == "finished":
            self.view.stop_polling()
            state = event.get("state")
            err = event.get("error")
            if (state == "failed" and self._metrics and getattr(err, "kind", "") == "input"
                    and "not available in this installation" in str(err)):
                # this mmxai-core cannot compute the trust figures yet: run again without them, and say so
                self._run_note = " Trust figures (stability, faithfulness) are not available in this mmxai-core."
                self._start([])
                return
            if state == "succeeded":
                self._show_outputs(event["outputs"])
                note = f" Note: {self.outputs.note}." if self.outputs.note else ""
                self._set_status(f"Done. {NOTICE}{note}{self._run_note}", "info")
                self.view.set_progress(1.0)
            elif state == "cancelled":
                self.view.set_progress(None)
                self._set_status("Cancelled. Nothing was added to the scene.", "warning")
            else:
                self.view.set_progress(None)
                self._set_status(str(err) if err else "The run failed.", "error")
            self._refresh()

    # ==================================================================================== results
    def _show_outputs(self, outputs: RunOutputs) -> None:
        self.outputs = outputs
        res = outputs.result
        self.view.show_results(outputs.text, res.files.get("shap_plot"), res.files.get("overlay"))
        self.logic.show_overlay(outputs, self.volume_node(), self.opacity)
        if self.threshold > res.bins.threshold:
            self.logic.set_display_threshold(outputs, self.threshold)
        self.view.set_result_controls(True, self.opacity, max(self.threshold, res.bins.threshold))
        self.view.show_chart(outputs.chart_node, outputs.table_node)

    def _show_existing_results(self) -> None:
        """After a scene reload: the result text saved in the scene (export needs a new run)."""
        node = self.volume_node()
        if node is None:
            self.view.set_result_controls(False, self.opacity, self.threshold)
            return
        found = self.logic.outputs_for(node)
        text_node = found.get(nodes.ROLE_TEXT)
        if text_node is not None and self.outputs is None:
            self.view.show_results(text_node.GetText() or "", None, None)
        self.view.set_result_controls(self.outputs is not None, self.opacity, self.threshold)

    def on_opacity_changed(self, value: float) -> None:
        self.opacity = _clamp(float(value), 0.0, 1.0)
        self.store.set(P_OPACITY, f"{self.opacity:.3g}")
        if self.outputs is not None:
            self.logic.set_overlay_opacity(self.outputs, self.opacity)

    def on_threshold_changed(self, value: float) -> None:
        self.threshold = _clamp(float(value), 0.0, 1.0)
        self.store.set(P_THRESHOLD, f"{self.threshold:.3g}")
        if self.outputs is not None:
            self.logic.set_display_threshold(self.outputs, self.threshold)

    def on_export(self) -> None:
        if self.outputs is None:
            self._set_status("Nothing to export yet: run a case first.", "warning")
            return
        folder = self.view.ask_export_folder()
        if not folder:
            return
        try:
            node = self.volume_node()
            target = self.logic.export_report(self.outputs, folder, node.GetName() if node else "case")
        except (RunError, OSError) as exc:
            self._set_status(f"Export failed: {exc}", "error")
            return
        self._set_status(f"Report written to {target}", "info")

    # ====================================================================================== scene
    def on_scene_closed(self) -> None:
        """The scene was cleared (File > Close Scene): forget nodes; keep the form for the next case."""
        if self.running:
            self.job.cancel()
        self.job, self.outputs, self.volume_id = None, None, None
        self.view.clear_results()
        self.view.set_result_controls(False, self.opacity, self.threshold)
        self._refresh()

    # ===================================================================================== helpers
    def _set_status(self, text: str, level: str) -> None:
        self.status = (text, level)
        self.view.set_status(text, level)


def field_model(spec) -> FieldModel:
    """The form row for a core ``FieldSpec``."""
    unit = spec.unit or ""
    if spec.type == "numeric":
        lo, hi = spec.range if spec.range is not None else (None, None)
        span = (hi - lo) if lo is not None and hi is not None else 100.0
        spin_lo = (lo - max(span, 1.0)) if lo is not None else -1e6
        spin_hi = (hi + max(span, 1.0)) if hi is not None else 1e6
        return FieldModel(name=spec.name, label=spec.label, kind="number", unit=unit, help=spec.help,
                          allowed=spec.allowed(), minimum=lo, maximum=hi, spin_minimum=spin_lo,
                          spin_maximum=spin_hi, decimals=1 if span >= 20 else 2,
                          step=1.0 if span >= 20 else 0.1, dicom=spec.dicom)
    if spec.type == "boolean":
        choices = [UNKNOWN, "no", "yes"]
    else:
        choices = [UNKNOWN] + [_fmt(c) for c in spec.levels]
    return FieldModel(name=spec.name, label=spec.label, kind="choice", unit=unit, help=spec.help,
                      allowed=spec.allowed(), choices=choices, dicom=spec.dicom)


def _view_value(f: FieldModel, raw: Any) -> Any:
    if raw is None:
        return None
    if f.kind == "number":
        try:
            return float(raw)
        except (TypeError, ValueError):
            return None
    if f.choices and f.choices[1:] == ["no", "yes"]:
        text = str(raw).strip().casefold()
        return "yes" if text in ("true", "yes", "1", "1.0") else "no" if text in ("false", "no", "0", "0.0") \
            else str(raw)
    for c in f.choices:
        if c.casefold() == str(raw).strip().casefold() or (_is_num(raw) and _is_num(c) and float(c) == float(raw)):
            return c
    return str(raw)


def _store_text(raw: Any) -> str:
    if isinstance(raw, bool):
        return "yes" if raw else "no"
    if isinstance(raw, float):
        return _fmt(raw)
    return str(raw)


def _fmt(x: Any) -> str:
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, (int, float)) and math.isfinite(float(x)):
        return str(int(x)) if float(x).is_integer() else f"{float(x):.6g}"
    return str(x)


def _is_num(x: Any) -> bool:
    try:
        float(x)
        return not isinstance(x, bool)
    except (TypeError, ValueError):
        return False


def _to_float(text: str, default: float) -> float:
    try:
        v = float(text)
        return v if math.isfinite(v) else default
    except (TypeError, ValueError):
        return default


def _clamp(v: float, lo: float, hi: float) -> float:
    return min(hi, max(lo, v))
