"""The thin Qt view of the MMXAI panel: the same code for Slicer's PythonQt (``qt``) and for PyQt5 (tests).

PythonQt is not PyQt5: PythonQt exposes Qt properties as attributes (``spin.value``), PyQt5 as methods
(``spin.value()``); PythonQt connects with C++ signatures (``obj.connect("valueChanged(double)", f)``), PyQt5
with bound signals (``obj.valueChanged[float].connect(f)``). Every such call goes through a small toolkit
adapter (:class:`PythonQtToolkit`, :class:`PyQt5Toolkit`); everything else here is plain widget building
that both toolkits spell the same way. The view holds no behaviour: every event is handed to the presenter.
The widgets are built in code, not from a ``.ui`` file: the clinical form is generated from the checkpoint's
schema anyway, and one builder serves both toolkits.
"""

from __future__ import annotations

import os
import re
import tempfile
from typing import Any, Callable

from . import NOTICE

_SIG_RE = re.compile(r"^(\w+)\((.*)\)$")
_PY_TYPES = {"double": float, "int": int, "bool": bool, "QString": str, "": None}


# ---------------------------------------------------------------------------------------- toolkits
class PythonQtToolkit:  # pragma: no cover - only real Slicer runs this
    """Slicer's PythonQt (``import qt``): properties are attributes, signals connect by C++ signature."""

    name = "PythonQt"

    def __init__(self, qt_module=None):
        if qt_module is None:
            import qt as qt_module
        self.qt = qt_module
        self.Qt = qt_module.Qt

    def cls(self, name: str):
        return getattr(self.qt, name)

    def get(self, widget, prop: str):
        value = getattr(widget, prop)
        return value() if callable(value) else value

    def connect(self, obj, signature: str, fn: Callable) -> None:
        obj.connect(signature, fn)

    def pixmap_from_png(self, data: bytes):
        fd, path = tempfile.mkstemp(suffix=".png")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            return self.qt.QPixmap(path)
        finally:
            os.remove(path)

    def choose_folder(self, parent, title: str) -> str:
        return str(self.qt.QFileDialog.getExistingDirectory(parent, title) or "")


class PyQt5Toolkit:
    """PyQt5: properties are getter methods, signals are bound attributes (overloads picked by Python type)."""

    name = "PyQt5"

    def __init__(self):
        from PyQt5 import QtCore, QtGui, QtWidgets

        self._mods = (QtWidgets, QtGui, QtCore)
        self.Qt = QtCore.Qt

    def cls(self, name: str):
        for m in self._mods:
            if hasattr(m, name):
                return getattr(m, name)
        raise AttributeError(name)

    def get(self, widget, prop: str):
        return getattr(widget, prop)()

    def connect(self, obj, signature: str, fn: Callable) -> None:
        m = _SIG_RE.match(signature.replace(" ", ""))
        if not m:
            raise ValueError(signature)
        name, args = m.group(1), m.group(2)
        signal = getattr(obj, name)
        types = tuple(_PY_TYPES.get(a.split("::")[-1], None) for a in args.split(",")) if args else ()
        if types and all(t is not None for t in types):
            try:
                signal = signal[types if len(types) > 1 else types[0]]
            except (KeyError, TypeError, IndexError):
                pass
        signal.connect(fn)

    def pixmap_from_png(self, data: bytes):
        pm = self.cls("QPixmap")()
        pm.loadFromData(data)
        return pm

    def choose_folder(self, parent, title: str) -> str:
        return str(self.cls("QFileDialog").getExistingDirectory(parent, title) or "")


# -------------------------------------------------------------------------- volume selector (no Slicer)
class SceneVolumeSelector:
    """A combo box of the scene's image volumes, kept current by scene observers (used outside Slicer; in
    Slicer the module uses a qMRMLNodeComboBox with the same small interface)."""

    def __init__(self, tk, logic):
        self.tk, self.logic = tk, logic
        self.widget = tk.cls("QComboBox")()
        self._ids: list[str | None] = []
        self._callbacks: list[Callable] = []
        self._updating = False
        scene = logic.scene
        self._tags = [scene.AddObserver(scene.NodeAddedEvent, self._scene_changed),
                      scene.AddObserver(scene.NodeRemovedEvent, self._scene_changed)]
        tk.connect(self.widget, "currentIndexChanged(int)", self._index_changed)
        self.refresh()

    def refresh(self) -> None:
        current = self.current_node_id()
        vols = self.logic.list_volumes()
        self._updating = True
        try:
            self.widget.clear()
            self._ids = [None] + [i for i, _ in vols]
            self.widget.addItem("(select a volume)")
            for _, name in vols:
                self.widget.addItem(name)
            idx = self._ids.index(current) if current in self._ids else 0
            self.widget.setCurrentIndex(idx)
        finally:
            self._updating = False
        if current is not None and current not in self._ids:
            self._notify()

    def _scene_changed(self, *_a) -> None:
        self.refresh()

    def _index_changed(self, *_a) -> None:
        if not self._updating:
            self._notify()

    def _notify(self) -> None:
        for cb in self._callbacks:
            cb(self.current_node_id())

    def current_node_id(self) -> str | None:
        if not self._ids:
            return None
        idx = self.tk.get(self.widget, "currentIndex")
        return self._ids[idx] if 0 <= idx < len(self._ids) else None

    def set_current_node_id(self, node_id: str | None) -> None:
        self._updating = True
        try:
            self.widget.setCurrentIndex(self._ids.index(node_id) if node_id in self._ids else 0)
        finally:
            self._updating = False

    def on_changed(self, callback: Callable[[str | None], None]) -> None:
        self._callbacks.append(callback)

    def close(self) -> None:
        for t in self._tags:
            self.logic.scene.RemoveObserver(t)


# ------------------------------------------------------------------------------------------- panel
class PanelView:
    """The panel's widgets; ``bind(presenter)`` wires them to the presenter."""

    STATUS_COLORS = {"info": "#222222", "warning": "#9a5a00", "error": "#b00020"}

    def __init__(self, tk, volume_selector, parent=None):
        self.tk = tk
        self.selector = volume_selector
        self.presenter = None
        self.folder_chooser: Callable[[str], str | None] | None = None  # tests and scripts replace dialogs
        self.chart_hook: Callable[[Any, Any], None] | None = None  # Slicer: show the chart in the layout
        self.timer_interval_ms = 100
        self._timer = None
        self._poll_cb: Callable | None = None
        self._updating = False
        self.rows: dict[str, dict] = {}
        self.last_chart = None
        W = tk.cls
        self.widget = W("QWidget")(parent) if parent is not None else W("QWidget")()
        lay = W("QVBoxLayout")(self.widget)
        self.notice = W("QLabel")(f"<b>{NOTICE}</b> Not a medical device; not clinically validated.")
        self.notice.setWordWrap(True)
        self.notice.setStyleSheet("color: #b00020;")
        lay.addWidget(self.notice)

        box = W("QGroupBox")("Input")
        form = W("QFormLayout")(box)
        form.addRow("Volume:", volume_selector.widget)
        lay.addWidget(box)

        box = W("QGroupBox")("Model")
        form = W("QFormLayout")(box)
        self.model_combo = W("QComboBox")()
        form.addRow("Checkpoint:", self.model_combo)
        self.model_info = W("QLabel")("")
        self.model_info.setWordWrap(True)
        form.addRow(self.model_info)
        lay.addWidget(box)

        self.clinical_box = W("QGroupBox")("Clinical data (every field may be unknown)")
        self.clinical_layout = W("QVBoxLayout")(self.clinical_box)
        self.form_widget = None
        self.reset_button = W("QPushButton")("Set all to unknown")
        self.clinical_layout.addWidget(self.reset_button)
        lay.addWidget(self.clinical_box)

        box = W("QGroupBox")("Run")
        form = W("QFormLayout")(box)
        self.device_combo = W("QComboBox")()
        form.addRow("Device:", self.device_combo)
        self.trust_check = W("QCheckBox")("Trust figures (stability, faithfulness; slower)")
        form.addRow(self.trust_check)
        row = W("QHBoxLayout")()
        self.run_button = W("QPushButton")("Run")
        self.cancel_button = W("QPushButton")("Cancel")
        row.addWidget(self.run_button)
        row.addWidget(self.cancel_button)
        form.addRow(row)
        self.progress = W("QProgressBar")()
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        form.addRow(self.progress)
        self.status = W("QLabel")("")
        self.status.setWordWrap(True)
        form.addRow(self.status)
        lay.addWidget(box)

        self.results_box = W("QGroupBox")("Results")
        rl = W("QVBoxLayout")(self.results_box)
        self.result_text = W("QPlainTextEdit")()
        self.result_text.setReadOnly(True)
        self.result_text.setMinimumHeight(250)
        rl.addWidget(self.result_text)
        self.shap_image = W("QLabel")("")
        rl.addWidget(self.shap_image)
        form = W("QFormLayout")()
        self.opacity_slider = W("QSlider")(tk.Qt.Horizontal)
        self.opacity_slider.setRange(0, 100)
        form.addRow("Heatmap opacity:", self.opacity_slider)
        self.threshold_slider = W("QSlider")(tk.Qt.Horizontal)
        self.threshold_slider.setRange(0, 100)
        form.addRow("Heatmap threshold:", self.threshold_slider)
        rl.addLayout(form)
        self.export_button = W("QPushButton")("Export report (HTML, PNG, JSON)...")
        rl.addWidget(self.export_button)
        lay.addWidget(self.results_box)
        lay.addStretch(1)

    # ---------------------------------------------------------------------------------- wiring
    def bind(self, presenter) -> None:
        self.presenter = presenter
        tk = self.tk
        self.selector.on_changed(lambda node_id: presenter.on_volume_changed(node_id))
        tk.connect(self.model_combo, "activated(int)", lambda i: presenter.on_model_choice(int(i)))
        tk.connect(self.device_combo, "currentIndexChanged(int)",
                   lambda i: None if self._updating else presenter.on_device_changed(int(i)))
        tk.connect(self.trust_check, "toggled(bool)",
                   lambda b: None if self._updating else presenter.on_trust_changed(bool(b)))
        tk.connect(self.run_button, "clicked()", lambda *a: presenter.on_run())
        tk.connect(self.cancel_button, "clicked()", lambda *a: presenter.on_cancel())
        tk.connect(self.reset_button, "clicked()", lambda *a: presenter.reset_form())
        tk.connect(self.export_button, "clicked()", lambda *a: presenter.on_export())
        tk.connect(self.opacity_slider, "valueChanged(int)",
                   lambda v: None if self._updating else presenter.on_opacity_changed(int(v) / 100.0))
        tk.connect(self.threshold_slider, "valueChanged(int)",
                   lambda v: None if self._updating else presenter.on_threshold_changed(int(v) / 100.0))

    # --------------------------------------------------------------------------- presenter -> view
    def set_model_choices(self, labels, index) -> None:
        self._updating = True
        try:
            self.model_combo.clear()
            for text in labels:
                self.model_combo.addItem(text)
            self.model_combo.setCurrentIndex(int(index))
        finally:
            self._updating = False

    def set_model_info(self, text, ok) -> None:
        self.model_info.setText(text)
        self.model_info.setStyleSheet("" if ok else f"color: {self.STATUS_COLORS['error']};")

    def build_form(self, fields) -> None:
        W, tk = self.tk.cls, self.tk
        if self.form_widget is not None:
            self.clinical_layout.removeWidget(self.form_widget)
            self.form_widget.setParent(None)
            self.form_widget.deleteLater()
        self.rows = {}
        self.form_widget = W("QWidget")()
        form = W("QFormLayout")(self.form_widget)
        for f in fields:
            tip = f"{f.label}: {f.allowed}" + (f"\n{f.help}" if f.help else "") + (
                f"\nPrefilled from DICOM {f.dicom} when the volume has it." if f.dicom else "")
            label = W("QLabel")(f"{f.label}:")
            label.setToolTip(tip)
            error = W("QLabel")("")
            error.setWordWrap(True)
            error.setStyleSheet(f"color: {self.STATUS_COLORS['error']};")
            error.setVisible(False)
            row: dict[str, Any] = {"model": f, "error": error}
            if f.kind == "number":
                box = W("QWidget")()
                hl = W("QHBoxLayout")(box)
                hl.setContentsMargins(0, 0, 0, 0)
                spin = W("QDoubleSpinBox")()
                spin.setDecimals(int(f.decimals))
                spin.setRange(float(f.spin_minimum), float(f.spin_maximum))
                spin.setSingleStep(float(f.step))
                if f.unit:
                    spin.setSuffix(f" {f.unit}")
                spin.setToolTip(tip + f"\nValid: {f.range_text}")
                spin.setValue(float(f.minimum if f.minimum is not None else 0.0))
                spin.setEnabled(False)
                unknown = W("QCheckBox")("unknown")
                unknown.setChecked(True)
                hl.addWidget(spin, 1)
                hl.addWidget(unknown)
                row.update(spin=spin, unknown=unknown)
                tk.connect(spin, "valueChanged(double)", lambda v, n=f.name: self._number_changed(n))
                tk.connect(unknown, "toggled(bool)", lambda b, n=f.name: self._number_changed(n))
                form.addRow(label, box)
            else:
                combo = W("QComboBox")()
                for c in f.choices:
                    combo.addItem(c)
                combo.setToolTip(tip)
                row["combo"] = combo
                tk.connect(combo, "currentIndexChanged(int)", lambda i, n=f.name: self._choice_changed(n))
                form.addRow(label, combo)
            form.addRow(error)
            self.rows[f.name] = row
        self.clinical_layout.insertWidget(0, self.form_widget)

    def _number_changed(self, name) -> None:
        if self._updating or self.presenter is None:
            return
        row = self.rows[name]
        unknown = bool(self.tk.get(row["unknown"], "isChecked"))
        row["spin"].setEnabled(not unknown)
        self.presenter.on_field_changed(name, None if unknown else float(self.tk.get(row["spin"], "value")))

    def _choice_changed(self, name) -> None:
        if self._updating or self.presenter is None:
            return
        row = self.rows[name]
        idx = int(self.tk.get(row["combo"], "currentIndex"))
        choices = row["model"].choices
        self.presenter.on_field_changed(name, None if idx <= 0 else choices[idx])

    def set_field_value(self, name, value) -> None:
        row = self.rows.get(name)
        if row is None:
            return
        self._updating = True
        try:
            if "spin" in row:
                row["unknown"].setChecked(value is None)
                row["spin"].setEnabled(value is not None)
                if value is not None:
                    row["spin"].setValue(float(value))
            else:
                choices = row["model"].choices
                row["combo"].setCurrentIndex(choices.index(value) if value in choices else 0)
        finally:
            self._updating = False

    def set_field_error(self, name, message) -> None:
        row = self.rows.get(name)
        if row is not None:
            row["error"].setText(message)
            row["error"].setVisible(bool(message))

    def set_device_choices(self, choices, index) -> None:
        self._updating = True
        try:
            self.device_combo.clear()
            for label, _key in choices:
                self.device_combo.addItem(label)
            self.device_combo.setCurrentIndex(int(index))
        finally:
            self._updating = False

    def set_trust(self, checked) -> None:
        self._updating = True
        try:
            self.trust_check.setChecked(bool(checked))
        finally:
            self._updating = False

    def set_volume(self, node_id) -> None:
        self.selector.set_current_node_id(node_id)

    def set_run_state(self, can_run, running) -> None:
        self.run_button.setEnabled(bool(can_run))
        self.cancel_button.setEnabled(bool(running))
        for w in (self.model_combo, self.clinical_box, self.device_combo, self.selector.widget):
            w.setEnabled(not running)

    def set_progress(self, fraction) -> None:
        self.progress.setValue(0 if fraction is None else int(round(100 * float(fraction))))

    def set_status(self, text, level) -> None:
        self.status.setText(text)
        self.status.setStyleSheet(f"color: {self.STATUS_COLORS.get(level, '#222222')};")

    def show_results(self, text, shap_png, overlay_png) -> None:
        self.result_text.setPlainText(text)
        if shap_png:
            pm = self.tk.pixmap_from_png(shap_png)
            if pm.width() > 380:
                pm = pm.scaledToWidth(380, self.tk.Qt.SmoothTransformation)
            self.shap_image.setPixmap(pm)
            self.shap_image.setMinimumSize(pm.width(), pm.height())
        else:
            self.shap_image.clear()
            self.shap_image.setMinimumSize(0, 0)

    def clear_results(self) -> None:
        self.result_text.setPlainText("")
        self.shap_image.clear()
        self.shap_image.setMinimumSize(0, 0)

    def set_result_controls(self, enabled, opacity, threshold) -> None:
        self._updating = True
        try:
            self.opacity_slider.setValue(int(round(100 * opacity)))
            self.threshold_slider.setValue(int(round(100 * threshold)))
        finally:
            self._updating = False
        for w in (self.opacity_slider, self.threshold_slider, self.export_button):
            w.setEnabled(bool(enabled))

    def ask_checkpoint_folder(self):
        if self.folder_chooser is not None:
            return self.folder_chooser("checkpoint")
        return self.tk.choose_folder(self.widget, "Choose an MMXAI checkpoint folder "
                                                  "(weights.safetensors + metadata.json)") or None

    def ask_export_folder(self):
        if self.folder_chooser is not None:
            return self.folder_chooser("export")
        return self.tk.choose_folder(self.widget, "Choose a folder for the MMXAI report") or None

    def start_polling(self, callback) -> None:
        self._poll_cb = callback
        if self._timer is None:
            self._timer = self.tk.cls("QTimer")()
            self._timer.setInterval(self.timer_interval_ms)
            self.tk.connect(self._timer, "timeout()", lambda *a: self._poll_cb() if self._poll_cb else None)
        self._timer.start()

    def stop_polling(self) -> None:
        if self._timer is not None:
            self._timer.stop()

    def show_chart(self, chart_node, table_node) -> None:
        self.last_chart = chart_node
        if self.chart_hook is not None:
            self.chart_hook(chart_node, table_node)
