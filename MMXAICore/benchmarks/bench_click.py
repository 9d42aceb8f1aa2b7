"""Click to overlay: the worker's wall time for one case, from process start to result (research use only).

    python MMXAICore/benchmarks/bench_click.py [--repeats 5] [--threads-compare 2] [--json out.json]

What the Slicer module does on Run: start ``python -m mmxai_core.worker request.json`` and wait for its
``result`` event. Here: the shipped demo model, a synthetic 128 x 128 2D NRRD, all clinical fields
entered, no extra metrics (coherence only, as the panel's default). Per run (a fresh process each time):

* ``wall``: process start (Popen) to process exit, after the result event;
* ``started``: process start to the worker's ``started`` event (interpreter + worker module);
  ``result``: process start to the ``result`` event; ``exit``: from the result event to process exit;
* from ``result.json`` ``timings_s``: ``load_model`` (importing torch and timm, reading the weights),
  ``load`` (reading the image), ``preprocess``, ``predict``, ``gradcam``, ``shapley``, ``metrics``, ``write``;
* start-up = started + load_model; work = wall - start-up.

Runs of the worker as it is (``default``: CPU threads = cores - 1, ``os._exit`` after the result) and as
it was before this benchmark's fixes (``before``: ``MMXAI_THREADS=--threads-compare``, torch's default on
a 2-core machine, and ``MMXAI_WORKER_SLOW_EXIT=1``, the interpreter's normal teardown) alternate (side by
side), median of ``--repeats`` after one warm-up run of each. One more run under
``python -X importtime`` names the imports that dominate start-up (cumulative import time, microseconds,
from that run: importtime itself slows imports a little). Research use only - not for diagnosis.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _demo_case import DEMO_MODEL, write_case
from common import write_json

PREFIX = "@@MMXAI@@ "
STEPS = ("load_model", "load", "preprocess", "predict", "gradcam", "shapley", "metrics", "write")
WATCH = ("torch", "timm", "torchvision", "SimpleITK", "matplotlib", "scipy.stats", "pandas", "safetensors",
         "mmxai_core.worker.run", "pydicom", "shap")


def one_run(request: Path, env: dict, importtime: bool = False) -> dict:
    cmd = [sys.executable] + (["-X", "importtime"] if importtime else []) + ["-m", "mmxai_core.worker", str(request)]
    errfile = tempfile.TemporaryFile(mode="w+")           # a file, not a pipe: it can never fill up
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errfile, text=True, env=env)
    started = result_at = None
    result = None
    for line in proc.stdout:
        if line.startswith(PREFIX):
            ev = json.loads(line[len(PREFIX):])
            if ev["event"] == "started" and started is None:
                started = time.perf_counter() - t0
            elif ev["event"] in ("result", "error"):
                result = ev
                result_at = time.perf_counter() - t0
    proc.wait()
    wall = time.perf_counter() - t0
    errfile.seek(0)
    err = errfile.read()
    errfile.close()
    if not result or result["event"] != "result":
        raise RuntimeError(f"worker failed: {result} {err[-2000:]}")
    timings = json.loads(Path(result["result"]).read_text())["timings_s"]
    row = {"wall_s": wall, "started_s": started, "result_s": result_at, "exit_s": wall - result_at,
           **{k: timings.get(k, 0.0) for k in STEPS}}
    row["startup_s"] = started + row["load_model"]
    row["work_s"] = wall - row["startup_s"]
    if importtime:
        row["imports_us"] = _imports(err)
    return row


def _imports(stderr: str) -> dict:
    found = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = line.split("|")
        name = parts[-1].strip()
        if name in WATCH and name not in found:
            try:
                found[name] = int(parts[1].strip())
            except ValueError:
                pass
    return found


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads-compare", type=int, default=2)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mmxai-click-") as tmp:
        tmp = Path(tmp)
        image, clinical = write_case(tmp / "in")
        envs = {"default": {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MMXAI_THREADS")}}
        envs["before"] = {**envs["default"], "MMXAI_THREADS": str(args.threads_compare), "MMXAI_WORKER_SLOW_EXIT": "1"}
        runs = {k: [] for k in envs}
        for i in range(args.repeats + 1):
            for name, env in envs.items():
                out = tmp / f"out-{name}-{i}"
                req = tmp / f"req-{name}-{i}.json"
                req.write_text(json.dumps({"protocol": 1, "image": str(image), "clinical": clinical,
                                           "checkpoint": str(DEMO_MODEL), "device": "cpu",
                                           "output_dir": str(out), "options": {}}))
                row = one_run(req, env)
                if i:                       # run 0 warms the file cache
                    runs[name].append(row)
        req = tmp / "req-imp.json"
        req.write_text(json.dumps({"protocol": 1, "image": str(image), "clinical": clinical,
                                   "checkpoint": str(DEMO_MODEL), "device": "cpu", "output_dir": str(tmp / "imp"),
                                   "options": {}}))
        imports = one_run(req, envs["default"], importtime=True)["imports_us"]
    med = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
    for name, m in med.items():
        print(f"{name:10s} wall {m['wall_s']:.2f} s = start-up {m['startup_s']:.2f} s + work {m['work_s']:.2f} s  "
              + " ".join(f"{k} {m[k]:.2f}" for k in STEPS))
    write_json(args.json, {"repeats": args.repeats, "model": str(DEMO_MODEL.relative_to(DEMO_MODEL.parents[2])),
                           "image": "synthetic 128x128 2D NRRD", "median": med, "runs": runs,
                           "imports_us": imports, "cores": os.cpu_count()})


if __name__ == "__main__":
    main()
