"""Start-up of the worker: the model and explanation code import without SimpleITK, pydicom or shap (they
are loaded only by the steps that need them), and the worker picks its CPU threads before torch loads."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("SimpleITK", "pydicom", "shap", "scipy.stats")     # scipy.stats: 0.5 s, only cohort statistics need it
MODULES = ("mmxai_core.model", "mmxai_core.explain.pipeline", "mmxai_core.explain.gradcam",
           "mmxai_core.explain.shapley", "mmxai_core.explain.value_function",
           "mmxai_core.explain.coalition_decoder", "mmxai_core.explain.modality", "mmxai_core.worker.run",
           "mmxai_core.explain.metrics.coherence", "mmxai_core.explain.metrics.sanity")


def test_model_and_explanation_modules_import_without_heavy_readers():
    code = ("import importlib, json, sys\n"
            f"for m in {MODULES!r}: importlib.import_module(m)\n"
            f"print(json.dumps({{k: k in sys.modules for k in {HEAVY!r} + ('torch',)}}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded.pop("torch") is True          # the check itself works: torch is there
    assert loaded == {k: False for k in HEAVY}


def test_worker_thread_default_and_overrides():
    from mmxai_core.worker.run import configure_threads

    env: dict[str, str] = {}
    assert int(configure_threads(env)) >= 1 and env["OMP_NUM_THREADS"] == configure_threads({})
    assert configure_threads({"OMP_NUM_THREADS": "3"}) == "3"              # the caller's choice stays
    assert configure_threads({"OMP_NUM_THREADS": "3", "MMXAI_THREADS": "1"}) == "1"
    assert configure_threads({"MMXAI_THREADS": "zero"}) == env["OMP_NUM_THREADS"]   # ignored when not a count
