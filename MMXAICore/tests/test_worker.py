"""``python -m mmxai_core.worker`` end to end through :func:`mmxai_core.worker.client.run_worker`: a good
request (events, files, heatmap on the input's grid), a bad clinical value, a missing checkpoint, a worker
killed mid-run; and the stream discipline that keeps library noise off the protocol lines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from test_explain_cli_support import env_one_thread, tiny_run

from mmxai_core import RESEARCH_USE_NOTICE
from mmxai_core.io import read_image
from mmxai_core.worker.client import CRASH_MESSAGE, run_worker
from mmxai_core.worker.protocol import PREFIX, WorkerRequest, parse_line

STEPS = ("load", "preprocess", "predict", "gradcam", "shapley", "metrics", "write")
FILES = {"heatmap": "heatmap.nrrd", "heatmap_label": "heatmap_label.nrrd", "heatmap_bins": "heatmap_bins.json",
         "overlay": "overlay.png", "shap_plot": "shap.png", "report": "report.html"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_run(tmp_path_factory)


def request(tiny, out, **changes):
    fields = {"image": tiny.oblique_mr(), "checkpoint": tiny.run / "checkpoint", "output_dir": out,
              "clinical": {"age": 61, "breast_density": "C", "family_history": True, "presentation": None},
              "device": "cpu", "options": {}}
    fields.update(changes)
    return WorkerRequest(**fields)


def test_good_request_yields_a_result_on_the_inputs_grid(tiny, tmp_path):
    out = tmp_path / "out"
    seen = []
    outcome = run_worker(request(tiny, out), on_event=seen.append, timeout=300, env=env_one_thread())
    assert outcome.ok, (outcome.message, outcome.log[-5:])
    assert outcome.returncode == 0 and outcome.kind is None
    kinds = [e["event"] for e in seen]
    assert kinds[0] == "started" and kinds[-1] == "result" and kinds.count("result") == 1
    assert "error" not in kinds and seen[0]["pid"] > 0 and all(e["v"] == 1 for e in seen)
    progress = [e for e in seen if e["event"] == "progress"]
    assert [s for s in STEPS if s in {e["step"] for e in progress}] == list(STEPS)
    fractions = [e["fraction"] for e in progress]
    assert fractions == sorted(fractions) and 0 <= fractions[0] and fractions[-1] == 1.0

    assert outcome.files == FILES and outcome.result_path == str(out / "result.json")
    assert sorted(p.name for p in out.iterdir()) == sorted([*FILES.values(), "result.json"])  # no partial folder
    result = json.loads((out / "result.json").read_text())
    assert result["notice"] == RESEARCH_USE_NOTICE and result["files"] == FILES
    fields = {f["name"]: f for f in result["shapley"]["fields"]}
    assert fields["family_history"]["entered"] == "yes" and fields["presentation"]["unknown"]
    src, heat = read_image(tiny.oblique_mr()), read_image(out / "heatmap.nrrd")
    assert src.array.shape == heat.array.shape and src.array.shape[0] > 1
    np.testing.assert_allclose(heat.spacing, src.spacing, rtol=1e-6)
    np.testing.assert_allclose(heat.origin, src.origin, atol=1e-4)
    np.testing.assert_allclose(heat.direction, src.direction, atol=1e-6)
    assert not np.allclose(src.direction, np.eye(3))          # the oblique case: geometry really carried


def test_bad_clinical_value_is_an_input_error_naming_the_field(tiny, tmp_path):
    out = tmp_path / "out"
    outcome = run_worker(request(tiny, out, clinical={"age": 57, "breast_density": "Z"}), timeout=120,
                         env=env_one_thread())
    assert outcome.status == "error" and outcome.kind == "input" and outcome.returncode == 2
    assert "breast_density" in outcome.message and "\n" not in outcome.message
    assert [e["event"] for e in outcome.events] == ["started", "progress", "error"]
    assert not out.exists() or not any(out.iterdir())
    assert not any("Traceback" in line for line in outcome.log)


def test_missing_checkpoint_and_bad_request_are_input_errors(tiny, tmp_path):
    missing = run_worker(request(tiny, tmp_path / "o", checkpoint=tmp_path / "nowhere"), timeout=60,
                         env=env_one_thread())
    assert missing.status == "error" and missing.kind == "input" and missing.returncode == 2
    assert "nowhere" in missing.message and "not found" in missing.message
    (tmp_path / "req.json").write_text(json.dumps({"protocol": 1, "image": "x.nrrd"}))
    bad = run_worker(tmp_path / "req.json", timeout=60, env=env_one_thread())
    assert bad.status == "error" and bad.kind == "input" and "checkpoint" in bad.message
    opts = run_worker(request(tiny, tmp_path / "o", options={"metrics": ["beauty"]}), timeout=60,
                      env=env_one_thread())
    assert opts.status == "error" and "beauty" in opts.message


def test_worker_killed_mid_run_is_reported_and_its_partial_files_removed(tiny, tmp_path):
    out = tmp_path / "out"
    out.mkdir()                                   # the caller owns the folder

    def kill_at_gradcam(event):
        if event["event"] == "progress" and event["step"] == "gradcam":
            os.kill(pid[0], signal.SIGKILL)

    pid = []
    outcome = run_worker(request(tiny, out), on_event=kill_at_gradcam, on_start=pid.append, timeout=300,
                         env=env_one_thread())
    assert outcome.status == "crashed" and outcome.returncode == -signal.SIGKILL
    assert outcome.message.startswith(CRASH_MESSAGE) and "signal 9" in outcome.message
    assert outcome.result_path is None
    assert [e["event"] for e in outcome.events if e["event"] in ("result", "error")] == []
    assert out.is_dir() and list(out.iterdir()) == []        # partial folder removed, no result.json


NOISY = r"""
import sys, warnings
from mmxai_core.worker.run import EventStream
emit = EventStream.install()
print("a stray print from a library")            # goes to stderr now
sys.stderr.write("\r 40%|####      | 4/10")      # a progress bar without a newline
emit.emit("progress", step="predict", fraction=0.4, message="x")
warnings.warn("library warning")
import os; os.write(1, b"C-level write to fd 1\n")
emit.emit("result", result="r.json", files={})
"""


def test_library_noise_never_corrupts_a_protocol_line():
    merged = subprocess.run([sys.executable, "-c", NOISY], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, timeout=60, env=env_one_thread())
    lines = merged.stdout.splitlines()
    events = [parse_line(line) for line in lines if line.startswith(PREFIX)]
    assert [e["event"] for e in events] == ["progress", "result"]
    assert sum(PREFIX in line for line in lines) == 2          # every event starts its own line
    assert any("stray print" in line for line in lines) and any("library warning" in line for line in lines)
    split = subprocess.run([sys.executable, "-c", NOISY], capture_output=True, text=True, timeout=60,
                           env=env_one_thread())
    assert all(line.startswith(PREFIX) for line in split.stdout.splitlines() if line)   # stdout: protocol only
    assert "stray print" in split.stderr and "C-level write" in split.stderr
