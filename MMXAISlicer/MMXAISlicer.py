"""MMXAI: explainable multimodal (image + clinical) cancer classification in 3D Slicer (scripted module).

Research use only - not for diagnosis.

This file is the Slicer glue only: module metadata, the widget (which builds the toolkit-neutral panel of
``MMXAISlicerLib.view`` with Slicer's PythonQt and wires it to the Qt-free presenter), the module logic (the
library logic on ``slicer.mrmlScene``) and the self-test. All computation runs in the mmxai-core worker
process (``PythonSlicer -m mmxai_core.worker``); nothing here re-implements it. Everything in this file
runs only inside the 3D Slicer application.
"""

import logging
import os

import qt
import slicer
import vtk
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from MMXAISlicerLib import NOTICE
from MMXAISlicerLib.logic import MMXAISlicerLogic as _LibraryLogic


#
# MMXAISlicer
#
class MMXAISlicer(ScriptedLoadableModule):
    """Module metadata."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "MMXAI"
        self.parent.categories = ["Machine Learning"]
        self.parent.dependencies = []
        self.parent.contributors = ["MMXAI developers"]
        self.parent.helpText = (
            "<p><b>Research use only - not for diagnosis.</b> MMXAI is research software: not a medical device, "
            "not clinically validated; it must not be used to make or support clinical decisions.</p>"
            "<p>Select a volume, choose a model (the shipped demo model or a checkpoint folder made by "
            "mmxai-train), fill in the clinical fields you know (every field may stay 'unknown'; fields the "
            "schema maps to the DICOM header, such as age, are prefilled) and press Run. The model answers with a "
            "class probability and shows why: a Grad-CAM++ heatmap overlaid on the volume (labelmap with the "
            "input's exact geometry, plus the continuous map as a scalar volume), the Shapley values of the "
            "clinical fields as a table and bar chart, and stability and faithfulness figures. The case runs in "
            "a separate worker process: Slicer stays responsive and Cancel stops it.</p>"
            "<p>See the <a href='https://github.com/mmxai/mmxai#3d-slicer-module'>documentation</a>.</p>")
        self.parent.acknowledgementText = (
            "The method follows Dash et al., 'Explainable multi-modal deep learning for transparent cancer "
            "diagnosis', Front. Artif. Intell. 9:1767612 (2026): hybrid CNN-Transformer image encoder, clinical "
            "encoder, cross-modal attention fusion, Grad-CAM++ and SHAP explanations with stability and "
            "faithfulness checks. " + NOTICE)


#
# Volume selector (Slicer's node combo box behind the view's small selector interface)
#
class SlicerVolumeSelector:
    def __init__(self):
        self.widget = slicer.qMRMLNodeComboBox()
        self.widget.nodeTypes = ["vtkMRMLScalarVolumeNode"]
        self.widget.selectNodeUponCreation = False
        self.widget.addEnabled = False
        self.widget.removeEnabled = False
        self.widget.noneEnabled = True
        self.widget.showHidden = False
        self.widget.setMRMLScene(slicer.mrmlScene)
        self.widget.setToolTip("The image volume to explain (greyscale, 2D or 3D; from the DICOM module for "
                               "header prefill).")

    def current_node_id(self):
        return self.widget.currentNodeID or None

    def set_current_node_id(self, node_id):
        self.widget.blockSignals(True)
        try:
            self.widget.setCurrentNodeID(node_id or "")
        finally:
            self.widget.blockSignals(False)

    def on_changed(self, callback):
        self.widget.connect("currentNodeChanged(vtkMRMLNode*)",
                            lambda node: callback(node.GetID() if node is not None else None))


#
# MMXAISlicerWidget
#
class MMXAISlicerWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Thin Slicer widget: builds the panel with PythonQt and hands every event to the presenter."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.presenter = None
        self.view = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        from MMXAISlicerLib.deps import ensure_dependencies_in_slicer
        from MMXAISlicerLib.device import probe_gpus
        from MMXAISlicerLib.dicomheader import slicer_header_source
        from MMXAISlicerLib.params import ParameterStore, get_parameter_node
        from MMXAISlicerLib.presenter import PanelPresenter
        from MMXAISlicerLib.runner import make_slicer_runner
        from MMXAISlicerLib.view import PanelView, PythonQtToolkit

        self.logic = MMXAISlicerLogic()
        self.view = PanelView(PythonQtToolkit(qt), SlicerVolumeSelector())
        self.view.chart_hook = self.showChart
        self.layout.addWidget(self.view.widget)
        self._store = lambda: ParameterStore(get_parameter_node(slicer.mrmlScene))
        self.presenter = PanelPresenter(self.view, self.logic, self._store(),
                                        header_source=slicer_header_source(), gpu_probe=probe_gpus,
                                        dependency_check=ensure_dependencies_in_slicer,
                                        runner_factory=make_slicer_runner)
        self.view.bind(self.presenter)
        self.presenter.initialize()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndImportEvent, self.onSceneEndImport)

    def cleanup(self):
        self.removeObservers()
        if self.presenter is not None:
            self.presenter.on_cancel()
            self.view.stop_polling()

    def onSceneEndClose(self, caller, event):
        self.presenter.on_scene_closed()
        self.presenter.store = self._store()
        self.presenter.restore()

    def onSceneEndImport(self, caller, event):
        self.presenter.store = self._store()
        self.presenter.restore()

    @staticmethod
    def showChart(chartNode, tableNode):
        """Show the Shapley chart (and its table, which names the bars) in the view layout."""
        try:
            slicer.modules.plots.logic().ShowChartInLayout(chartNode)
            appLogic = slicer.app.applicationLogic()
            appLogic.GetSelectionNode().SetActiveTableID(tableNode.GetID())
            appLogic.PropagateTableSelection()
        except Exception as exc:  # a missing layout must not hide the results
            logging.warning(f"MMXAI: could not show the chart in the layout: {exc}")


#
# MMXAISlicerLogic
#
class MMXAISlicerLogic(ScriptedLoadableModuleLogic, _LibraryLogic):
    """The library logic (``MMXAISlicerLib.logic.MMXAISlicerLogic``) on ``slicer.mrmlScene``.

    Scripts: ``MMXAISlicerLogic().run(volumeNode, {"age": 57}, modelPath, device="auto")`` blocks until the
    case is done and returns the output nodes; see the README for details.
    """

    def __init__(self, scene=None):
        ScriptedLoadableModuleLogic.__init__(self)
        _LibraryLogic.__init__(self, scene if scene is not None else slicer.mrmlScene)


#
# MMXAISlicerTest
#
class MMXAISlicerTest(ScriptedLoadableModuleTest):
    """Self-test inside Slicer: the shipped demo model on a synthetic, oblique, anisotropic volume."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_DemoModelOnSyntheticVolume()
        self.setUp()
        self.test_BadInput()

    def _syntheticVolume(self):
        import numpy as np

        rng = np.random.default_rng(0)
        shape = (12, 64, 64)  # K, J, I
        k, j, i = np.indices(shape)
        arr = rng.normal(100, 10, shape) + 300 * np.exp(-(((i - 40) ** 2 + (j - 24) ** 2) / 60.0 + (k - 6) ** 2 / 4.0))
        m = vtk.vtkMatrix4x4()
        c, s = np.cos(0.4), np.sin(0.4)
        rot = np.array([[c, -s, 0.0], [s * 0.9, c * 0.9, -0.436], [s * 0.436, c * 0.436, 0.9]])
        rot /= np.linalg.norm(rot, axis=0)
        spacing = (0.7, 0.9, 3.0)
        for r in range(3):
            for q in range(3):
                m.SetElement(r, q, rot[r, q] * spacing[q])
        m.SetElement(0, 3, 12.0)
        m.SetElement(1, 3, -30.0)
        m.SetElement(2, 3, 41.0)
        return slicer.util.addVolumeFromArray(arr.astype("int16"), ijkToRAS=m, name="MMXAI self-test volume")

    def test_DemoModelOnSyntheticVolume(self):
        import numpy as np
        from MMXAISlicerLib.checkpoint import demo_model_available, demo_model_path, read_checkpoint_info

        self.delayDisplay("MMXAI self-test: demo model on a synthetic volume (" + NOTICE + ")")
        self.assertTrue(demo_model_available(), f"the demo checkpoint is missing: {demo_model_path()}")
        vol = self._syntheticVolume()
        before = slicer.util.arrayFromVolume(vol).copy()
        m0 = vtk.vtkMatrix4x4()
        vol.GetIJKToRASMatrix(m0)
        info = read_checkpoint_info(demo_model_path())
        clinical = {"age": 57} if "age" in info.schema else {}
        logic = MMXAISlicerLogic()
        out = logic.run(vol, clinical, str(demo_model_path()), device="cpu", timeout=900)
        lab = out.label_node
        m1 = vtk.vtkMatrix4x4()
        lab.GetIJKToRASMatrix(m1)
        for r in range(4):
            for q in range(4):
                self.assertEqual(m0.GetElement(r, q), m1.GetElement(r, q))
        self.assertEqual(lab.GetImageData().GetDimensions(), vol.GetImageData().GetDimensions())
        self.assertEqual(out.chart_node.GetNumberOfPlotSeriesNodes(), 2)
        self.assertGreater(out.table_node.GetTable().GetNumberOfRows(), 0)
        self.assertIn("not for diagnosis", out.text)
        ids = sorted(n.GetID() for n in out.nodes.values())
        out2 = logic.run(vol, clinical, str(demo_model_path()), device="cpu", timeout=900)
        self.assertEqual(sorted(n.GetID() for n in out2.nodes.values()), ids)
        self.assertTrue(np.array_equal(before, slicer.util.arrayFromVolume(vol)))
        logic.show_overlay(out2, vol, 0.5)
        slicer.util.setSliceViewerLayers(background=vol, label=lab, labelOpacity=0.5)
        self.delayDisplay("MMXAI self-test passed")

    def test_BadInput(self):
        from MMXAISlicerLib.logic import RunError

        logic = MMXAISlicerLogic()
        with self.assertRaises(RunError):
            logic.run(None, {}, os.devnull)
        self.delayDisplay("MMXAI bad-input test passed")
