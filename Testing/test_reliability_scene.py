"""Reliability on real MRML nodes with the real worker and the shipped demo model: after a run the input
volume's voxels and geometry are bit-identical (raw bytes of the vtkImageData scalars, dimensions,
spacing, origin, and the IJK-to-RAS matrix as exact float64 bytes); a worker killed mid-run (SIGKILL) or a
cancel leaves the scene as it was: no output node, no half-filled node, the input untouched, the private
temporary folder removed. Research use, not for diagnosis.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time

import numpy as np
import pytest
import vtk
from conftest import CLINICAL, Worker, add_volume, real_worker_skip_reason, temp_leftovers
from MMXAISlicerLib import nodes
from MMXAISlicerLib.logic import RunError
from vtk.util.numpy_support import vtk_to_numpy

pytestmark = pytest.mark.skipif(real_worker_skip_reason() is not None, reason=str(real_worker_skip_reason()))


def exact_state(node) -> dict:
    """Everything that makes up the volume's voxels and geometry, bit for bit."""
    image = node.GetImageData()
    scalars = image.GetPointData().GetScalars()
    arr = vtk_to_numpy(scalars)
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    matrix = np.array([m.GetElement(i, j) for i in range(4) for j in range(4)], dtype=np.float64)
    return {"voxels": hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest(),
            "dtype": str(arr.dtype), "components": scalars.GetNumberOfComponents(),
            "dims": image.GetDimensions(), "image_spacing": image.GetSpacing(), "image_origin": image.GetOrigin(),
            "ijk_to_ras": matrix.tobytes().hex(), "spacing": node.GetSpacing(), "origin": node.GetOrigin(),
            "name": node.GetName()}


def scene_state(scene) -> list[tuple[str, str]]:
    return sorted((scene.GetNthNode(i).GetID(), scene.GetNthNode(i).GetClassName())
                  for i in range(scene.GetNumberOfNodes()))


@pytest.fixture
def real():
    return Worker("real")


def test_input_volume_bit_identical_after_a_real_run(scene, tmp_path, real):
    vol = add_volume(scene, shape_kji=(6, 48, 40), blob_ijk=(20, 24, 3))
    before = exact_state(vol)
    out = real.logic(scene, tmp_path).run(vol, CLINICAL, str(real.checkpoint), device="cpu", timeout=300,
                                          metrics=[])
    assert out.label_node is not None and out.heatmap_node is not None
    assert exact_state(vol) == before
    assert temp_leftovers(tmp_path) == []


@pytest.mark.parametrize("how", ["sigkill", "cancel"])
def test_worker_killed_or_cancelled_mid_run_leaves_the_scene_as_it_was(scene, tmp_path, real, how):
    vol = add_volume(scene, shape_kji=(6, 48, 40), blob_ijk=(20, 24, 3))
    before, nodes_before = exact_state(vol), scene_state(scene)
    logic = real.logic(scene, tmp_path)
    seen: list[dict] = []
    job = logic.start(vol, CLINICAL, str(real.checkpoint), device="cpu", on_event=seen.append, metrics=[])
    deadline = time.monotonic() + 300
    acted = False
    while not job.finished:
        job.poll(0.02)
        assert time.monotonic() < deadline, "the worker did not finish"
        if not acted and job.fraction > 0.0 and any(e.get("type") == "progress" for e in seen):
            acted = True
            if how == "sigkill":
                os.kill(job.runner.pid, signal.SIGKILL)  # a crash: the worker dies without a word
            else:
                job.cancel()
    assert acted, "the run ended before it could be interrupted"
    if how == "sigkill":
        # SIGKILL does not say who sent it (the out-of-memory killer, a user): the panel says what happened
        assert job.state == "failed" and isinstance(job.error, RunError) and job.error.kind == "killed"
        message = str(job.error)
        assert "signal 9 (SIGKILL)" in message and "out-of-memory killer or by a user" in message, message
        assert "ran out of memory" not in message, message
    else:
        assert job.state == "cancelled"
    assert seen[-1]["type"] == "finished"
    assert scene_state(scene) == nodes_before, "no output node, half-filled or not, may remain"
    assert nodes.find_outputs(scene, vol.GetID()) == {}
    assert exact_state(vol) == before
    assert temp_leftovers(tmp_path) == []
