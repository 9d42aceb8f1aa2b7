"""The panel's behaviour (PanelPresenter) with a recording view: no Qt at all."""

from __future__ import annotations

import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from conftest import CLINICAL, FAKE_CHECKPOINT, MODULE_DIR, add_volume, new_scene, temp_leftovers
from MMXAISlicerLib import nodes
from MMXAISlicerLib.device import GpuInfo, device_choices, probe_gpus
from MMXAISlicerLib.dicomheader import DicomHeaderSource
from MMXAISlicerLib.params import MemoryStore, ParameterStore, get_parameter_node
from MMXAISlicerLib.presenter import PanelPresenter


class RecordingView:
    """Stands in for the Qt view: records what the presenter shows."""

    def __init__(self):
        self.calls = []
        self.form = []
        self.values, self.errors = {}, {}
        self.status = ("", "")
        self.can_run = self.running = False
        self.progress = None
        self.results = None
        self.model_info = ("", True)
        self.devices = ([], 0)
        self.poll = None
        self.folder = None
        self.controls = None
        self.chart = None
        self.volume = None

    def __getattr__(self, name):  # any other view method: record it
        return lambda *a: self.calls.append((name, a))

    def set_model_choices(self, labels, index): self.model_choices = (labels, index)
    def set_model_info(self, text, ok): self.model_info = (text, ok)
    def build_form(self, fields): self.form = fields
    def set_field_value(self, name, value): self.values[name] = value
    def set_field_error(self, name, message): self.errors[name] = message
    def set_device_choices(self, choices, index): self.devices = (choices, index)
    def set_run_state(self, can_run, running): self.can_run, self.running = can_run, running
    def set_progress(self, fraction): self.progress = fraction
    def set_status(self, text, level): self.status = (text, level)
    def show_results(self, text, shap, overlay): self.results = (text, shap, overlay)
    def clear_results(self): self.results = None
    def set_result_controls(self, enabled, opacity, threshold): self.controls = (enabled, opacity, threshold)
    def ask_checkpoint_folder(self): return self.folder
    def ask_export_folder(self): return self.folder
    def start_polling(self, cb): self.poll = cb
    def stop_polling(self): self.poll = None
    def show_chart(self, chart, table): self.chart = (chart, table)
    def set_volume(self, node_id): self.volume = node_id


def make(scene, tmp_path, worker, store=None, **kw):
    view = RecordingView()
    logic = worker.logic(scene, tmp_path)
    store = store or ParameterStore(get_parameter_node(scene))
    if "model" not in kw:
        store.set("ModelChoice", "custom")
        store.set("ModelPath", str(worker.checkpoint))
    kw.pop("model", None)
    p = PanelPresenter(view, logic, store, **kw)
    p.initialize()
    return p, view


def wait(p, view, timeout=60):
    t = time.monotonic()
    while p.running:
        assert time.monotonic() - t < timeout, "run did not finish"
        if view.poll:
            view.poll()
        time.sleep(0.02)


def test_form_from_the_schema(scene, tmp_path, fake_worker):
    p, view = make(scene, tmp_path, fake_worker)
    by = {f.name: f for f in view.form}
    assert list(by) == [f.name for f in p.info.schema.fields]
    age = by["age"]
    assert age.kind == "number" and age.unit == "years" and (age.minimum, age.maximum) == (25, 90)
    assert age.spin_minimum < 25 and age.spin_maximum > 90, "typing range wider so out-of-range is reported"
    assert age.dicom == "PatientAge" and "25-90 years" in age.range_text
    assert by["breast_density"].choices == ["unknown", "A", "B", "C", "D"]
    assert by["family_history"].choices == ["unknown", "no", "yes"]
    assert all(f.kind == "number" or f.choices[0] == "unknown" for f in view.form)
    assert all(view.values[f.name] is None for f in view.form), "every field starts unknown"
    assert "AUC 0.81" in view.model_info[0] and view.model_info[1]


def test_validation_out_of_range_and_recovery(scene, tmp_path, fake_worker):
    p, view = make(scene, tmp_path, fake_worker)
    vol = add_volume(scene, shape_kji=(3, 12, 12), blob_ijk=(6, 6, 1))
    p.on_volume_changed(vol.GetID())
    assert view.can_run and view.status[0].startswith("Ready")
    p.on_field_changed("age", 150.0)
    assert "out of range" in view.errors["age"] and "Age" in view.errors["age"] and "[25, 90]" in view.errors["age"]
    assert not view.can_run and "out of range" in view.status[0]
    p.on_run()  # refused, with the reason
    assert p.job is None and view.status[1] == "error"
    p.on_field_changed("age", 57.0)
    assert view.errors["age"] == "" and view.can_run
    p.on_field_changed("breast_density", "Z")
    assert "not a known category" in view.errors["breast_density"] and not view.can_run
    p.on_field_changed("breast_density", "unknown")
    assert view.can_run and p.clinical_values() == {"age": 57.0}


def test_no_volume_and_not_a_checkpoint(scene, tmp_path, fake_worker):
    p, view = make(scene, tmp_path, fake_worker)
    assert not view.can_run and "Select an input volume" in view.status[0]
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    view.folder = str(folder)
    p.on_model_choice(1)  # "Choose checkpoint folder..."
    assert p.info is None and not view.model_info[1] and "is not an MMXAI checkpoint" in view.model_info[0]
    assert view.form == [] and not view.can_run
    view.folder = str(fake_worker.checkpoint)
    p.on_model_choice(1)
    assert p.info is not None and view.model_info[1]


def test_demo_model_choice_says_when_absent(scene, tmp_path, fake_worker, monkeypatch):
    from MMXAISlicerLib import checkpoint, presenter

    monkeypatch.setattr(checkpoint, "DEMO_MODEL_DIR", tmp_path / "DemoModel")
    monkeypatch.setattr(presenter, "demo_model_path", lambda: tmp_path / "DemoModel")
    monkeypatch.setattr(presenter, "demo_model_available", lambda: False)
    p, view = make(scene, tmp_path, fake_worker, model="demo")
    assert p.info is None and "demo model is not installed" in view.model_info[0]
    assert view.model_choices[0][0] == "Demo model (not installed)"


def test_dicom_prefill(scene, tmp_path, fake_worker):
    seen = {}

    class DB:
        def fileForInstance(self, uid):
            seen["uid"] = uid
            return f"/dicom/{uid}.dcm"

    def reader(path, keywords):
        seen["path"], seen["keywords"] = path, keywords
        return {"PatientAge": "057Y"}

    p, view = make(scene, tmp_path, fake_worker, header_source=DicomHeaderSource(lambda: DB(), reader))
    vol = add_volume(scene, shape_kji=(3, 12, 12), blob_ijk=(6, 6, 1))
    vol.SetAttribute("DICOM.instanceUIDs", "1.2.3.4 1.2.3.5")
    p.on_volume_changed(vol.GetID())
    assert seen == {"uid": "1.2.3.4", "path": "/dicom/1.2.3.4.dcm", "keywords": ["PatientAge"]}
    assert view.values["age"] == 57.0 and p.values["age"] == 57.0
    assert "Prefilled from the DICOM header: Age = 57 years" in view.status[0]
    # a volume without DICOM attributes: no prefill, no error
    other = add_volume(scene, shape_kji=(3, 12, 12), blob_ijk=(6, 6, 1), name="no dicom")
    p.on_volume_changed(other.GetID())
    assert "Prefilled" not in view.status[0]
    # an unreadable header is not a blocker
    src = DicomHeaderSource(lambda: DB(), lambda path, kw: (_ for _ in ()).throw(OSError("bad file")))
    assert src(vol, ["PatientAge"]) == {}


def test_devices_and_gpu_memory_warning(scene, tmp_path, fake_worker):
    gpu = GpuInfo("NVIDIA H200", "cuda", free_mib=1024.0, total_mib=143771.0)
    p, view = make(scene, tmp_path, fake_worker, gpu_probe=lambda: [gpu])
    labels = [label for label, _ in view.devices[0]]
    assert labels[0].startswith("Auto") and "NVIDIA H200 (1.0 GiB free)" in labels[1] and labels[2] == "CPU"
    vol = add_volume(scene, shape_kji=(3, 12, 12), blob_ijk=(6, 6, 1))
    p.on_volume_changed(vol.GetID())
    assert "only 1.0 GiB free" in view.status[0] and view.status[1] == "warning"
    p.on_device_changed(2)
    assert p.device == "cpu" and "GiB free" not in view.status[0]
    assert device_choices([]) == [("Auto (GPU if available)", "auto"), ("CPU", "cpu")]

    def run(args, **kw):
        return SimpleNamespace(returncode=0, stdout="NVIDIA H200, 140000, 143771\nTesla T4, 500, 15360\n")

    gpus = probe_gpus(run=run, which=lambda name: "/usr/bin/nvidia-smi")
    assert [g.name for g in gpus] == ["NVIDIA H200", "Tesla T4"] and gpus[1].low_memory
    assert probe_gpus(run=run, which=lambda name: None) == [] or sys.platform == "darwin"


def test_full_run_events_results_and_export(scene, tmp_path, fake_worker):
    p, view = make(scene, tmp_path, fake_worker)
    vol = add_volume(scene, shape_kji=(4, 16, 16), blob_ijk=(8, 8, 2))
    p.on_volume_changed(vol.GetID())
    for k, v in CLINICAL.items():
        p.on_field_changed(k, v)
    p.on_run()
    assert view.running and not view.can_run and view.poll is not None and view.progress == 0.0
    p.on_volume_changed(None)  # ignored while running
    assert p.volume_id == vol.GetID()
    progress = []
    t = time.monotonic()
    while p.running:
        view.poll()
        progress.append(view.progress)
        time.sleep(0.02)
        assert time.monotonic() - t < 60
    assert any(x is not None and 0 < x < 1 for x in progress)
    assert view.status[0].startswith("Done.") and "not for diagnosis" in view.status[0]
    assert view.progress == 1.0 and view.poll is None and view.can_run and not view.running
    text, shap, overlay = view.results
    assert "Predicted class" in text and shap.startswith(b"\x89PNG") and overlay.startswith(b"\x89PNG")
    assert view.chart[0] is p.outputs.chart_node and view.controls[0]
    p.on_opacity_changed(0.7)
    p.on_threshold_changed(0.6)
    colors = p.outputs.nodes[nodes.ROLE_COLORS]
    rgba = [0.0] * 4
    colors.GetColor(1, rgba)
    assert rgba[3] == 0.0
    view.folder = str(tmp_path)
    p.on_export()
    assert view.status[0].startswith("Report written to") and list(tmp_path.glob("MMXAI-*/report.html"))
    assert temp_leftovers(tmp_path) == []


def test_errors_are_shown_and_the_panel_stays_usable(scene, tmp_path, fake_worker):
    fake_worker.env = {"MMXAI_FAKE_WORKER_MODE": "oom"}
    p, view = make(scene, tmp_path, fake_worker)
    vol = add_volume(scene, shape_kji=(3, 12, 12), blob_ijk=(6, 6, 1))
    p.on_volume_changed(vol.GetID())
    count = scene.GetNumberOfNodes()
    p.on_run()
    wait(p, view)
    assert view.status[1] == "error" and "out of memory" in view.status[0] and "CPU" in view.status[0]
    assert view.can_run and not view.running and scene.GetNumberOfNodes() == count
    p.logic.worker_env = {}
    p.on_run()
    wait(p, view)
    assert view.status[0].startswith("Done.")


def test_cancel(scene, tmp_path, fake_worker):
    fake_worker.env = {"MMXAI_FAKE_WORKER_MODE": "hang"}
    p, view = make(scene, tmp_path, fake_worker)
    vol = add_volume(scene, shape_kji=(3, 12, 12), blob_ijk=(6, 6, 1))
    p.on_volume_changed(vol.GetID())
    count = scene.GetNumberOfNodes()
    p.on_run()
    t = time.monotonic()
    while not view.progress:
        view.poll()
        time.sleep(0.02)
        assert time.monotonic() - t < 60
    p.on_cancel()
    assert not p.running and view.status[0].startswith("Cancelled") and view.can_run
    assert scene.GetNumberOfNodes() == count and temp_leftovers(tmp_path) == []


def test_worker_missing(scene, tmp_path, fake_worker):
    fake_worker.command = [str(tmp_path / "no-python"), "-m", "mmxai_core.worker"]
    p, view = make(scene, tmp_path, fake_worker)
    vol = add_volume(scene, shape_kji=(3, 12, 12), blob_ijk=(6, 6, 1))
    p.on_volume_changed(vol.GetID())
    p.on_run()
    assert p.job is None and view.status[1] == "error" and "could not be started" in view.status[0]
    assert view.can_run


def test_dependency_check_on_first_run_only(scene, tmp_path, fake_worker):
    calls = []

    def check():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("The packages MMXAI needs were not installed (declined).")

    p, view = make(scene, tmp_path, fake_worker, dependency_check=check)
    assert calls == [], "never at start-up"
    vol = add_volume(scene, shape_kji=(3, 12, 12), blob_ijk=(6, 6, 1))
    p.on_volume_changed(vol.GetID())
    p.on_run()
    assert p.job is None and "not installed" in view.status[0] and view.status[1] == "error"
    p.on_run()
    wait(p, view)
    p.on_run()
    wait(p, view)
    assert len(calls) == 2 and view.status[0].startswith("Done.")


def test_values_persist_in_the_parameter_node(scene, tmp_path, fake_worker):
    p, view = make(scene, tmp_path, fake_worker)
    vol = add_volume(scene, shape_kji=(3, 12, 12), blob_ijk=(6, 6, 1))
    p.on_volume_changed(vol.GetID())
    p.on_field_changed("age", 61.0)
    p.on_field_changed("family_history", "yes")
    p.on_device_changed(1)
    p.on_opacity_changed(0.3)
    p.on_trust_changed(False)
    node = get_parameter_node(scene)
    assert node.GetParameter("Clinical.age") == "61" and node.GetNodeReferenceID("InputVolume") == vol.GetID()
    # a second panel on the same scene (e.g. after the scene was saved and loaded) restores everything
    p2, view2 = make(scene, tmp_path, fake_worker, store=ParameterStore(get_parameter_node(scene)), model=None)
    assert view2.values["age"] == 61.0 and view2.values["family_history"] == "yes"
    assert p2.volume_id == vol.GetID() and view2.volume == vol.GetID() and p2.device == "cpu"
    assert p2.opacity == pytest.approx(0.3) and p2.trust is False and view2.can_run


def test_scene_save_and_reload_restores_values_and_result_text(tmp_path, fake_worker):
    scene = new_scene()
    p, view = make(scene, tmp_path, fake_worker)
    vol = add_volume(scene, shape_kji=(3, 12, 12), blob_ijk=(6, 6, 1))
    p.on_volume_changed(vol.GetID())
    p.on_field_changed("age", 44.0)
    p.on_run()
    wait(p, view)
    text = view.results[0]
    scene.SetRootDirectory(str(tmp_path))
    url = str(tmp_path / "scene.mrml")
    scene.SetURL(url)
    assert scene.Commit(url)
    loaded = new_scene()
    loaded.SetURL(url)
    loaded.Import()
    p2, view2 = make(loaded, tmp_path, fake_worker, store=ParameterStore(get_parameter_node(loaded)), model=None)
    assert view2.values["age"] == 44.0 and p2.volume_id == vol.GetID()
    assert view2.results is not None and view2.results[0] == text


def test_scene_closed_resets(scene, tmp_path, fake_worker):
    p, view = make(scene, tmp_path, fake_worker, store=MemoryStore())
    vol = add_volume(scene, shape_kji=(3, 12, 12), blob_ijk=(6, 6, 1))
    p.on_volume_changed(vol.GetID())
    p.on_scene_closed()
    assert p.volume_id is None and view.results is None and not view.can_run


def test_presenter_and_logic_import_no_qt_and_nothing_heavy():
    code = ("import sys; sys.path.insert(0, %r); import MMXAISlicerLib.presenter, MMXAISlicerLib.logic, "
            "MMXAISlicerLib.deps, MMXAISlicerLib.dicomheader; "
            "from MMXAISlicerLib.checkpoint import read_checkpoint_info; read_checkpoint_info(%r); "
            "bad = [m for m in ('PyQt5', 'qt', 'torch', 'SimpleITK', 'pydicom', 'shap', 'scipy', 'matplotlib') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)") % (str(MODULE_DIR), str(FAKE_CHECKPOINT))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def test_trust_figures_requested_and_retried_without_when_unavailable(scene, tmp_path, fake_worker):
    p, view = make(scene, tmp_path, fake_worker)
    vol = add_volume(scene, shape_kji=(3, 12, 12), blob_ijk=(6, 6, 1))
    p.on_volume_changed(vol.GetID())
    p.on_run()
    wait(p, view)
    assert "Stability: ssim 0.91" in view.results[0] and "Faithfulness" in view.results[0]
    p.logic.worker_env = {"MMXAI_FAKE_WORKER_MODE": "no_metrics"}
    p.on_run()
    wait(p, view)
    assert view.status[0].startswith("Done.") and "not available" in view.status[0]
    assert "Stability" not in view.results[0]
    p.on_trust_changed(False)
    p.on_run()
    wait(p, view)
    assert view.status[0].startswith("Done.") and "not available" not in view.status[0]
