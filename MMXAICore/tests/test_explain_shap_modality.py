"""Two-player modality split (image vs clinical data): efficiency, the corners against full forward passes,
zero for a modality that is absent or ignored."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mmxai_core.explain.modality import ModalitySplit, modality_split, split_of_game
from mmxai_core.explain.value_function import CoalitionValue
from mmxai_core.model import create_model, model_config

FIELDS = [("age", "numeric", 0), ("grade", "categorical", 3), ("er", "categorical", 2), ("size", "numeric", 0)]
VALUES = np.array([0.4, 1, 1, 0.8], np.float32)
MISSING = np.array([False, False, True, False])


def make_model(variant="attention", seed=0):
    cfg = model_config("tiny", clinical_fields=FIELDS, variant=variant, embed_dim=32, depth=1, num_heads=4,
                       fusion_heads=4, mil_hidden=16, trunk_out_index=3, image_size=64, dropout=0.0)
    model = create_model(cfg, seed=seed).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():                                    # make both modalities matter
        for name, p in model.named_parameters():
            if not name.startswith("image_encoder.trunk"):
                p.add_(torch.randn(p.shape, generator=gen) * 0.15)
    return model


@pytest.fixture(scope="module")
def image():
    return torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(3))


def forward_p(model, image, present, clinical):
    missing = torch.as_tensor(MISSING if clinical else np.ones(4, bool))[None]
    with torch.no_grad():
        out = model(image, image_present=torch.tensor([present]), clin_values=torch.as_tensor(VALUES)[None] * ~missing,
                    clin_missing=missing)
    return float(torch.softmax(out.logits.double(), -1)[0, 1])


def test_split_sums_and_corners_match_forward_passes(image):
    model = make_model()
    split = modality_split(model, image, VALUES, MISSING)
    assert isinstance(split, ModalitySplit)
    assert split.image + split.clinical == pytest.approx(split.v_both - split.v_neither, abs=1e-12)
    assert split.v_both == pytest.approx(forward_p(model, image, True, True), abs=1e-6)
    assert split.v_image_only == pytest.approx(forward_p(model, image, True, False), abs=1e-6)
    assert split.v_clinical_only == pytest.approx(forward_p(model, image, False, True), abs=1e-6)
    assert split.v_neither == pytest.approx(forward_p(model, image, False, False), abs=1e-6)
    expected_image = 0.5 * ((split.v_both - split.v_clinical_only) + (split.v_image_only - split.v_neither))
    assert split.image == pytest.approx(expected_image, abs=1e-15)
    assert abs(split.image) > 1e-4 and abs(split.clinical) > 1e-4
    d = split.to_dict()
    json.dumps(d)
    assert set(d["corners"]) == {"image_and_clinical", "image_only", "clinical_only", "neither"}
    assert d["image"] + d["clinical"] == pytest.approx(d["corners"]["image_and_clinical"] - d["corners"]["neither"])


def test_absent_or_ignored_modality_gets_zero(image):
    model = make_model()
    no_image = modality_split(model, image, VALUES, MISSING, image_present=False)
    assert no_image.image == 0.0
    no_clinical = modality_split(model, image, VALUES, np.ones(4, bool))
    assert no_clinical.clinical == 0.0
    assert modality_split(make_model("image_only"), image, VALUES, MISSING).clinical == 0.0
    assert modality_split(make_model("clinical_only"), image, VALUES, MISSING).image == 0.0


def test_split_reuses_a_value_function_and_log_odds(image):
    model = make_model()
    vf = CoalitionValue(model, image, VALUES, MISSING, output="log_odds")
    split = split_of_game(vf)
    assert vf.n_evaluations == 4 and split.output == "log_odds"
    assert split.image + split.clinical == pytest.approx(split.v_both - split.v_neither, abs=1e-12)
    p = modality_split(model, image, VALUES, MISSING)
    assert split.v_both == pytest.approx(np.log(p.v_both / (1 - p.v_both)), abs=1e-5)
