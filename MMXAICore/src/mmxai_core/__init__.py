"""MMXAI core: explainable multimodal (image + clinical) cancer classification.

Research use, not for diagnosis.

Data flows one way::

    io (read image with geometry) -> data (preprocess, clinical schema) -> model -> explain
    -> inverse preprocessing (heatmap back on the patient's grid) -> report / Slicer

Heavy dependencies (SimpleITK, pydicom, torch) are imported lazily by the submodules that need them,
so ``import mmxai_core`` stays cheap.
"""

__version__ = "0.1.0"

RESEARCH_USE_NOTICE = "Research use only - not for diagnosis."

from mmxai_core.errors import MMXAIError  # noqa: E402

__all__ = ["__version__", "RESEARCH_USE_NOTICE", "MMXAIError"]
