"""Checkpoint I/O: safetensors + JSON, atomic replace, and every refusal (nothing is ever unpickled)."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch

from mmxai_core.errors import CheckpointError
from mmxai_core.model import FORMAT_VERSION, create_model, load_checkpoint, model_config, save_checkpoint
from mmxai_core.model import checkpoint as ckpt

FIELDS = [("age", "numeric", 0), ("grade", "categorical", 3)]


def small_config(**kw):
    base = dict(embed_dim=32, depth=1, mil_hidden=16, trunk="resnet10t", trunk_out_index=2, image_size=64,
                dropout=0.0)
    base.update(kw)
    return model_config("tiny", clinical_fields=FIELDS, **base)


def inputs():
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 1, 64, 64, generator=gen)
    mask = torch.tensor([[True, True, True], [True, False, False]])
    return images, mask, torch.tensor([True, False]), torch.tensor([[0.3, 2.0], [0.0, 1.0]]), \
        torch.tensor([[False, False], [True, False]])


@pytest.fixture(scope="module")
def model():
    m = create_model(small_config(), seed=0)
    # move the BatchNorm running statistics away from their defaults so the round trip must carry them
    m.train()
    with torch.no_grad():
        m(*inputs())
    return m.eval()


@pytest.fixture
def saved(tmp_path, model):
    return save_checkpoint(tmp_path / "ckpt", model, {"classes": ["benign", "malignant"], "threshold": 0.4})


def test_round_trip_gives_identical_outputs(saved, model):
    loaded, meta = load_checkpoint(saved)
    assert not loaded.training and loaded.config == model.config
    assert sorted(os.listdir(saved)) == ["metadata.json", "weights.safetensors"]
    assert meta["classes"] == ["benign", "malignant"] and meta["threshold"] == 0.4
    assert meta["format"] == "mmxai-checkpoint" and meta["format_version"] == FORMAT_VERSION
    assert meta["package_version"] and meta["model_config"]["embed_dim"] == 32
    with torch.no_grad():
        a, b = model(*inputs()), loaded(*inputs())
    torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=0)
    torch.testing.assert_close(a.cross_attention, b.cross_attention, rtol=0, atol=0)


def test_saving_again_replaces_and_leaves_no_debris(saved, model):
    save_checkpoint(saved, model, {"threshold": 0.6})
    assert load_checkpoint(saved)[1]["threshold"] == 0.6
    assert sorted(os.listdir(saved.parent)) == ["ckpt"]


def test_failed_save_keeps_the_old_checkpoint(saved, model, monkeypatch):
    def broken(folder, model, extra):
        (folder / "weights.safetensors").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "_write_contents", broken)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(saved, model, {"threshold": 0.9})
    monkeypatch.undo()
    assert load_checkpoint(saved)[1]["threshold"] == 0.4
    assert sorted(os.listdir(saved.parent)) == ["ckpt"]


def test_save_refuses_to_replace_other_folders_and_bad_metadata(tmp_path, model):
    other = tmp_path / "home"
    other.mkdir()
    (other / "thesis.docx").write_text("precious")
    with pytest.raises(CheckpointError, match="not an MMXAI checkpoint"):
        save_checkpoint(other, model, {})
    assert (other / "thesis.docx").exists()
    with pytest.raises(ValueError, match="written by save_checkpoint"):
        save_checkpoint(tmp_path / "c", model, {"model_config": {}})
    with pytest.raises(ValueError, match="JSON"):
        save_checkpoint(tmp_path / "c", model, {"x": object()})


def _edit_meta(folder, **changes):
    path = folder / "metadata.json"
    meta = json.loads(path.read_text())
    for key, value in changes.items():
        if key == "model_config":
            meta[key].update(value)
        else:
            meta[key] = value
    path.write_text(json.dumps(meta))


def test_refuses_missing_or_truncated_weights(saved):
    weights = saved / "weights.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"weights\.safetensors: truncated"):
        load_checkpoint(saved)
    weights.write_bytes(data[:5])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(saved)
    corrupt = bytearray(data)
    corrupt[-10] ^= 0xFF
    weights.write_bytes(bytes(corrupt))
    with pytest.raises(CheckpointError, match="weights_sha256"):
        load_checkpoint(saved)
    weights.unlink()
    (saved / "model.pt").write_bytes(b"\x80\x04")
    with pytest.raises(CheckpointError, match=r"weights file missing.*model\.pt"):
        load_checkpoint(saved)


def test_refuses_bad_metadata(saved):
    meta = saved / "metadata.json"
    good = meta.read_text()
    meta.write_text(good[:-20])
    with pytest.raises(CheckpointError, match=r"metadata\.json: not valid JSON \(line"):
        load_checkpoint(saved)
    meta.write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="expected a JSON object"):
        load_checkpoint(saved)
    meta.write_text(good)
    _edit_meta(saved, format_version=99)
    with pytest.raises(CheckpointError, match="unknown format_version 99"):
        load_checkpoint(saved)
    meta.write_text(good)
    _edit_meta(saved, format="something-else")
    with pytest.raises(CheckpointError, match="'format'"):
        load_checkpoint(saved)
    meta.write_text(good)
    _edit_meta(saved, model_config={"colour": "red"})
    with pytest.raises(CheckpointError, match="invalid model_config.*colour"):
        load_checkpoint(saved)
    meta.unlink()
    with pytest.raises(CheckpointError, match=r"metadata\.json: metadata file missing"):
        load_checkpoint(saved)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(saved.parent / "nowhere")


@pytest.mark.parametrize("change, message", [
    ({"embed_dim": 48}, "wrong shape"),
    ({"variant": "concat"}, r"missing .*unexpected"),
    ({"clinical_fields": [{"name": "age", "kind": "numeric", "cardinality": 0}]}, "wrong shape"),
])
def test_refuses_weights_of_another_config(saved, change, message):
    _edit_meta(saved, model_config=change)
    with pytest.raises(CheckpointError, match=rf"does not fit the model_config.*{message}"):
        load_checkpoint(saved)


@pytest.mark.parametrize("name", ["model.pt", "model.pth", "model.pkl", "model.dat"])
def test_refuses_pickles_without_unpickling(tmp_path, name, monkeypatch):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    path = tmp_path / name
    if name == "model.pt":
        torch.save({"w": torch.zeros(2)}, path)  # zip archive
    else:
        path.write_bytes(pickle.dumps(Evil(), protocol=4))
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load called"))
    with pytest.raises(CheckpointError, match="never loaded|refused without unpickling"):
        load_checkpoint(path)
    assert not marker.exists()


def test_refuses_a_pickle_disguised_as_safetensors(saved):
    marker = saved.parent / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    (saved / "weights.safetensors").write_bytes(pickle.dumps(Evil(), protocol=2))
    with pytest.raises(CheckpointError, match="pickle file.*refused without unpickling"):
        load_checkpoint(saved)
    torch.save({"w": torch.zeros(2)}, saved / "weights.safetensors")
    with pytest.raises(CheckpointError, match="zip file"):
        load_checkpoint(saved)
    assert not marker.exists()


def test_a_file_of_the_checkpoint_may_be_handed_in(saved):
    model, _ = load_checkpoint(saved / "metadata.json")
    assert model.config.embed_dim == 32
