"""Invertible image preprocessing (native image -> model-space (Z, H, W) array and back).

Public API: :class:`ImagePreprocessConfig`, :class:`ImagePreprocessor`, :class:`PreprocessRecord`,
:class:`Grid`, :func:`to_original_grid`, :func:`to_model_space`.
"""

from mmxai_core.data.preprocess.config import ImagePreprocessConfig
from mmxai_core.data.preprocess.inverse import to_model_space, to_original_grid
from mmxai_core.data.preprocess.pipeline import ImagePreprocessor
from mmxai_core.data.preprocess.record import Grid, PreprocessRecord

__all__ = ["ImagePreprocessConfig", "ImagePreprocessor", "PreprocessRecord", "Grid", "to_original_grid",
           "to_model_space"]
