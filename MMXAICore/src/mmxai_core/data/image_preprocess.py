"""Invertible image preprocessing: the public entry point (the code lives in :mod:`mmxai_core.data.preprocess`).

``ImagePreprocessor(config).apply(image) -> (array float32 (Z, H, W), PreprocessRecord)``;
``to_original_grid(model_array, record)`` carries a model-space map back onto the image's grid;
``to_model_space(mask, record)`` sends an original-grid mask to model space.
"""

from mmxai_core.data.preprocess import (Grid, ImagePreprocessConfig, ImagePreprocessor, PreprocessRecord,
                                        to_model_space, to_original_grid)

__all__ = ["ImagePreprocessConfig", "ImagePreprocessor", "PreprocessRecord", "Grid", "to_original_grid",
           "to_model_space"]
