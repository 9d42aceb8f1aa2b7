"""MMXAI: explainable multimodal cancer classification in 3D Slicer (scripted module).

Research use only - not for diagnosis.

Placeholder until the Slicer issue: the module registers itself and says what it will do. The panel,
the background worker and the overlays come with that issue; all computation lives in the mmxai-core
package (one source of truth).
"""

from slicer.ScriptedLoadableModule import (  # type: ignore[import-not-found]
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)


class MMXAISlicer(ScriptedLoadableModule):
    """Module metadata."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "MMXAI"
        self.parent.categories = ["Machine Learning"]
        self.parent.contributors = ["MMXAI developers"]
        self.parent.helpText = (
            "Explainable multimodal (image + clinical) cancer classification with Grad-CAM++ heatmaps "
            "and Shapley attributions of clinical fields. <b>Research use only - not for diagnosis.</b>")
        self.parent.acknowledgementText = (
            "Method after Dash et al., 'Explainable multi-modal deep learning for transparent cancer "
            "diagnosis', Front. Artif. Intell. 9:1767612 (2026).")


class MMXAISlicerWidget(ScriptedLoadableModuleWidget):
    """Panel (filled in by the Slicer issue)."""


class MMXAISlicerLogic(ScriptedLoadableModuleLogic):
    """Logic (filled in by the Slicer issue; lives in MMXAISlicerLib)."""


class MMXAISlicerTest(ScriptedLoadableModuleTest):
    """Self-test run inside Slicer."""

    def runTest(self):
        self.setUp()
        self.delayDisplay("MMXAI module loads (research use only - not for diagnosis)")
