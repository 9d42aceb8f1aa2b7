"""The worker's run: request in, events out, files into the caller's folder. Research use only - not for
diagnosis.

Stream discipline (why no library can corrupt the protocol):

* The protocol gets a private duplicate of the original stdout; file descriptor 1 and ``sys.stdout`` are
  then pointed at stderr, so anything a library prints (Python or C) lands on stderr, never between two
  halves of a protocol line.
* ``sys.stderr`` is wrapped so each write is flushed at once and the worker knows whether stderr ended
  mid-line (a progress bar's ``\\r``); when the caller merges stderr into stdout (Slicer's
  ``launchConsoleProcess`` does), an event then starts on a fresh line.
* tqdm bars are switched off (``TQDM_DISABLE=1``) unless the caller set that variable.

Files: the case is built in ``output_dir/.partial-PID-XXXX`` and its files are moved up into
``output_dir`` when complete, result.json last; the partial folder is removed on error. Nothing is
written outside ``output_dir``.

Exit status: 0 after ``result``, 2 after an input error, 3 after an internal error.

CPU threads: unless the caller set ``OMP_NUM_THREADS`` (or ``MMXAI_THREADS``, which wins), the worker
uses one thread fewer than the machine has cores (at least one), leaving a core to the GUI that waits for
it. Measured on a busy 2-core machine (BENCHMARKS.md, click to overlay): a forward pass that takes 10 ms on
one thread took over a second with two threads competing with other processes for the cores.

Start-up: this module imports only the protocol and the error types; torch, timm, SimpleITK and the
explanation code are imported when the request needs them (the model and explanation modules import
neither SimpleITK, pydicom nor shap: tests/test_lazy_imports.py).
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Sequence, TextIO

from mmxai_core.errors import MMXAIError
from mmxai_core.worker.protocol import WorkerRequest, encode_event

EXIT_OK, EXIT_INPUT, EXIT_INTERNAL = 0, 2, 3
USAGE = "usage: python -m mmxai_core.worker REQUEST.json"


class _TrackedStderr(io.TextIOBase):
    """``sys.stderr`` that flushes every write and remembers whether the last write ended a line."""

    def __init__(self, inner: TextIO):
        self._inner = inner
        self.at_line_start = True

    def write(self, s: str) -> int:
        n = self._inner.write(s)
        if s:
            self.at_line_start = s.endswith("\n")
        self._inner.flush()
        return n if n is not None else len(s)

    def flush(self) -> None:
        self._inner.flush()

    def fileno(self) -> int:
        return self._inner.fileno()

    def isatty(self) -> bool:
        return self._inner.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._inner, "encoding", "utf-8")

    def writable(self) -> bool:
        return True


class EventStream:
    """Writes protocol events on a stream of their own (see the module docstring)."""

    def __init__(self, out: TextIO, stderr: _TrackedStderr | None = None):
        self._out = out
        self._stderr = stderr

    @classmethod
    def install(cls) -> "EventStream":
        """Take over stdout for the protocol and send all other output to stderr."""
        sys.stdout.flush()
        proto = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1, newline="\n")
        os.dup2(2, 1)
        tracked = _TrackedStderr(sys.stderr)
        sys.stderr = tracked
        sys.stdout = tracked
        return cls(proto, tracked)

    def emit(self, event: str, **fields: Any) -> None:
        """One event line, flushed; on a fresh line when stderr (possibly merged) was left mid-line."""
        line = encode_event(event, **fields)
        if self._stderr is not None and not self._stderr.at_line_start:
            line = "\n" + line
            self._stderr.at_line_start = True
        self._out.write(line + "\n")
        self._out.flush()


def run_request(request: WorkerRequest, emit: EventStream) -> tuple[Path, dict[str, str]]:
    """Explain the case of ``request`` into its ``output_dir``; returns (result.json path, files)."""
    from mmxai_core.explain.clinical_input import validate_clinical
    from mmxai_core.explain.pipeline import (RESULT_FILE, STEP_FRACTIONS, ExplainOptions, checkpoint_info,
                                             explain_case, load_model, prepare_case)

    def progress(step: str, fraction: float, message: str) -> None:
        emit.emit("progress", step=step, fraction=round(float(fraction), 4), message=message)

    options = ExplainOptions.from_mapping(request.options, source="request 'options'")
    progress("load", STEP_FRACTIONS["load"], "checking the inputs")
    info = checkpoint_info(request.checkpoint)  # metadata only: bad values are refused in a moment
    clinical = validate_clinical(request.clinical, info.schema, source="clinical values")
    case = prepare_case(info, request.image, clinical, options, request.series_uid)
    progress("load", STEP_FRACTIONS["load"] + 0.05, "loading the model")
    model = load_model(request.checkpoint, request.device, info=info)
    timings = {"load_model": model.load_seconds, **case.timings}

    out = Path(request.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".partial-{os.getpid()}-", dir=out))
    try:
        result = explain_case(model, case.image, clinical, staging, options, progress=progress,
                              timings=timings, image_path=request.image, identity=case.identity)
        names = sorted((p.name for p in staging.iterdir()), key=lambda n: n == RESULT_FILE)  # result.json last
        for name in names:
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    progress("write", 1.0, "done")
    return out / RESULT_FILE, dict(result["files"])


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:500] if text else type(exc).__name__


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    name = type(exc).__name__
    return name == "OutOfMemoryError" or "out of memory" in str(exc).lower()


def configure_threads(environ=os.environ) -> str:
    """Set ``OMP_NUM_THREADS`` before torch is imported (see the module docstring); returns its value."""
    wanted = environ.get("MMXAI_THREADS")
    if wanted and wanted.strip().isdigit() and int(wanted) >= 1:
        environ["OMP_NUM_THREADS"] = str(int(wanted))
    elif not environ.get("OMP_NUM_THREADS"):
        environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) - 1))
    return environ["OMP_NUM_THREADS"]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mmxai_core.worker REQUEST.json``: returns the exit status (see the module docstring)."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    configure_threads()
    args = list(sys.argv[1:] if argv is None else argv)
    emit = EventStream.install()
    emit.emit("started", pid=os.getpid())
    try:
        if len(args) != 1:
            raise MMXAIError(USAGE)
        request = WorkerRequest.read(args[0])
        result_path, files = run_request(request, emit)
        emit.emit("result", result=str(result_path), files=files)
        return EXIT_OK
    except MMXAIError as exc:
        emit.emit("error", message=_one_line(exc), kind="input")
        return EXIT_INPUT
    except KeyboardInterrupt:
        emit.emit("error", message="interrupted", kind="internal")
        return EXIT_INTERNAL
    except Exception as exc:  # noqa: BLE001 - every failure becomes one error event
        if os.environ.get("MMXAI_DEBUG"):
            traceback.print_exc()
        if _is_out_of_memory(exc):
            message = (f"out of memory ({type(exc).__name__}: {_one_line(exc)}); try device 'cpu' or free "
                       "memory")
        else:
            message = f"{type(exc).__name__}: {_one_line(exc)} (set MMXAI_DEBUG=1 for the traceback)"
        emit.emit("error", message=message, kind="internal")
        return EXIT_INTERNAL


__all__ = ["EventStream", "configure_threads", "main", "run_request", "EXIT_OK", "EXIT_INPUT", "EXIT_INTERNAL"]
