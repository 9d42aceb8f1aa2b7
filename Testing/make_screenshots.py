"""Make the screenshots in Resources/Screenshots/ (run in .venv-slicer; needs the core's .venv for the worker).

    QT_QPA_PLATFORM=offscreen .venv-slicer/bin/python Testing/make_screenshots.py [--worker auto|real|fake]

1. The core writes a small synthetic cohort (``mmxai-synth``, fake patients) and converts one breast MR series
   to NRRD; the lesion mask's centre is noted.
2. The volume is loaded into a slicer-core MRML scene (patient / study in the subject hierarchy) and the
   MMXAI panel (PyQt5, offscreen) runs the case through the worker: the real one
   (``python -m mmxai_core.worker`` + the shipped demo model) when both exist, else the TEST-DOUBLE worker
   (``Testing/fake_worker.py``, heatmap centred on the lesion), and the captions say so.
3. ``overlay.png``: Slicer's own slice pipeline (``vtkMRMLSliceLogic``: reslicing through the IJK-to-RAS matrices,
   label layer blended over the background) renders the axial slice through the heatmap maximum, offscreen.
   ``panel.png``: ``QWidget.grab()`` of the panel with the results.
Research use only - not for diagnosis.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import conftest as C  # noqa: E402  (paths, worker commands, scene set-up)
import numpy as np  # noqa: E402
import slicer  # noqa: E402
import vtk  # noqa: E402

PREPARE = r"""
import csv, json, sys
import numpy as np
from pathlib import Path
from mmxai_core.io import read_image, write_image
synth, out = Path(sys.argv[1]), Path(sys.argv[2])
rows = [r for r in csv.DictReader(open(synth / "manifest.csv")) if r["dataset"] == "synth-mr" and r["mask"]]
rows.sort(key=lambda r: (r["label"] != "malignant", r["patient_id"]))
row = rows[0]
img = read_image(synth / row["image"])
mask = read_image(synth / row["mask"])
write_image(img, out, compress=False)
z, y, x = np.nonzero(mask.array)
ijk = np.array([x.mean(), y.mean(), z.mean()])
lps = np.asarray(img.direction) @ (np.asarray(img.spacing) * ijk) + np.asarray(img.origin)
print(json.dumps({"row": row, "ras": [-lps[0], -lps[1], lps[2]], "age": img.meta.get("PatientAge")}))
"""


def prepare_case(tmp: Path) -> dict:
    core_bin = Path(C.CORE_PYTHON).parent
    synth = tmp / "synth"
    subprocess.run([str(core_bin / "mmxai-synth"), "--out", str(synth), "--n", "16", "--kind", "3d", "--seed", "3",
                    "--quiet"], check=True)
    out = subprocess.run([C.CORE_PYTHON, "-c", PREPARE, str(synth), str(tmp / "case.nrrd")], check=True,
                         capture_output=True, text=True)
    case = json.loads(out.stdout.strip().splitlines()[-1])
    case["nrrd"] = str(tmp / "case.nrrd")
    return case


def caption(png: Path, lines: list[str], width: int) -> None:
    from PyQt5.QtCore import QRect, Qt
    from PyQt5.QtGui import QColor, QFont, QImage, QPainter

    img = QImage(str(png))
    band = 22 * len(lines) + 12
    out = QImage(img.width(), img.height() + band, QImage.Format_RGB32)
    out.fill(QColor(20, 20, 20))
    p = QPainter(out)
    p.drawImage(0, 0, img)
    p.setPen(QColor(235, 235, 235))
    f = QFont()
    f.setPixelSize(15)
    p.setFont(f)
    for i, text in enumerate(lines):
        if i == 0:
            p.setPen(QColor(255, 120, 120))
        else:
            p.setPen(QColor(235, 235, 235))
        p.drawText(QRect(10, img.height() + 6 + 22 * i, width - 20, 22), Qt.AlignLeft | Qt.AlignVCenter, text)
    p.end()
    out.save(str(png))


def render_slice(scene, background, label, ras, path: Path, size: int = 560) -> None:
    app_logic = slicer.vtkMRMLApplicationLogic()
    app_logic.SetMRMLScene(scene)
    slice_logic = slicer.vtkMRMLSliceLogic()
    slice_logic.SetMRMLScene(scene)
    slice_node = slice_logic.AddSliceNode("Red")
    slice_node.SetOrientationToAxial()
    slice_node.SetDimensions(size, size, 1)
    comp = slice_logic.GetSliceCompositeNode()
    comp.SetBackgroundVolumeID(background.GetID())
    comp.SetLabelVolumeID(label.GetID())
    comp.SetLabelOpacity(0.55)
    slice_logic.FitSliceToAll()
    fov = list(slice_node.GetFieldOfView())
    slice_node.SetFieldOfView(fov[0] * 0.92, fov[1] * 0.92, fov[2])
    slice_node.JumpSliceByOffsetting(*ras)  # the slice through the heatmap maximum, the whole volume in view
    conn = slice_logic.GetImageDataConnection()
    writer = vtk.vtkPNGWriter()
    writer.SetFileName(str(path))
    rgb = vtk.vtkImageExtractComponents()  # RGBA -> RGB; the PNG writer handles VTK's bottom-up rows
    rgb.SetComponents(0, 1, 2)
    rgb.SetInputConnection(conn)
    writer.SetInputConnection(rgb.GetOutputPort())
    writer.Write()


def _ckpt_name(p: Path) -> str:
    return f"{p.parent.name}/{p.name}" if p.name == "checkpoint" else p.name


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(C.ROOT / "Resources" / "Screenshots"))
    ap.add_argument("--worker", choices=["auto", "real", "fake"], default="auto")
    ap.add_argument("--checkpoint", help="run the real worker with this checkpoint instead of the demo model")
    args = ap.parse_args(argv)
    if args.checkpoint:
        C.DEMO_MODEL = Path(args.checkpoint)
        args.worker = "real"
    reason = C.real_worker_skip_reason()
    kind = args.worker if args.worker != "auto" else ("real" if reason is None else "fake")
    if kind == "real" and reason:
        print(f"cannot use the real worker: {reason}", file=sys.stderr)
        return 2
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    from PyQt5.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    from MMXAISlicerLib import nodes
    from MMXAISlicerLib.params import ParameterStore, get_parameter_node
    from MMXAISlicerLib.presenter import PanelPresenter
    from MMXAISlicerLib.view import PanelView, PyQt5Toolkit, SceneVolumeSelector

    with tempfile.TemporaryDirectory(prefix="mmxai-shots-") as t:
        tmp = Path(t)
        case = prepare_case(tmp)
        row = case["row"]
        scene = C.new_scene()
        vol = nodes.read_volume_file(case["nrrd"], "vtkMRMLScalarVolumeNode")
        vol.SetName(f"{row['patient_id']} breast MR (synthetic)")
        scene.AddNode(vol)
        vol.CreateDefaultDisplayNodes()
        vol.GetDisplayNode().AutoWindowLevelOn()
        sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
        study = sh.CreateStudyItem(sh.CreateSubjectItem(sh.GetSceneItemID(), f"{row['patient_id']} (synthetic)"),
                                   "MR breast")
        sh.CreateItem(study, vol)
        worker = C.Worker(kind)
        if kind == "fake":
            worker.env = {"MMXAI_FAKE_WORKER_HOTSPOT_RAS": ",".join(f"{v:.4f}" for v in case["ras"])}
        tk = PyQt5Toolkit()
        logic = worker.logic(scene, tmp)
        selector = SceneVolumeSelector(tk, logic)
        view = PanelView(tk, selector)
        store = ParameterStore(get_parameter_node(scene))
        if kind == "fake" or args.checkpoint:
            store.set("ModelChoice", "custom")
            store.set("ModelPath", str(worker.checkpoint))
        presenter = PanelPresenter(view, logic, store)
        view.bind(presenter)
        presenter.initialize()
        selector.set_current_node_id(vol.GetID())
        presenter.on_volume_changed(vol.GetID())
        from MMXAISlicerLib.presenter import _view_value

        for f in presenter.fields:  # the case's clinical row, as a user would type it
            raw = row.get(f.name)
            if raw not in (None, ""):
                presenter.on_field_changed(f.name, raw)
            view.set_field_value(f.name, _view_value(f, presenter.values.get(f.name)))
        view.device_combo.setCurrentIndex(view.device_combo.count() - 1)  # CPU
        presenter.on_run()
        t0 = time.monotonic()
        while presenter.running:
            app.processEvents()
            time.sleep(0.02)
            if time.monotonic() - t0 > 600:
                raise SystemExit("the run did not finish")
        app.processEvents()
        if presenter.outputs is None:
            raise SystemExit(f"the run failed: {view.status.text()}")
        outputs = presenter.outputs
        heat = slicer.util.arrayFromVolume(outputs.heatmap_node)
        k, j, i = np.unravel_index(int(np.argmax(heat)), heat.shape)
        ras = C.ras_of_ijk(outputs.heatmap_node, (i, j, k))
        overlay = out_dir / "overlay.png"
        # the slice through the lesion centre (where a reader looks); the caption says how far away the
        # heatmap's maximum is, so a miss is visible rather than hidden by choosing the maximum's slice
        render_slice(scene, vol, outputs.label_node, case["ras"], overlay)
        miss_mm = float(np.linalg.norm(np.asarray(ras, float) - np.asarray(case["ras"], float)))
        who = ("TEST-DOUBLE worker (placeholder heatmap)" if kind == "fake" else
               f"Real worker, checkpoint {_ckpt_name(Path(args.checkpoint))}" if args.checkpoint else "Real worker + demo model")
        pred = outputs.result.prediction
        p_cls = (pred.get("probabilities") or {}).get(pred.get("class"), float("nan"))
        caption(overlay, ["Research use only - not for diagnosis.",
                          "MMXAI heatmap bins on a synthetic breast MR (axial),",
                          "drawn by Slicer's slice pipeline (label layer over the MR);",
                          f"slice through the lesion centre; heatmap maximum {miss_mm:.0f} mm from it.",
                          f"{who}:", f"predicted {pred.get('class')}, p = {p_cls:.2f}"], 560)
        view.widget.show()
        app.processEvents()
        view.widget.resize(460, max(1500, view.widget.sizeHint().height() + 40))
        app.processEvents()
        view.widget.grab().save(str(out_dir / "panel.png"))
        print(json.dumps({"worker": kind, "overlay": str(overlay), "panel": str(out_dir / "panel.png"),
                          "heatmap_max_ras": [round(float(v), 2) for v in ras],
                          "lesion_ras": [round(float(v), 2) for v in case["ras"]]}))
        view.widget.close()
        selector.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
