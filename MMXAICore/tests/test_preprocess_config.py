"""Configuration of the image preprocessing: defaults, JSON round trip, bad parameters named in errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmxai_core.data.image_preprocess import ImagePreprocessConfig, ImagePreprocessor
from mmxai_core.errors import MMXAIError, PreprocessingError
from mmxai_core.io import Image


def test_defaults_and_json_round_trip():
    cfg = ImagePreprocessConfig()
    assert cfg.orientation == "LPS" and cfg.intensity == "auto" and cfg.output_size_hw == (256, 256)
    data = json.loads(json.dumps(cfg.to_dict()))
    assert ImagePreprocessConfig.from_dict(data) == cfg
    custom = ImagePreprocessConfig(target_spacing_xy=[0.5, 0.6], output_size_hw=[32, 48], target_spacing_z=2.0,
                                   intensity="window", orientation="ras")
    again = ImagePreprocessConfig.from_dict(json.loads(json.dumps(custom.to_dict())))
    assert again == custom and again.target_spacing_xy == (0.5, 0.6) and again.orientation == "RAS"
    assert ImagePreprocessConfig.from_dict({}) == cfg


@pytest.mark.parametrize("kwargs,name", [
    ({"target_spacing_xy": (-1.0, 1.0)}, "target_spacing_xy"),
    ({"target_spacing_xy": (1.0, 0.0)}, "target_spacing_xy"),
    ({"target_spacing_z": -2.0}, "target_spacing_z"),
    ({"output_size_hw": (0, 64)}, "output_size_hw"),
    ({"output_size_hw": (64, 2.5)}, "output_size_hw"),
    ({"intensity": "minmax"}, "intensity"),
    ({"n4": "yes"}, "n4"),
    ({"orientation": "LPX"}, "orientation"),
    ({"orientation": "LLS"}, "orientation"),
    ({"clip_percentiles": (99.5, 0.5)}, "clip_percentiles"),
    ({"window_width": 0.0}, "window_width"),
    ({"crop": "top"}, "crop"),
    ({"laterality": "left"}, "laterality"),
    ({"interpolation": "cubic"}, "interpolation"),
    ({"n4_shrink_factor": 0}, "n4_shrink_factor"),
    ({"n4_iterations": ()}, "n4_iterations"),
    ({"pad_value": float("nan")}, "pad_value"),
])
def test_bad_parameters_raise_naming_the_parameter(kwargs, name):
    with pytest.raises(PreprocessingError, match=rf"ImagePreprocessConfig\.{name}\b") as info:
        ImagePreprocessConfig(**kwargs)
    assert isinstance(info.value, MMXAIError)


def test_unknown_key_in_dict_is_named():
    with pytest.raises(PreprocessingError, match="target_spacing"):
        ImagePreprocessConfig.from_dict({"target_spacing": [1, 1]})


def test_bad_images_are_rejected():
    pre = ImagePreprocessor(ImagePreprocessConfig(output_size_hw=(8, 8)))
    arr = np.ones((2, 8, 8), np.float32)
    arr[0, 0, 0] = np.nan
    with pytest.raises(PreprocessingError, match="NaN"):
        pre.apply(Image(arr))
    with pytest.raises(PreprocessingError, match="Image"):
        pre.apply(np.ones((2, 8, 8)))
