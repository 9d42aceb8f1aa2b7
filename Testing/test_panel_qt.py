"""The panel offscreen (PyQt5, QT_QPA_PLATFORM=offscreen) against a slicer-core scene: widgets -> presenter
-> logic -> worker process -> labelmap and chart in the scene, with the GUI event loop running throughout."""

from __future__ import annotations

import time

import pytest
import slicer
from conftest import add_volume, np_matrix, temp_leftovers

QtWidgets = pytest.importorskip("PyQt5.QtWidgets")
from PyQt5.QtCore import QTimer  # noqa: E402

from MMXAISlicerLib.params import ParameterStore, get_parameter_node  # noqa: E402
from MMXAISlicerLib.presenter import PanelPresenter  # noqa: E402
from MMXAISlicerLib.view import PanelView, PyQt5Toolkit, SceneVolumeSelector  # noqa: E402


@pytest.fixture(scope="module")
def app():
    return QtWidgets.QApplication.instance() or QtWidgets.QApplication([])


def build(scene, tmp_path, worker):
    tk = PyQt5Toolkit()
    logic = worker.logic(scene, tmp_path)
    selector = SceneVolumeSelector(tk, logic)
    view = PanelView(tk, selector)
    store = ParameterStore(get_parameter_node(scene))
    p = PanelPresenter(view, logic, store)
    view.bind(p)
    from conftest import SHIPPED_DEMO_MODEL

    if worker.checkpoint != SHIPPED_DEMO_MODEL:
        view.folder_chooser = lambda what: str(worker.checkpoint) if what == "checkpoint" else str(tmp_path)
        p.initialize()
        view.model_combo.setCurrentIndex(1)
        view.model_combo.activated.emit(1)  # "Choose checkpoint folder..." -> the test's folder
    else:
        p.initialize()  # the shipped demo model is the default choice
    view.widget.resize(420, 1300)
    view.widget.show()
    return p, view, selector


def run_until_done(app, p, timeout=300):
    ticks = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start()
    t = time.monotonic()
    while p.running:
        app.processEvents()
        time.sleep(0.005)
        assert time.monotonic() - t < timeout, "run did not finish"
    app.processEvents()
    timer.stop()
    return len(ticks)


def test_full_run_from_the_panel(app, scene, tmp_path, worker):
    vol = add_volume(scene)
    p, view, selector = build(scene, tmp_path, worker)
    assert p.info is not None, view.model_info.text()
    assert not view.run_button.isEnabled() and "Select an input volume" in view.status.text()
    selector.widget.setCurrentIndex(1 + [i for i, _ in p.logic.list_volumes()].index(vol.GetID()))
    assert p.volume_id == vol.GetID()
    rows = view.rows
    if "age" in rows:
        rows["age"]["unknown"].setChecked(False)
        rows["age"]["spin"].setValue(150.0)  # typed out of range: reported, Run disabled
        assert "out of range" in rows["age"]["error"].text() and rows["age"]["error"].isVisibleTo(view.widget)
        assert not view.run_button.isEnabled()
        rows["age"]["spin"].setValue(57.0)
        assert rows["age"]["error"].text() == "" and view.run_button.isEnabled()
    for name, row in rows.items():
        if "combo" in row and row["combo"].count() > 1:
            row["combo"].setCurrentIndex(1)
            break
    view.device_combo.setCurrentIndex(view.device_combo.count() - 1)  # CPU
    assert p.device == "cpu"
    view.run_button.click()
    assert view.cancel_button.isEnabled() and not view.run_button.isEnabled()
    assert not selector.widget.isEnabled(), "inputs are locked while the case runs"
    ticks = run_until_done(app, p)
    assert ticks > 5, "the GUI event loop kept running during the case"
    assert view.status.text().startswith("Done."), view.status.text()
    assert view.progress.value() == 100 and view.run_button.isEnabled() and not view.cancel_button.isEnabled()
    out = p.outputs
    lab = scene.GetNodeByID(out.label_node.GetID())
    assert lab is not None and lab.IsA("vtkMRMLLabelMapVolumeNode")
    assert (np_matrix(lab) == np_matrix(vol)).all()
    chart = scene.GetNodeByID(out.chart_node.GetID())
    assert chart is not None and chart.GetNumberOfPlotSeriesNodes() == 2
    assert "Predicted class" in view.result_text.toPlainText()
    assert "not for diagnosis" in view.result_text.toPlainText()
    assert view.shap_image.pixmap() is not None and not view.shap_image.pixmap().isNull()
    comps = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    for i in range(comps.GetNumberOfItems()):
        assert comps.GetItemAsObject(i).GetLabelVolumeID() == lab.GetID()
    view.opacity_slider.setValue(80)
    assert p.opacity == pytest.approx(0.8)
    assert temp_leftovers(tmp_path) == []
    view.widget.close()
    selector.close()


def test_panel_error_and_cancel(app, scene, tmp_path, fake_worker):
    vol = add_volume(scene, shape_kji=(3, 12, 12), blob_ijk=(6, 6, 1))
    fake_worker.env = {"MMXAI_FAKE_WORKER_MODE": "crash"}
    p, view, selector = build(scene, tmp_path, fake_worker)
    selector.set_current_node_id(vol.GetID())
    selector._notify()
    count = scene.GetNumberOfNodes()
    view.run_button.click()
    run_until_done(app, p, timeout=60)
    assert "stopped unexpectedly" in view.status.text() and view.run_button.isEnabled()
    assert scene.GetNumberOfNodes() == count
    p.logic.worker_env = {"MMXAI_FAKE_WORKER_MODE": "hang"}
    view.run_button.click()
    t = time.monotonic()
    while view.progress.value() == 0:
        app.processEvents()
        time.sleep(0.01)
        assert time.monotonic() - t < 60
    view.cancel_button.click()
    assert view.status.text().startswith("Cancelled") and view.run_button.isEnabled()
    assert scene.GetNumberOfNodes() == count and temp_leftovers(tmp_path) == []
    # a colour volume selected: a plain message, nothing started
    rgb = slicer.util.addVolumeFromArray(__import__("numpy").zeros((2, 8, 8, 3), "uint8"), name="photo",
                                         nodeClassName="vtkMRMLVectorVolumeNode")
    selector.refresh()
    selector.set_current_node_id(rgb.GetID())
    selector._notify()
    view.run_button.click()
    assert "single-channel" in view.status.text() and p.job is None and view.run_button.isEnabled()
    view.widget.close()
    selector.close()


def test_toolkit_adapters_read_properties_the_way_each_toolkit_spells_them(app):
    """PythonQt exposes Qt properties as attributes and connects by C++ signature; PyQt5 uses getter methods
    and bound signals. The view only reads and connects through the adapter."""
    from types import SimpleNamespace

    from MMXAISlicerLib.view import PythonQtToolkit

    connected = []
    fake_qt = SimpleNamespace(Qt=SimpleNamespace(Horizontal=1), QLabel=object)
    pyqt_like = PythonQtToolkit(fake_qt)
    spin = SimpleNamespace(value=42.5, isChecked=lambda: True,
                           connect=lambda sig, fn: connected.append((sig, fn)))
    assert pyqt_like.get(spin, "value") == 42.5 and pyqt_like.get(spin, "isChecked") is True
    pyqt_like.connect(spin, "valueChanged(double)", print)
    assert connected == [("valueChanged(double)", print)]
    tk = PyQt5Toolkit()
    real_spin = tk.cls("QDoubleSpinBox")()
    real_spin.setRange(0, 100)
    seen = []
    tk.connect(real_spin, "valueChanged(double)", lambda v: seen.append(v))
    real_spin.setValue(12.5)
    assert tk.get(real_spin, "value") == 12.5 and seen == [12.5]
    combo = tk.cls("QComboBox")()
    got = []
    tk.connect(combo, "currentIndexChanged(int)", lambda i: got.append(i))
    combo.addItems(["a", "b"])
    combo.setCurrentIndex(1)
    assert got[-1] == 1 and isinstance(got[-1], int)
