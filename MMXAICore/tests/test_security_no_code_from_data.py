"""Security: no code path unpickles or evaluates data; explanation works with the network blocked;
manifest paths stay inside the manifest's folder unless the caller allows otherwise.

The source scan walks the syntax tree of every module of mmxai_core and of the Slicer module (comments
and docstrings cannot fool it) and refuses: ``pickle`` / ``cPickle`` / ``dill`` / ``cloudpickle`` /
``joblib`` / ``shelve`` / ``marshal`` loads, ``pandas.read_pickle``, ``torch.load`` without
``weights_only=True``, ``numpy.load`` with ``allow_pickle`` not literally False, ``yaml.load`` without a
safe loader, ``yaml.unsafe_load`` / ``full_load``, and ``eval`` / ``exec``. A planted example checks that
the scan finds each kind. Research use, not for diagnosis.
"""

from __future__ import annotations

import ast
import json
import textwrap
from pathlib import Path

import pytest
from reliability_support import one_thread_env, run_cli
from test_explain_cli_support import tiny_run

import mmxai_core

ROOTS = [Path(mmxai_core.__file__).parent, Path(__file__).resolve().parents[2] / "MMXAISlicer"]
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _kw(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def unsafe_calls(source: str) -> list[str]:
    """``line: what`` for every construct of the module docstring's list found in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for name in names:
                if name.split(".")[0] in PICKLE_MODULES:
                    found.append(f"{node.lineno}: import {name}")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        last = name.rsplit(".", 1)[-1]
        head = name.split(".")[0]
        if head in PICKLE_MODULES or last in ("read_pickle", "unsafe_load", "full_load", "unsafe_load_all"):
            found.append(f"{node.lineno}: {name}()")
        elif name in ("eval", "exec", "builtins.eval", "builtins.exec"):
            found.append(f"{node.lineno}: {name}()")
        elif name.endswith("torch.load"):
            wo = _kw(node, "weights_only")
            if not (isinstance(wo, ast.Constant) and wo.value is True):
                found.append(f"{node.lineno}: torch.load without weights_only=True")
        elif name in ("np.load", "numpy.load"):
            ap = _kw(node, "allow_pickle")
            if ap is not None and not (isinstance(ap, ast.Constant) and ap.value is False):
                found.append(f"{node.lineno}: {name}(allow_pickle=...)")
        elif name in ("yaml.load", "yaml.load_all"):
            loader = _kw(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            if loader is None or _dotted(loader).rsplit(".", 1)[-1] not in SAFE_YAML_LOADERS:
                found.append(f"{node.lineno}: {name} without a safe loader")
    return found


PLANTED = textwrap.dedent('''
    import pickle
    from joblib import load
    import torch, numpy as np, yaml, pandas as pd
    """torch.load(x) in a docstring is fine"""
    pickle.loads(b"")
    torch.load("a.pt")
    torch.load("a.pt", weights_only=False)
    torch.load("a.pt", weights_only=True)
    np.load("a.npy", allow_pickle=True)
    np.load("a.npy", allow_pickle=False)
    np.load("a.npy")
    yaml.load(text)
    yaml.load(text, Loader=yaml.SafeLoader)
    yaml.unsafe_load(text)
    pd.read_pickle("x")
    eval("1")
''')


def test_the_scan_finds_each_planted_construct():
    found = unsafe_calls(PLANTED)
    lines = sorted(int(f.split(":")[0]) for f in found)
    # import pickle, from joblib, pickle.loads, torch.load x2, np.load(True), yaml.load, unsafe_load,
    # read_pickle, eval
    assert lines == [2, 3, 6, 7, 8, 10, 13, 15, 16, 17], found


def test_no_code_path_unpickles_or_evaluates_data():
    files = [p for root in ROOTS for p in root.rglob("*.py")]
    assert len(files) > 50
    found = {str(p): hits for p in files if (hits := unsafe_calls(p.read_text(encoding="utf-8")))}
    assert not found, json.dumps(found, indent=1)


# --------------------------------------------------------------------------------------------- network
BLOCK_NETWORK = textwrap.dedent('''
    """Loaded at start-up (sitecustomize): every attempt to reach the network fails and is recorded."""
    import os, socket
    _LOG = os.environ["MMXAI_NET_LOG"]
    open(_LOG + ".loaded", "w").close()

    def _refuse(*args, **kwargs):
        with open(_LOG, "a") as fh:
            fh.write(repr(args[1:] if args else kwargs)[:200] + "\\n")
        raise OSError("network access blocked by the test")

    socket.socket.connect = _refuse
    socket.socket.connect_ex = _refuse
    socket.socket.sendto = _refuse
    socket.create_connection = _refuse
    socket.getaddrinfo = _refuse
''')


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_run(tmp_path_factory)


def test_explanation_works_with_the_network_blocked(tiny, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCK_NETWORK)
    log = tmp_path / "net.log"
    import os

    env = one_thread_env(MMXAI_NET_LOG=str(log), PYTHONPATH=os.pathsep.join(
        [str(site), *filter(None, [os.environ.get("PYTHONPATH")])]), NO_PROXY="*")
    proc = run_cli("mmxai-explain", "--model", tiny.run, "--image", tiny.image("mr"), "--clinical", '{"age": 60}',
                   "--out", tmp_path / "out", "--metrics", "stability", env=env)
    assert Path(f"{log}.loaded").exists(), "the network block was not loaded"
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "out" / "result.json").read_text())["prediction"]["class"] in tiny_classes(tiny)
    assert not log.exists() or log.read_text() == "", f"network attempts: {log.read_text()}"


def tiny_classes(tiny) -> list[str]:
    return json.loads((tiny.run / "checkpoint" / "metadata.json").read_text())["classes"]


# --------------------------------------------------------------------------------------- manifest paths
def test_manifest_paths_cannot_leave_its_folder_unless_allowed(tmp_path):
    import SimpleITK as sitk

    from mmxai_core.data.manifest import load_manifest
    from mmxai_core.data.schema import ClinicalSchema
    from mmxai_core.errors import ManifestError

    outside = tmp_path / "outside.nrrd"
    sitk.WriteImage(sitk.Image([4, 4, 1], sitk.sitkUInt8), str(outside))
    inner = tmp_path / "study"
    (inner / "img").mkdir(parents=True)
    for i in range(4):
        sitk.WriteImage(sitk.Image([4, 4, 1], sitk.sitkUInt8), str(inner / "img" / f"{i}.nrrd"))
    rows = [f"p{i},img/{i}.nrrd,{'ab'[i % 2]}" for i in range(4)]
    schema = ClinicalSchema.from_dict({"fields": [{"name": "age", "type": "numeric"}]})
    for escape in ("../outside.nrrd", str(outside), "img/../../outside.nrrd"):
        csv = inner / "m.csv"
        csv.write_text("patient_id,image,label\n" + "\n".join(rows + [f"p9,{escape},a"]) + "\n")
        with pytest.raises(ManifestError, match="leaves the manifest's folder"):
            load_manifest(csv, schema)
        m = load_manifest(csv, schema, allow_outside=True)  # the caller's explicit choice
        assert Path(m.table["image"].iloc[-1]) == outside
    csv.write_text("patient_id,image,label\n" + "\n".join(rows) + "\n")
    assert len(load_manifest(csv, schema)) == 4
