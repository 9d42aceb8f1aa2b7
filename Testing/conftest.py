"""Shared fixtures of the Slicer-side tests (run in .venv-slicer: slicer-core, PyQt5, numpy).

The core is reached only through the worker process, run with the core's Python
(``$MMXAI_CORE_PYTHON``, default ``.venv/bin/python``). Two workers:

* ``fake``: ``Testing/fake_worker.py``, a TEST DOUBLE speaking the same protocol and writing the same files;
* ``real``: ``python -m mmxai_core.worker`` with the shipped demo checkpoint, used when
  ``MMXAICore/src/mmxai_core/worker/__main__.py`` and ``MMXAISlicer/Resources/DemoModel`` exist (else
  those test variants are skipped, saying why).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

ROOT = Path(__file__).resolve().parent.parent
TESTING = ROOT / "Testing"
MODULE_DIR = ROOT / "MMXAISlicer"
sys.path.insert(0, str(MODULE_DIR))
sys.path.insert(0, str(TESTING))

import slicer  # noqa: E402  (slicer-core)
import vtk  # noqa: E402

CORE_PYTHON = os.environ.get("MMXAI_CORE_PYTHON") or str(ROOT / ".venv" / "bin" / "python")
FAKE_WORKER = TESTING / "fake_worker.py"
FAKE_CHECKPOINT = TESTING / "data" / "fake_checkpoint"
SHIPPED_DEMO_MODEL = MODULE_DIR / "Resources" / "DemoModel"
# MMXAI_TEST_CHECKPOINT: run the real-worker variants with another checkpoint (e.g. a fresh mmxai-train run)
DEMO_MODEL = Path(os.environ.get("MMXAI_TEST_CHECKPOINT") or SHIPPED_DEMO_MODEL)
REAL_WORKER_MAIN = ROOT / "MMXAICore" / "src" / "mmxai_core" / "worker" / "__main__.py"


def real_worker_skip_reason() -> str | None:
    if not REAL_WORKER_MAIN.is_file():
        return "real worker not there yet (MMXAICore/src/mmxai_core/worker/__main__.py missing)"
    if not ((DEMO_MODEL / "metadata.json").is_file() and (DEMO_MODEL / "weights.safetensors").is_file()):
        return f"demo checkpoint not shipped yet ({DEMO_MODEL} has no weights.safetensors + metadata.json)"
    if not Path(CORE_PYTHON).exists():
        return f"core Python {CORE_PYTHON} missing"
    return None


class Worker:
    """Which worker a test runs against: command (request path appended), checkpoint, extra env."""

    def __init__(self, kind: str):
        self.kind = kind
        if kind == "fake":
            self.command = [CORE_PYTHON, str(FAKE_WORKER)]
            self.checkpoint = FAKE_CHECKPOINT
        else:
            self.command = [CORE_PYTHON, "-m", "mmxai_core.worker"]
            self.checkpoint = DEMO_MODEL
        self.env: dict[str, str] = {}

    @property
    def is_fake(self) -> bool:
        return self.kind == "fake"

    def logic(self, scene, tmp_path, **env):
        from MMXAISlicerLib.logic import MMXAISlicerLogic

        root = tmp_path / "mmxai-temp"
        root.mkdir(exist_ok=True)
        return MMXAISlicerLogic(scene, worker_command=self.command, worker_env={**self.env, **env},
                                temp_root=root)


@pytest.fixture(params=["fake", "real"])
def worker(request):
    if request.param == "real":
        reason = real_worker_skip_reason()
        if reason:
            pytest.skip(reason)
    if not Path(CORE_PYTHON).exists():
        pytest.fail(f"the core's Python {CORE_PYTHON} is missing: run `make test` (it creates .venv)")
    return Worker(request.param)


@pytest.fixture
def fake_worker():
    if not Path(CORE_PYTHON).exists():
        pytest.fail(f"the core's Python {CORE_PYTHON} is missing: run `make test` (it creates .venv)")
    return Worker("fake")


def new_scene():
    scene = slicer.vtkMRMLScene()
    colors = slicer.vtkMRMLColorLogic()
    colors.SetMRMLScene(scene)
    scene._mmxai_color_logic = colors  # keep the logic alive with the scene
    slicer.mrmlScene = scene
    return scene


@pytest.fixture
def scene():
    s = new_scene()
    yield s
    s.Clear(1)


def oblique_matrix(spacing=(0.8, 1.1, 3.5), origin=(12.5, -30.2, 40.1), angles=(0.35, -0.2, 0.5)):
    """IJK-to-RAS: rotation (about x, y, z by ``angles`` rad) times anisotropic spacing, plus origin."""
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    m = np.eye(4)
    m[:3, :3] = rz @ ry @ rx @ np.diag(spacing)
    m[:3, 3] = origin
    return m


def vtk_matrix(m) -> vtk.vtkMatrix4x4:
    out = vtk.vtkMatrix4x4()
    for i in range(4):
        for j in range(4):
            out.SetElement(i, j, float(m[i][j]))
    return out


def np_matrix(node) -> np.ndarray:
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(i, j) for j in range(4)] for i in range(4)])


def add_volume(scene, shape_kji=(12, 32, 40), matrix=None, name="Oblique MR", blob_ijk=(25, 10, 7), seed=0,
               dtype=np.int16):
    """A scalar volume (array K, J, I) with noise and a bright blob at ``blob_ijk``, oblique geometry."""
    rng = np.random.default_rng(seed)
    arr = rng.normal(100, 10, size=shape_kji)
    k, j, i = np.indices(shape_kji)
    bi, bj, bk = blob_ijk
    arr += 400 * np.exp(-(((i - bi) * 0.8) ** 2 + ((j - bj) * 1.1) ** 2 + ((k - bk) * 3.5) ** 2) / (2 * 3.0 ** 2))
    m = oblique_matrix() if matrix is None else matrix
    node = slicer.util.addVolumeFromArray(arr.astype(dtype), ijkToRAS=vtk_matrix(m), name=name)
    return node


def ras_of_ijk(node, ijk) -> np.ndarray:
    return (np_matrix(node) @ np.array([*ijk, 1.0]))[:3]


def fingerprint(node) -> tuple:
    """Voxels (bytes hash), IJK-to-RAS and attributes of a volume node: to prove it was not modified."""
    import hashlib

    arr = slicer.util.arrayFromVolume(node)
    attrs = tuple(sorted((a, node.GetAttribute(a)) for a in node.GetAttributeNames()))
    return (hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest(), arr.shape, str(arr.dtype),
            tuple(np_matrix(node).ravel().round(12)), attrs, node.GetName(),
            node.GetStorageNodeID(), node.GetDisplayNodeID(), node.GetTransformNodeID())


def temp_leftovers(tmp_path) -> list:
    root = tmp_path / "mmxai-temp"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


CLINICAL = {"age": 57, "breast_density": "C", "family_history": True, "presentation": "palpable_lump",
            "ca15_3": 31.5}
