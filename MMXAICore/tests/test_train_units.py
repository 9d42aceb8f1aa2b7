"""Config resolution, schedule, early stopping, state serialisation (safetensors + JSON), RNG, devices."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch

from mmxai_core.train.config import ConfigError, TrainConfig, resolve_config
from mmxai_core.train.device import DeviceError, Runtime, make_runtime, resolve_amp, resolve_device
from mmxai_core.train.early_stopping import EarlyStopping
from mmxai_core.train.loop import class_weights_from_labels
from mmxai_core.train.schedule import WarmupCosineSchedule, warmup_cosine
from mmxai_core.train.state import (RunFolder, RunFolderError, capture_rng, load_training_state,
                                    optimizer_from_state, optimizer_to_state, restore_rng, save_training_state)


# ---------------------------------------------------------------------------------------------- config
def test_overrides_are_typed_and_dotted(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model: {preset: tiny, embed_dim: 32}\noptim:\n  lr: 1e-3\ntrain: {epochs: 7}\n")
    cfg = resolve_config(f, {"optim.lr": "3e-4", "train.batch_size": "4", "preprocess.output_size_hw": "96,96",
                             "augment.scale": "[0.8, 1.2]", "train.restore_best": "false",
                             "model.dropout": "null"})
    assert cfg.optim.lr == 3e-4 and cfg.train.epochs == 7 and cfg.train.batch_size == 4
    assert cfg.model.embed_dim == 32 and cfg.preprocess.output_size_hw == (96, 96)
    assert cfg.augment.scale == (0.8, 1.2) and cfg.train.restore_best is False and cfg.model.dropout is None
    again = resolve_config(cfg.to_dict())
    assert again.to_dict() == cfg.to_dict() and again.fingerprint() == cfg.fingerprint()
    import yaml

    assert yaml.safe_load(cfg.to_yaml()) == cfg.to_dict()


@pytest.mark.parametrize("overrides, message", [
    ({"optim.lrr": "1"}, "unknown config key 'optim.lrr' (did you mean 'optim.lr'?)"),
    ({"optimm.lr": "1"}, "unknown config key 'optimm.lr'"),
    ({"train.epochs": "2.5"}, "config 'train.epochs': expected an integer"),
    ({"optim.lr": "fast"}, "config 'optim.lr': expected a number"),
    ({"train.amp": "fp8"}, "config 'train.amp': must be one of"),
    ({"preprocess.n4": "maybe"}, "ImagePreprocessConfig.n4"),
    ({"model.variant": "magic"}, "config 'model.variant'"),
    ({"data.test_fraction": "0"}, "config 'data.test_fraction'"),
])
def test_bad_overrides_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as err:
        resolve_config(None, overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_unknown_section_in_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("optimiser: {lr: 1}\n")
    with pytest.raises(ConfigError, match="unknown config section 'optimiser' \\(did you mean 'optim'\\?\\)"):
        resolve_config(f)


def test_fingerprint_ignores_runtime_keys_only():
    base = TrainConfig().fingerprint()
    assert resolve_config(None, {"train.device": "cpu", "train.stop_after_epochs": "1", "train.threads": "1",
                                 "data.loader_workers": "2"}).fingerprint() == base
    assert resolve_config(None, {"optim.lr": "1e-3"}).fingerprint() != base
    assert resolve_config(None, {"train.seed": "1"}).fingerprint() != base


# ---------------------------------------------------------------------------------------------- schedule, stopping
def test_warmup_cosine_shape():
    total, warm = 20, 4
    m = [warmup_cosine(s, total, warm, 0.1) for s in range(total + 2)]
    assert m[:4] == [0.25, 0.5, 0.75, 1.0] and m[4] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(m[4:], m[5:]))                   # non-increasing after warm-up
    assert m[12] == pytest.approx(0.1 + 0.9 * 0.5)                      # half-way through the cosine
    assert m[-1] == 0.1 and min(m) == pytest.approx(0.1)
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    sched = WarmupCosineSchedule(opt, total, warm, 0.1)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0025)
    for _ in range(7):
        sched.step()
    other = WarmupCosineSchedule(torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=0.01), total, warm, 0.1)
    other.load_state_dict(sched.state_dict())
    assert other.lr == sched.lr == pytest.approx(0.01 * m[7])


def test_early_stopping_patience_and_min_delta():
    es = EarlyStopping(patience=2, min_delta=0.01)
    assert es.update(1.0, 1) and not es.update(0.995, 2) and not es.should_stop   # not better by min_delta
    assert es.update(0.9, 3) and es.best_epoch == 3
    assert not es.update(0.95, 4) and not es.update(0.91, 5) and es.should_stop
    clone = EarlyStopping(2, 0.01)
    clone.load_state_dict(json.loads(json.dumps(es.state_dict())))
    assert clone.state_dict() == es.state_dict() and clone.should_stop
    with pytest.raises(ValueError, match="not finite"):
        es.update(math.nan, 6)


def test_class_weights_inverse_frequency():
    w = class_weights_from_labels(np.array([0, 0, 0, 1]), 2)
    assert w.tolist() == pytest.approx([4 / 6, 4 / 2])
    with pytest.raises(Exception, match="no training case"):
        class_weights_from_labels(np.array([0, 0]), 2)


# ---------------------------------------------------------------------------------------------- state
def _trained_optimizer():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    opt = torch.optim.AdamW([{"params": model[0].parameters(), "weight_decay": 0.1},
                             {"params": model[1].parameters(), "weight_decay": 0.0}], lr=1e-2, betas=(0.8, 0.99))
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(5, 4)).pow(2).sum().backward()
        opt.step()
    return model, opt


def test_optimizer_state_round_trip_without_pickle(tmp_path):
    model, opt = _trained_optimizer()
    tensors, meta = optimizer_to_state(opt)
    assert all(isinstance(v, torch.Tensor) for v in tensors.values())
    json.dumps(meta)  # plain JSON
    state_dir = tmp_path / "state"
    save_training_state(state_dir, 3, {"model": model.state_dict(), "optimizer": tensors},
                        {"optimizer": meta, "step": 9}, refs={"best_model": "model"})
    assert sorted(p.name for p in state_dir.iterdir()) == ["model-e0003.safetensors", "optimizer-e0003.safetensors",
                                                            "state.json"]
    loaded_meta, groups = load_training_state(state_dir)
    assert loaded_meta["files"]["best_model"] == "model-e0003.safetensors" and loaded_meta["epoch"] == 3
    model2, opt2 = _trained_optimizer()
    for p in model2.parameters():
        p.data.zero_()
    opt2 = torch.optim.AdamW([{"params": model2[0].parameters(), "weight_decay": 0.5},
                              {"params": model2[1].parameters()}], lr=1.0)
    model2.load_state_dict(groups["model"])
    optimizer_from_state(opt2, groups["optimizer"], loaded_meta["optimizer"])
    assert opt2.param_groups[0]["betas"] == (0.8, 0.99) and opt2.param_groups[0]["weight_decay"] == 0.1
    x = torch.randn(5, 4)
    for m, o in ((model, opt), (model2, opt2)):
        o.zero_grad()
        m(x).pow(2).sum().backward()
        o.step()
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)
    # next epoch keeps the referenced best file and drops the rest; a modified file is refused
    save_training_state(state_dir, 4, {"model": model.state_dict(), "optimizer": tensors}, {"optimizer": meta},
                        refs={"best_model": "model-e0003.safetensors"})
    assert sorted(p.name for p in state_dir.iterdir()) == ["model-e0003.safetensors", "model-e0004.safetensors",
                                                            "optimizer-e0004.safetensors", "state.json"]
    (state_dir / "model-e0003.safetensors").write_bytes(b"x" * 10)
    with pytest.raises(Exception, match="sha256"):
        load_training_state(state_dir)
    assert not any(p.suffix in (".pt", ".pth", ".pkl") for p in state_dir.iterdir())


def test_rng_capture_restore_is_json_and_exact():
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    state = json.loads(json.dumps(capture_rng()))
    first = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    restore_rng(state)
    second = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], second[0]) and np.array_equal(first[1], second[1]) and first[2] == second[2]


def test_run_folder_identity_rules(tmp_path):
    ident = {"manifest_sha256": "m", "config_sha256": "c"}
    folder = RunFolder(tmp_path / "run")
    assert folder.decide(ident, resume=False, force=False) == "new"
    with pytest.raises(RunFolderError, match="no run to resume"):
        folder.decide(ident, resume=True, force=False)
    folder.write_json("run.json", {"format": "mmxai.train_run", **ident, "status": "running"})
    assert folder.decide(ident, resume=True, force=False) == "resume"
    with pytest.raises(RunFolderError, match="unfinished run.*--resume"):
        folder.decide(ident, resume=False, force=False)
    with pytest.raises(RunFolderError, match=r"different run \(configuration differ"):
        folder.decide({**ident, "config_sha256": "x"}, resume=False, force=False)
    with pytest.raises(RunFolderError, match=r"manifest fingerprint differ.*--resume continues only"):
        folder.decide({**ident, "manifest_sha256": "x"}, resume=True, force=False)
    assert folder.decide({**ident, "config_sha256": "x"}, resume=False, force=True) == "restart"
    (folder.path / "notes.txt").write_text("mine")
    (folder.path / "log.csv").write_text("x")
    folder.clear()
    assert sorted(p.name for p in folder.path.iterdir()) == ["notes.txt"]
    with pytest.raises(RunFolderError, match="holds no mmxai-train run"):
        folder.decide(ident, resume=False, force=False)


# ---------------------------------------------------------------------------------------------- device
def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_amp("auto", torch.device("cpu")) is None
    with pytest.raises(DeviceError, match="needs a CUDA device"):
        resolve_amp("bf16", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="^CUDA requested but not available"):
            resolve_device("cuda")
        assert resolve_device("auto").type in ("cpu", "mps")
    rt = make_runtime("cpu")
    assert isinstance(rt, Runtime) and rt.is_main_process and rt.main_only(lambda: 5) == 5
    assert Runtime(torch.device("cpu"), rank=1, world_size=2).main_only(lambda: 5) is None
    assert "fp32" in rt.describe()


def test_crash_while_saving_keeps_the_previous_epoch(tmp_path, monkeypatch):
    import safetensors.torch as st

    model, opt = _trained_optimizer()
    tensors, meta = optimizer_to_state(opt)
    state_dir = tmp_path / "state"
    save_training_state(state_dir, 1, {"model": model.state_dict(), "optimizer": tensors}, {"optimizer": meta})
    real = st.save_file
    calls = []

    def dying(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) == 2:  # the optimizer file of epoch 2: the process "dies" here
            raise KeyboardInterrupt
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(st, "save_file", dying)
    with pytest.raises(KeyboardInterrupt):
        save_training_state(state_dir, 2, {"model": model.state_dict(), "optimizer": tensors}, {"optimizer": meta})
    loaded_meta, groups = load_training_state(state_dir)
    assert loaded_meta["epoch"] == 1 and set(groups) == {"model", "optimizer"}
    assert not list(state_dir.glob("*.tmp*"))
