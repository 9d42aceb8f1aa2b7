"""Where the mmxai-core sources are, which Python runs the worker, and with which environment.

mmxai-core is not on PyPI. The built extension carries the core's sources: CMake copies
``MMXAICore/src/mmxai_core`` next to ``MMXAISlicer.py`` (the module folder, which Slicer puts on
``sys.path``). In a source checkout (module folder added to Slicer without a build, or the tests) the same
sources are found at ``MMXAISlicer/../MMXAICore/src``. A ``pip install``-ed mmxai-core works too.

The GUI process imports only the core's light, pure-Python parts (the worker protocol and the clinical
schema: stdlib + numpy). Everything heavy (torch, SimpleITK, the model) runs in the worker process, started
as ``<python> -m mmxai_core.worker REQUEST.json`` with the carried sources on ``PYTHONPATH``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

MODULE_DIR = Path(__file__).resolve().parent.parent
"""The module folder (holds MMXAISlicer.py, MMXAISlicerLib/, Resources/ and, when built, mmxai_core/)."""

ENV_WORKER_PYTHON = "MMXAI_WORKER_PYTHON"
"""Environment variable naming the Python that runs the worker (default: Slicer's PythonSlicer)."""


def carried_core_dirs() -> list[Path]:
    """Folders that hold an ``mmxai_core`` package carried with the module, best first."""
    candidates = [MODULE_DIR, MODULE_DIR.parent / "MMXAICore" / "src"]
    return [c for c in candidates if (c / "mmxai_core" / "__init__.py").is_file()]


def core_dir() -> Path | None:
    """The folder to put on ``sys.path`` / ``PYTHONPATH`` for ``import mmxai_core``, or None when the core
    is only importable as an installed package (or not at all)."""
    dirs = carried_core_dirs()
    return dirs[0] if dirs else None


def ensure_core_importable() -> None:
    """Make ``import mmxai_core`` work in this (GUI) process; raise ImportError with advice otherwise."""
    d = core_dir()
    if d is not None and str(d) not in sys.path:
        sys.path.insert(0, str(d))
    if importlib.util.find_spec("mmxai_core") is None:
        raise ImportError(
            "The mmxai-core package was not found: it ships inside the MMXAI extension. In a source checkout, "
            "keep MMXAISlicer/ next to MMXAICore/, or install it into Slicer's Python with "
            "slicer.util.pip_install('-e /path/to/MMXAICore').")


def in_slicer_app() -> bool:
    """True inside the 3D Slicer application (not slicer-core outside it)."""
    slicer = sys.modules.get("slicer")
    return slicer is not None and getattr(slicer, "app", None) is not None


def worker_python() -> str:
    """The Python executable for the worker: ``$MMXAI_WORKER_PYTHON``, else Slicer's ``PythonSlicer``
    (next to the Slicer binary, on PATH inside Slicer), else this interpreter."""
    override = os.environ.get(ENV_WORKER_PYTHON)
    if override:
        return override
    if in_slicer_app():  # pragma: no cover - only real Slicer
        found = shutil.which("PythonSlicer")
        if found:
            return found
    return sys.executable


def worker_command(python: str | None = None) -> list[str]:
    """The worker command without the request path (the logic appends it)."""
    return [python or worker_python(), "-m", "mmxai_core.worker"]


def worker_environment(base: dict[str, str] | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The worker's environment: ``base`` (default: Slicer's startup environment inside Slicer, else this
    process's), the carried core prepended to ``PYTHONPATH``, UTF-8 and unbuffered output, then ``extra``."""
    if base is None:
        base = _startup_environment()
    env = dict(base)
    d = core_dir()
    if d is not None:
        parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        if str(d) not in parts:
            env["PYTHONPATH"] = os.pathsep.join([str(d)] + parts)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    env.update(extra or {})
    return env


def _startup_environment() -> dict[str, str]:
    if in_slicer_app():  # pragma: no cover - only real Slicer
        import slicer

        return dict(slicer.util.startupEnvironment())
    return dict(os.environ)
