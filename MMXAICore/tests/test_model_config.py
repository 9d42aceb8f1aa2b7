"""Model config (validation, JSON round trip, presets) and the timm trunk (local weights only)."""

from __future__ import annotations

import json

import pytest
import torch

from mmxai_core.errors import CheckpointError
from mmxai_core.model import ModelConfig, create_model, list_presets, model_config
from mmxai_core.model.image_encoder import sincos_2d

FIELDS = [("age", "numeric", 0), ("grade", "categorical", 3)]


def test_json_round_trip_and_model_fields_tuples():
    cfg = model_config("tiny", clinical_fields=FIELDS, num_classes=3, variant="concat")
    data = json.loads(json.dumps(cfg.to_dict()))
    assert data["clinical_fields"][1] == {"name": "grade", "kind": "categorical", "cardinality": 3}
    assert ModelConfig.from_dict(data) == cfg


@pytest.mark.parametrize("change, message", [
    ({"num_classes": 1}, "num_classes"),
    ({"embed_dim": 30}, "divisible"),
    ({"token_pool": "max"}, "token_pool"),
    ({"clinical_mask_rate": 1.0}, "clinical_mask_rate"),
    ({"depth": 1.5}, "depth"),
    ({"clinical_fields": [("a", "numeric", 0), ("a", "numeric", 0)]}, "duplicate"),
    ({"clinical_fields": [("a", "text", 0)]}, "kind"),
    ({"clinical_fields": [("a", "categorical", 0)]}, "cardinality"),
])
def test_invalid_config_is_refused(change, message):
    data = {**model_config("tiny", clinical_fields=FIELDS).to_dict(), **change}
    with pytest.raises(ValueError, match=message):
        ModelConfig.from_dict(data)


def test_unknown_key_and_preset_are_refused():
    with pytest.raises(ValueError, match="unknown model config key"):
        ModelConfig.from_dict({"embed_dim": 64, "colour": "red"})
    with pytest.raises(ValueError, match="unknown model preset"):
        model_config("huge")
    with pytest.raises(ValueError, match="at least one clinical field"):
        create_model(model_config("tiny", variant="attention"))


def test_presets_build_with_the_documented_sizes():
    assert list_presets() == ["base", "tiny"]
    tiny = create_model(model_config("tiny", clinical_fields=FIELDS), seed=0).eval()
    base = create_model(model_config("base", clinical_fields=FIELDS), seed=0).eval()
    n_tiny = sum(p.numel() for p in tiny.parameters())
    n_base = sum(p.numel() for p in base.parameters())
    assert 0.3e6 < n_tiny < 3e6 and n_base > 5 * n_tiny
    with torch.no_grad():
        out = tiny(torch.randn(1, 1, 128, 128), clin_values=torch.tensor([[0.5, 1.0]]))
    assert out.grid == (16, 16) and out.cross_attention.shape == (1, 1, 4, 256, 2)   # stride 8
    assert out.reverse_attention.shape == (1, 1, 4, 2, 256)
    with pytest.raises(ValueError, match="timm trunk"):
        create_model(model_config("tiny", clinical_fields=FIELDS, trunk="no_such_net"))


def test_sincos_positions_fit_any_grid():
    pos = sincos_2d(8, 8, 32)
    assert pos.shape == (64, 32) and torch.isfinite(pos).all()
    assert len({tuple(r) for r in pos.round(decimals=5).tolist()}) == 64  # all positions distinct
    # positions follow the place in the image, not the cell index: the centre of cell (0, 0) of a 4x4
    # grid is at 1/8 of the image, as is the centre of cell (1, 1) of a 12x12 grid
    coarse, fine = sincos_2d(4, 4, 32), sincos_2d(12, 12, 32)
    torch.testing.assert_close(coarse[0], fine[1 * 12 + 1])
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d(4, 4, 30)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_trunk_starts_from_a_local_rgb_classification_checkpoint(tmp_path, suffix):
    import timm
    from safetensors.torch import save_file

    full = timm.create_model("resnet10t", pretrained=False, in_chans=3)  # has fc.*, RGB stem
    state = full.state_dict()
    path = tmp_path / f"trunk{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    cfg = model_config("tiny", clinical_fields=FIELDS, trunk="resnet10t", trunk_out_index=2, embed_dim=32)
    model = create_model(cfg, trunk_weights=path)
    trunk = model.image_encoder.trunk.state_dict()
    torch.testing.assert_close(trunk["conv1.0.weight"], state["conv1.0.weight"].sum(1, keepdim=True))
    torch.testing.assert_close(trunk["layer2.0.conv1.weight"], state["layer2.0.conv1.weight"])


def test_trunk_weights_that_do_not_fit_are_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({"conv1.0.weight": torch.zeros(24, 1, 3, 3)}, str(path))
    cfg = model_config("tiny", clinical_fields=FIELDS, trunk_out_index=2, embed_dim=32)
    with pytest.raises(CheckpointError, match="not in the file"):
        create_model(cfg, trunk_weights=path)
    with pytest.raises(CheckpointError, match="not found"):
        create_model(cfg, trunk_weights=tmp_path / "nope.safetensors")
