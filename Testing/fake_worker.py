"""TEST DOUBLE - a fake ``python -m mmxai_core.worker REQUEST.json`` for the Slicer-side tests.

NOT the product and never shipped. It speaks the real worker protocol (the core's own
``mmxai_core.worker.protocol.encode_event``), writes the result files of ``MMXAICore/docs/WORKER.md`` with the
core's own writers (``mmxai_core.io.write_image``, ``mmxai_core.explain.binning``), but computes no model:
the "heatmap" is a Gaussian blob (sigma 6 mm) around a known point, the prediction and Shapley values are
made-up numbers derived from the request. It runs in the core's environment (.venv), like the real worker.

Environment variables (test controls):

* ``MMXAI_FAKE_WORKER_MODE``: ``ok`` (default) | ``input_error`` | ``internal_error`` | ``crash`` | ``oom`` |
  ``hang`` (starts a child process, then prints progress forever: for Cancel) | ``garbage`` (damaged
  protocol line) | ``wrong_grid`` (heatmap on a shifted grid) | ``slow`` (progress over ~1.5 s) |
  ``no_metrics`` (refuses requested trust metrics the way a core without them does)
* ``MMXAI_FAKE_WORKER_HOTSPOT_RAS``: ``x,y,z`` in RAS mm where the blob is centred (default: the brightest
  voxel of the input).
* ``MMXAI_FAKE_WORKER_PIDFILE``: in ``hang`` mode, the child's pid is written there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from mmxai_core.worker.protocol import PREFIX, WorkerRequest, encode_event

MODE = os.environ.get("MMXAI_FAKE_WORKER_MODE", "ok")


def emit(event: str, **fields) -> None:
    print(encode_event(event, **fields), flush=True)


def fail(message: str, kind: str) -> None:
    emit("error", message=message, kind=kind)
    sys.exit(2 if kind == "input" else 3)


def main(argv: list[str]) -> int:
    emit("started", pid=os.getpid())
    # Noise that a real worker's libraries print: warnings and a progress bar on stderr (merged).
    print("UserWarning: this is library noise, not a protocol line", file=sys.stderr, flush=True)
    print("loading: 100%|##########| 3/3 [00:00<00:00]", file=sys.stderr, flush=True)
    if len(argv) != 1:
        fail("usage: fake_worker.py REQUEST.json", "input")
    req = WorkerRequest.read(argv[0])
    if MODE == "input_error":
        fail(f"{req.image}: the image cannot be used (test double: input_error)", "input")
    wanted = list((req.options or {}).get("metrics") or [])
    if MODE == "no_metrics" and wanted:
        fail(f"--metrics: {', '.join(wanted)} not available in this installation (test double); run without "
             "--metrics", "input")
    if MODE == "internal_error":
        fail("RuntimeError: something broke inside (test double: internal_error)", "internal")
    if MODE == "crash":
        print("Segmentation fault (test double)", flush=True)
        os._exit(139)
    if MODE == "oom":
        print("RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB (test double)", flush=True)
        os._exit(1)
    if MODE == "garbage":
        print(PREFIX + "{not json", flush=True)
        os._exit(3)
    if MODE == "hang":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        pidfile = os.environ.get("MMXAI_FAKE_WORKER_PIDFILE")
        if pidfile:  # written atomically: the test reads it while we run
            Path(pidfile + ".tmp").write_text(f"{os.getpid()} {child.pid}")
            os.replace(pidfile + ".tmp", pidfile)
        i = 0
        while True:
            emit("progress", step="waiting", fraction=min(0.99, i / 1000), message="test double: hanging")
            i += 1
            time.sleep(0.1)

    meta_path = Path(req.checkpoint) / "metadata.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        fail(f"{req.checkpoint}: not an MMXAI checkpoint", "input")
    if meta.get("format") != "mmxai-checkpoint":
        fail(f"{meta_path}: 'format' is not 'mmxai-checkpoint'", "input")

    from mmxai_core.explain.binning import HeatmapBins, write_bins_json
    from mmxai_core.io import Image, read_image, write_image

    emit("progress", step="load", fraction=0.1, message="reading the image")
    img = read_image(req.image)
    if MODE == "slow":
        for k in range(5):
            time.sleep(0.3)
            emit("progress", step="predict", fraction=0.1 + 0.15 * k, message=f"test double: step {k + 1}/5")

    # voxel centres in LPS (mm): origin + direction @ (spacing * index)
    z, y, x = np.indices(img.array.shape, dtype=np.float64)
    ijk = np.stack([x.ravel(), y.ravel(), z.ravel()])
    lps = (np.asarray(img.direction) @ (np.asarray(img.spacing)[:, None] * ijk)).T + np.asarray(img.origin)
    hot = os.environ.get("MMXAI_FAKE_WORKER_HOTSPOT_RAS")
    if hot:
        r, a, s = (float(v) for v in hot.split(","))
        centre = np.array([-r, -a, s])  # RAS -> LPS
    else:
        centre = lps[int(np.argmax(img.array.ravel()))]
    d2 = ((lps - centre) ** 2).sum(axis=1)
    heat = np.exp(-d2 / (2 * 6.0 ** 2)).reshape(img.array.shape).astype(np.float32)
    heat /= max(float(heat.max()), 1e-6)
    origin = tuple(img.origin)
    if MODE == "wrong_grid":
        origin = (origin[0] + 5.0, origin[1], origin[2])
    out = Path(req.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    bins = HeatmapBins()
    write_image(Image(heat, spacing=img.spacing, origin=origin, direction=img.direction), out / "heatmap.nrrd")
    write_image(Image(bins.label(heat), spacing=img.spacing, origin=origin, direction=img.direction),
                out / "heatmap_label.nrrd")
    write_bins_json(out / "heatmap_bins.json", bins, {"normalisation": {"mode": "test double"}})
    emit("progress", step="gradcam", fraction=0.6, message="heatmap written")

    schema = (meta.get("clinical_preprocessor") or {}).get("schema") or {}
    classes = meta.get("classes") or ["benign", "malignant"]
    fields = []
    weights = [0.12, -0.07, 0.05, -0.03, 0.09, -0.02, 0.004, -0.006, 0.002]
    for i, f in enumerate(schema.get("fields") or []):
        name = f["name"]
        known = name in req.clinical and req.clinical[name] is not None
        value = req.clinical.get(name)
        unit = f" {f['unit']}" if f.get("unit") and known else ""
        entered = (f"{value:g}" if isinstance(value, float) else str(value).lower() if isinstance(value, bool)
                   else str(value)) + unit if known else "unknown"
        fields.append({"name": name, "label": f.get("label") or name, "entered": entered, "unknown": not known,
                       "value": weights[i % len(weights)] if known else 0.0})
    base = 0.40
    fx = min(0.98, max(0.02, base + sum(f["value"] for f in fields) + 0.2))
    pred = classes[1] if fx >= 0.45 else classes[0]
    result = {
        "notice": "Research use only - not for diagnosis.",
        "model": {"name": "fake-model (test double)", "version": "0.0", "classes": classes},
        "prediction": {"class": pred, "probabilities": {classes[0]: round(1 - fx, 4), classes[1]: round(fx, 4)},
                       "threshold": 0.45, "explained_class": classes[1]},
        "shapley": {"method": "exact", "quantity": "probability of the explained class; removed field = unknown",
                    "base_value": base, "fx": fx, "fields": fields},
        "modality_split": {"image": 0.2, "clinical": round(fx - base - 0.2, 4),
                           "corners": {"both": fx, "image_only": base + 0.2, "clinical_only": fx - 0.2,
                                       "none": base}},
        "coherence": {"score": 0.8, "definition": "test double"},
        "heatmap": {"method": "test double", "max": float(heat.max())},
        "timings_s": {"load": 0.01},
        "files": {"heatmap": "heatmap.nrrd", "heatmap_label": "heatmap_label.nrrd",
                  "heatmap_bins": "heatmap_bins.json", "overlay": "overlay.png", "shap_plot": "shap.png",
                  "report": "report.html"},
    }
    metrics = {"stability": {"ssim": 0.91, "pearson": 0.95},
               "faithfulness": {"deletion_auc": 0.21, "random_deletion_auc": 0.48}}
    if wanted:
        result["metrics"] = {k: v for k, v in metrics.items() if k in wanted}
    _write_pngs(out, img.array, heat, fields, classes[1])
    (out / "report.html").write_text("<html><body><h1>MMXAI report (test double)</h1><p>Research use only - "
                                     "not for diagnosis.</p></body></html>", encoding="utf-8")
    (out / "result.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    emit("progress", step="shapley", fraction=0.95, message="Shapley values")
    emit("result", result=str(out / "result.json"), files=result["files"])
    return 0


def _write_pngs(out: Path, arr: np.ndarray, heat: np.ndarray, fields: list, explained: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = int(np.unravel_index(int(np.argmax(heat)), heat.shape)[0])
    fig, ax = plt.subplots(figsize=(3, 3), dpi=80)
    ax.imshow(arr[k], cmap="gray")
    ax.imshow(np.ma.masked_less(heat[k], 0.2), cmap="turbo", alpha=0.5, vmin=0, vmax=1)
    ax.axis("off")
    fig.savefig(out / "overlay.png")
    plt.close(fig)
    known = [f for f in fields if not f["unknown"]]
    fig, ax = plt.subplots(figsize=(4, 0.3 * max(3, len(known)) + 0.8), dpi=80)
    vals = [f["value"] for f in known]
    ax.barh([f"{f['label']} = {f['entered']}" for f in known], vals,
            color=["#cc2626" if v >= 0 else "#2659cc" for v in vals])
    ax.set_xlabel(f"change in p({explained})")
    ax.set_title("Shapley values (test double)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "shap.png")
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
