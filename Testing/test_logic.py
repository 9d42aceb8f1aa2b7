"""MMXAISlicerLogic on real MRML nodes (slicer-core), reaching the core only through the worker process."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import slicer
import vtk
from conftest import (CLINICAL, add_volume, fingerprint, np_matrix, oblique_matrix, ras_of_ijk,
                      temp_leftovers)
from MMXAISlicerLib import nodes
from MMXAISlicerLib.logic import MMXAISlicerLogic, RunError


def _count_nodes(scene) -> int:
    return scene.GetNumberOfNodes()


# ------------------------------------------------------------------------------ full run, both workers
def test_run_geometry_table_chart_rerun_input_untouched(scene, tmp_path, worker):
    """One case end to end: outputs on exactly the input's grid, table and chart, idempotent re-run, input
    untouched, temporary folder removed."""
    vol = add_volume(scene)
    before = fingerprint(vol)
    logic = worker.logic(scene, tmp_path)
    events = []
    threads = set()

    def on_event(e):
        events.append(e["type"])
        threads.add(threading.current_thread() is threading.main_thread())

    out = logic.run(vol, CLINICAL, str(worker.checkpoint), device="cpu", on_event=on_event, timeout=300,
                    metrics=[])
    assert threads == {True}, "events must be delivered on the calling (GUI) thread"
    assert "progress" in events and events[-1] == "finished"
    lab, cont = out.label_node, out.heatmap_node
    assert lab.IsA("vtkMRMLLabelMapVolumeNode") and cont.IsA("vtkMRMLScalarVolumeNode")
    for n in (lab, cont):
        assert np.array_equal(np_matrix(n), np_matrix(vol)), "IJK-to-RAS must be exactly the input's"
        assert n.GetImageData().GetDimensions() == vol.GetImageData().GetDimensions()
    labels = slicer.util.arrayFromVolume(lab)
    heat = slicer.util.arrayFromVolume(cont)
    assert heat.shape == labels.shape and 0.0 <= heat.min() and heat.max() <= 1.0 + 1e-6
    bins = out.result.bins
    expected = np.where(heat >= bins.threshold, 1 + np.searchsorted(np.asarray(bins.edges[1:-1]), heat, "right"), 0)
    assert labels.dtype.kind in "ui" and np.mean(labels != expected) < 1e-3, "labels are the bins of the map"
    if worker.is_fake:
        assert labels.max() == bins.n_labels - 1
    colors = out.nodes[nodes.ROLE_COLORS]
    assert colors.GetNumberOfColors() == out.result.bins.n_labels
    rgba = [0.0] * 4
    colors.GetColor(0, rgba)
    assert rgba[3] == 0.0, "bin 0 must be transparent"
    colors.GetColor(colors.GetNumberOfColors() - 1, rgba)
    assert rgba[3] > 0.0
    assert lab.GetDisplayNode().GetColorNodeID() == colors.GetID()
    # table: field, value entered, contribution
    table = out.table_node.GetTable()
    names = [table.GetColumn(i).GetName() for i in range(table.GetNumberOfColumns())]
    assert {"Field", "Value entered", "Contribution"} <= set(names)
    rows = out.result.shapley_rows
    assert table.GetNumberOfRows() == len(rows) > 0
    fields = [table.GetValueByName(r, "Field").ToString() for r in range(table.GetNumberOfRows())]
    assert sorted(fields) == sorted(r.label for r in rows)
    contrib = [table.GetValueByName(r, "Contribution").ToDouble() for r in range(table.GetNumberOfRows())]
    raises = [table.GetValueByName(r, "Raises").ToDouble() for r in range(table.GetNumberOfRows())]
    lowers = [table.GetValueByName(r, "Lowers").ToDouble() for r in range(table.GetNumberOfRows())]
    assert np.allclose(np.add(raises, lowers), contrib) and min(raises) >= 0 >= max(lowers)
    # chart: two bar series (positive red, negative blue) on the table, with names
    chart = out.chart_node
    assert chart.GetNumberOfPlotSeriesNodes() == 2
    series = [chart.GetNthPlotSeriesNode(i) for i in range(2)]
    assert {s.GetYColumnName() for s in series} == {"Raises", "Lowers"}
    assert all(s.GetPlotType() == slicer.vtkMRMLPlotSeriesNode.PlotTypeBar for s in series)
    assert all(s.GetTableNodeID() == out.table_node.GetID() and s.GetLabelColumnName() == "Label" for s in series)
    assert series[0].GetColor() != series[1].GetColor()
    assert "raises" in series[0].GetName() and "lowers" in series[1].GetName()
    assert "research use" in out.text.lower() and "not for diagnosis" in out.text.lower()
    assert out.nodes[nodes.ROLE_TEXT].GetText() == out.text
    assert fingerprint(vol) == before, "the input volume must not be modified"
    assert temp_leftovers(tmp_path) == [], "the private temporary folder must be removed"

    # re-run on the same input: same nodes updated, none added
    ids = {r: n.GetID() for r, n in out.nodes.items()}
    count = _count_nodes(scene)
    out2 = logic.run(vol, {**CLINICAL, "age": 63}, str(worker.checkpoint), device="cpu", timeout=300,
                     metrics=[])
    assert {r: n.GetID() for r, n in out2.nodes.items()} == ids
    assert _count_nodes(scene) == count
    assert fingerprint(vol) == before
    assert temp_leftovers(tmp_path) == []


def test_outputs_grouped_under_the_study(scene, tmp_path, fake_worker):
    worker = fake_worker
    vol = add_volume(scene, shape_kji=(6, 24, 24), blob_ijk=(12, 12, 3))
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    patient = sh.CreateSubjectItem(sh.GetSceneItemID(), "Patient 1")
    study = sh.CreateStudyItem(patient, "MR study")
    item = sh.GetItemByDataNode(vol) or sh.CreateItem(study, vol)
    sh.SetItemParent(item, study)
    logic = worker.logic(scene, tmp_path)
    out = logic.run(vol, {}, str(worker.checkpoint), device="cpu", timeout=300)
    assert out.note == ""
    folder = sh.GetItemParent(sh.GetItemByDataNode(out.label_node))
    assert sh.GetItemParent(folder) == study and sh.GetItemName(folder).startswith("MMXAI")
    for role in (nodes.ROLE_LABEL, nodes.ROLE_HEATMAP, nodes.ROLE_TABLE, nodes.ROLE_CHART, nodes.ROLE_TEXT):
        assert sh.GetItemParent(sh.GetItemByDataNode(out.nodes[role])) == folder
    logic.run(vol, {}, str(worker.checkpoint), device="cpu", timeout=300)
    children = vtk_children(sh, study)
    assert sum(1 for c in children if sh.GetItemName(c).startswith("MMXAI")) == 1, "one folder, reused"


def vtk_children(sh, item):
    import vtk

    ids = vtk.vtkIdList()
    sh.GetItemChildren(item, ids)
    return [ids.GetId(i) for i in range(ids.GetNumberOfIds())]


# --------------------------------------------------------------------------------- fake worker only
def test_hot_spot_lands_at_the_same_ras_point(scene, tmp_path, fake_worker):
    """The fake worker puts its heatmap maximum at a known RAS point (computed on the input grid in LPS, written
    as NRRD, read back by a storage node): it must land on the voxel at that RAS point in the scene."""
    m = oblique_matrix(spacing=(0.6, 1.4, 4.0), origin=(-40.0, 22.0, -13.0), angles=(0.5, 0.3, -0.7))
    vol = add_volume(scene, shape_kji=(10, 30, 36), matrix=m, blob_ijk=(5, 5, 2))
    target_ijk = (27, 18, 6)
    ras = ras_of_ijk(vol, target_ijk)
    logic = fake_worker.logic(scene, tmp_path, MMXAI_FAKE_WORKER_HOTSPOT_RAS=",".join(f"{v:.6f}" for v in ras))
    out = logic.run(vol, CLINICAL, str(fake_worker.checkpoint), timeout=120)
    heat = slicer.util.arrayFromVolume(out.heatmap_node)
    k, j, i = np.unravel_index(int(np.argmax(heat)), heat.shape)
    assert (i, j, k) == target_ijk
    assert np.allclose(ras_of_ijk(out.heatmap_node, (i, j, k)), ras, atol=1e-6)
    labels = slicer.util.arrayFromVolume(out.label_node)
    assert labels[k, j, i] == labels.max()
    # default hot spot: the brightest voxel of the input (the blob)
    out = MMXAISlicerLogic(scene, worker_command=fake_worker.command, temp_root=logic.temp_root).run(
        vol, {}, str(fake_worker.checkpoint), timeout=120)
    heat = slicer.util.arrayFromVolume(out.heatmap_node)
    k, j, i = np.unravel_index(int(np.argmax(heat)), heat.shape)
    assert (i, j, k) == (5, 5, 2)


@pytest.mark.parametrize("mode,kind,words", [
    ("input_error", "input", "could not use this input"),
    ("internal_error", "worker", "worker failed"),
    ("crash", "crash", "stopped unexpectedly"),
    ("oom", "oom", "out of memory"),
    ("garbage", "crash", "could not be understood"),
    ("wrong_grid", "result", "not on the input's grid"),
])
def test_worker_failures_leave_nothing(scene, tmp_path, fake_worker, mode, kind, words):
    vol = add_volume(scene, shape_kji=(4, 16, 16), blob_ijk=(8, 8, 2))
    before, count = fingerprint(vol), _count_nodes(scene)
    logic = fake_worker.logic(scene, tmp_path, MMXAI_FAKE_WORKER_MODE=mode)
    with pytest.raises(RunError) as err:
        logic.run(vol, CLINICAL, str(fake_worker.checkpoint), timeout=120)
    assert err.value.kind == kind and words in str(err.value)
    assert _count_nodes(scene) == count, "nothing half-made in the scene"
    assert fingerprint(vol) == before
    assert temp_leftovers(tmp_path) == []


def test_failed_rerun_keeps_previous_outputs(scene, tmp_path, fake_worker):
    vol = add_volume(scene, shape_kji=(4, 16, 16), blob_ijk=(8, 8, 2))
    out = fake_worker.logic(scene, tmp_path).run(vol, CLINICAL, str(fake_worker.checkpoint), timeout=120)
    count, ids = _count_nodes(scene), sorted(n.GetID() for n in out.nodes.values())
    with pytest.raises(RunError):
        fake_worker.logic(scene, tmp_path, MMXAI_FAKE_WORKER_MODE="wrong_grid").run(
            vol, CLINICAL, str(fake_worker.checkpoint), timeout=120)
    assert _count_nodes(scene) == count
    assert sorted(n.GetID() for n in logic_outputs(scene, vol).values()) == ids


def logic_outputs(scene, vol):
    return MMXAISlicerLogic(scene).outputs_for(vol)


def test_cancel_kills_the_process_tree_and_removes_the_folder(scene, tmp_path, fake_worker):
    import os
    import time

    vol = add_volume(scene, shape_kji=(4, 16, 16), blob_ijk=(8, 8, 2))
    pidfile = tmp_path / "pids.txt"
    logic = fake_worker.logic(scene, tmp_path, MMXAI_FAKE_WORKER_MODE="hang",
                              MMXAI_FAKE_WORKER_PIDFILE=str(pidfile))
    count = _count_nodes(scene)
    finished = []
    job = logic.start(vol, CLINICAL, str(fake_worker.checkpoint), on_event=lambda e: finished.append(e)
                      if e["type"] == "finished" else None)
    deadline = time.monotonic() + 60
    while not pidfile.exists() or job.fraction == 0.0:
        job.poll(0.05)
        assert time.monotonic() < deadline, "the fake worker did not start"
    worker_pid, child_pid = (int(x) for x in pidfile.read_text().split())
    assert temp_leftovers(tmp_path) != []
    job.cancel()
    assert job.state == "cancelled" and finished and finished[-1]["state"] == "cancelled", (job.state, finished)
    assert temp_leftovers(tmp_path) == [], temp_leftovers(tmp_path)
    for _ in range(250):
        job.poll(0.02)
        if not (_alive(worker_pid) or _alive(child_pid)):
            break
    assert not _alive(worker_pid) and not _alive(child_pid), (
        "cancel must kill the worker and its children: " + _ps(worker_pid, child_pid))
    assert _count_nodes(scene) == count
    assert os.path.exists(str(fake_worker.checkpoint))


def _ps(*pids) -> str:
    import subprocess

    return subprocess.run(["ps", "-o", "pid,ppid,pgid,stat,cmd", "-p", ",".join(map(str, pids))],
                          capture_output=True, text=True).stdout


def _alive(pid: int) -> bool:
    import os

    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False


# ---------------------------------------------------------------------------------- bad input
def test_bad_inputs_have_clear_messages_and_start_nothing(scene, tmp_path, fake_worker):
    logic = fake_worker.logic(scene, tmp_path)
    ckpt = str(fake_worker.checkpoint)

    def fails(words, vol, clinical=None, model=ckpt, kind=None, device="auto"):
        count = _count_nodes(scene)
        with pytest.raises(RunError) as err:
            logic.run(vol, clinical or {}, model, device=device, timeout=30)
        assert words in str(err.value), str(err.value)
        if kind:
            assert err.value.kind == kind
        assert _count_nodes(scene) == count, "nothing added to the scene"

    fails("Select an input volume", None)
    rgb = slicer.util.addVolumeFromArray(np.zeros((3, 8, 8, 3), np.uint8), name="photo",
                                         nodeClassName="vtkMRMLVectorVolumeNode")
    fails("single-channel", rgb)
    frames = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "dce 5 frames")  # like a MultiVolume
    img = vtk.vtkImageData()
    img.SetDimensions(8, 8, 3)
    img.AllocateScalars(vtk.VTK_FLOAT, 5)
    frames.SetAndObserveImageData(img)
    fails("values per voxel", frames)
    lab = slicer.util.addVolumeFromArray(np.zeros((3, 8, 8), np.uint8), name="seg",
                                         nodeClassName="vtkMRMLLabelMapVolumeNode")
    fails("labelmap", lab)
    vol = add_volume(scene, shape_kji=(3, 8, 8), blob_ijk=(4, 4, 1))
    browser, seq = slicer.vtkMRMLSequenceBrowserNode(), slicer.vtkMRMLSequenceNode()
    scene.RegisterNodeClass(browser)
    for n in (browser, seq):
        scene.AddNode(n)
    browser.SetAndObserveMasterSequenceNodeID(seq.GetID())
    browser.AddProxyNode(vol, seq, False)
    fails("4D sequence", vol)
    scene.RemoveNode(browser)
    not_ckpt = tmp_path / "holiday-photos"
    not_ckpt.mkdir()
    (not_ckpt / "a.txt").write_text("x")
    fails("is not an MMXAI checkpoint", vol, model=str(not_ckpt), kind="checkpoint")
    fails("folder not found", vol, model=str(tmp_path / "missing"), kind="checkpoint")
    fails("out of range", vol, clinical={"age": 150}, kind="clinical")
    fails("not a known category", vol, clinical={"breast_density": "Z"}, kind="clinical")
    fails("unknown field", vol, clinical={"shoe_size": 42}, kind="clinical")
    fails("Unknown device", vol, device="tpu")
    # worker missing / failing to start
    missing = MMXAISlicerLogic(scene, worker_command=[str(tmp_path / "no-such-python"), "-m", "x"],
                               temp_root=logic.temp_root)
    with pytest.raises(RunError) as err:
        missing.run(vol, {}, ckpt, timeout=30)
    assert err.value.kind == "start" and "could not be started" in str(err.value)
    notexec = tmp_path / "python-not-executable"
    notexec.write_text("#!/bin/sh\n")
    with pytest.raises(RunError, match="permission denied"):
        MMXAISlicerLogic(scene, worker_command=[str(notexec)], temp_root=logic.temp_root).run(vol, {}, ckpt)
    assert temp_leftovers(tmp_path) == []


def test_unknown_values_are_sent_as_unknown(scene, tmp_path, fake_worker):
    vol = add_volume(scene, shape_kji=(3, 12, 12), blob_ijk=(6, 6, 1))
    out = fake_worker.logic(scene, tmp_path).run(
        vol, {"age": "unknown", "breast_density": None, "family_history": "", "ca15_3": "12.5"},
        str(fake_worker.checkpoint), timeout=120)
    by_name = {r.name: r for r in out.result.shapley_rows}
    assert by_name["age"].unknown and by_name["breast_density"].unknown and by_name["family_history"].unknown
    assert not by_name["ca15_3"].unknown and by_name["ca15_3"].entered.startswith("12.5")


def test_overlay_display_and_export(scene, tmp_path, fake_worker):
    vol = add_volume(scene, shape_kji=(4, 16, 16), blob_ijk=(8, 8, 2))
    comp = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
    logic = fake_worker.logic(scene, tmp_path)
    out = logic.run(vol, CLINICAL, str(fake_worker.checkpoint), timeout=120)
    logic.show_overlay(out, vol, opacity=0.4)
    assert comp.GetBackgroundVolumeID() == vol.GetID() and comp.GetLabelVolumeID() == out.label_node.GetID()
    assert comp.GetLabelOpacity() == pytest.approx(0.4)
    with pytest.raises(RunError, match="is an MMXAI output"):
        logic.run(out.heatmap_node, {}, str(fake_worker.checkpoint))
    logic.set_overlay_opacity(out, 0.8)
    assert comp.GetLabelOpacity() == pytest.approx(0.8)
    logic.set_display_threshold(out, 0.5)
    colors, rgba = out.nodes[nodes.ROLE_COLORS], [0.0] * 4
    for k in range(1, colors.GetNumberOfColors()):
        colors.GetColor(k, rgba)
        assert (rgba[3] == 0.0) == (out.result.bins.edges[k] <= 0.5 + 1e-9)
    assert out.heatmap_node.GetDisplayNode().GetLowerThreshold() == pytest.approx(0.5)
    folder = logic.export_report(out, tmp_path, vol.GetName())
    names = sorted(p.name for p in folder.iterdir())
    assert {"report.html", "overlay.png", "shap.png", "result.json", "heatmap_bins.json", "result.txt",
            "NOTICE.txt"} <= set(names)
    assert "not for diagnosis" in (folder / "result.txt").read_text()
