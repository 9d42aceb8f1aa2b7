"""A minimal caller of the worker: start it, read its events, say how it ended. Research use only - not
for diagnosis.

The Slicer module mirrors this loop with its own runner (GUI thread, cancel button); tests and scripts use
:func:`run_worker` directly::

    outcome = run_worker(request, on_event=print, timeout=600)
    if outcome.ok:
        result = json.loads(Path(outcome.result_path).read_text())
    else:
        print(outcome.message)          # e.g. "worker stopped without a result (killed or crashed), ..."

How a run can end (``WorkerOutcome.status``):

* ``result``: a ``result`` event and exit status 0;
* ``error``: an ``error`` event (``kind`` input / internal) and exit status 2 / 3;
* ``crashed``: the process ended without a result or error event (killed, crashed, out of memory);
* ``timeout``: still running after ``timeout`` seconds: the whole process group is killed;
* ``protocol``: a damaged protocol line, a second final event, or an exit status that contradicts the
  final event;
* ``cancelled``: ``cancel()`` returned True: the whole process group is killed.

If a callback (``on_event``, ``on_log``, ``on_start``) raises, or the caller is interrupted (Ctrl-C), the
worker's process group is killed, its partial folders are removed and the exception goes on: no worker
outlives its caller. The request file lives in a private temporary folder (``tempfile.mkdtemp``: mode
0700, owned by this process) that is removed on every ending.

Lines without the protocol prefix are log text (warnings, stderr merged into stdout): kept in ``log``
(the last :data:`LOG_LINES`) and passed to ``on_log``, never parsed. On every ending but ``result`` the
worker's partial folders (``output_dir/.partial-*``) are removed; the caller still owns ``output_dir``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Mapping

from mmxai_core.worker.protocol import PREFIX, ProtocolError, WorkerRequest, parse_line

LOG_LINES = 200
CRASH_MESSAGE = "worker stopped without a result (killed or crashed)"


@dataclasses.dataclass
class WorkerOutcome:
    """How a worker run ended (see the module docstring for ``status``)."""

    status: str
    returncode: int | None
    message: str = ""
    kind: str | None = None
    result_path: str | None = None
    files: dict[str, str] = dataclasses.field(default_factory=dict)
    events: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    log: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "result"


def _request_file(request: WorkerRequest | Mapping[str, Any] | str | os.PathLike, tmp: Path
                  ) -> tuple[Path, Path | None]:
    """(request file, output_dir or None): a file path is used as is; a request object is written to
    ``tmp``."""
    if isinstance(request, (str, os.PathLike)):
        path = Path(request)
        try:
            out = json.loads(path.read_text(encoding="utf-8")).get("output_dir")
        except (OSError, ValueError, AttributeError):
            out = None
        return path, Path(out) if isinstance(out, str) and out else None
    req = request if isinstance(request, WorkerRequest) else WorkerRequest.from_dict(request)
    path = tmp / "request.json"
    path.write_text(json.dumps(req.to_dict()), encoding="utf-8")
    return path, Path(req.output_dir)


def _event_of(line: str) -> dict[str, Any] | None:
    """The event on ``line``; tolerates text glued in front of the prefix (a merged stderr that ended
    mid-line)."""
    at = line.find(PREFIX)
    return None if at < 0 else parse_line(line[at:])


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        if os.name == "posix":
            os.killpg(proc.pid, signal.SIGKILL)
        else:  # pragma: no cover - Windows
            proc.kill()
    except (ProcessLookupError, PermissionError, OSError):
        pass


def run_worker(request: WorkerRequest | Mapping[str, Any] | str | os.PathLike,
               on_event: Callable[[dict[str, Any]], None] | None = None, timeout: float | None = None, *,
               python: str | None = None, env: Mapping[str, str] | None = None,
               on_log: Callable[[str], None] | None = None, on_start: Callable[[int], None] | None = None,
               cancel: Callable[[], bool] | None = None) -> WorkerOutcome:
    """Run ``python -m mmxai_core.worker`` on ``request`` and wait for it (at most ``timeout`` seconds).

    Args:
        request: a :class:`WorkerRequest`, its dict, or the path of a request file.
        on_event: called with each protocol event (dict) as it arrives, on the calling thread.
        timeout: seconds before the worker (its whole process group) is killed; None = no limit.
        python: the interpreter (default: this one); env: its environment (default: this one's).
        on_log: called with each non-protocol line; on_start: called with the worker's pid.
        cancel: polled about every 0.1 s; when it returns True the worker is stopped (status ``cancelled``).
    """
    t0 = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="mmxai-worker-request-"))
    events: list[dict[str, Any]] = []
    log: deque[str] = deque(maxlen=LOG_LINES)
    final: dict[str, Any] | None = None
    problem: str | None = None
    timed_out = cancelled = False
    proc: subprocess.Popen | None = None
    out_dir: Path | None = None
    try:
        req_path, out_dir = _request_file(request, tmp)
        kwargs: dict[str, Any] = {"start_new_session": True} if os.name == "posix" else {}
        proc = subprocess.Popen([python or sys.executable, "-m", "mmxai_core.worker", str(req_path)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=dict(env) if env is not None else None, text=True, encoding="utf-8",
                                errors="replace", bufsize=1, **kwargs)
        if on_start:
            on_start(proc.pid)
        lines: queue.Queue = queue.Queue()

        def read() -> None:  # reader thread: only fills the queue
            assert proc.stdout is not None
            for text in proc.stdout:
                lines.put(text.rstrip("\r\n"))
            lines.put(None)

        threading.Thread(target=read, name="mmxai-worker-client", daemon=True).start()
        deadline = None if timeout is None else t0 + float(timeout)
        while True:
            if cancel is not None and cancel():
                cancelled = True
                _kill_group(proc)
                break
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if cancel is not None:
                wait = 0.1 if wait is None else min(wait, 0.1)
            try:
                text = lines.get(timeout=wait)
            except queue.Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    timed_out = True
                    _kill_group(proc)
                    break
                continue
            if text is None:
                break
            try:
                event = _event_of(text)
            except ProtocolError as exc:
                problem = problem or str(exc)
                continue
            if event is None:
                log.append(text)
                if on_log:
                    on_log(text)
                continue
            events.append(event)
            if event["event"] in ("result", "error"):
                if final is not None:
                    problem = problem or "the worker sent more than one final event"
                final = final or event
            if on_event:
                on_event(event)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            code = proc.wait()
        outcome = (WorkerOutcome("cancelled", code, "cancelled; the worker was stopped") if cancelled
                   else _outcome(final, code, timed_out, problem, timeout))
    except BaseException:  # a callback raised, or the caller was interrupted: leave nothing running
        if proc is not None and proc.poll() is None:
            _kill_group(proc)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        _remove_partials(out_dir)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if outcome.status != "result":
        _remove_partials(out_dir)
    outcome.events, outcome.log, outcome.seconds = events, list(log), time.monotonic() - t0
    return outcome


def _outcome(final: dict[str, Any] | None, code: int, timed_out: bool, problem: str | None,
             timeout: float | None) -> WorkerOutcome:
    if timed_out:
        return WorkerOutcome("timeout", code, f"worker still running after {timeout:g} s; stopped")
    if problem:
        return WorkerOutcome("protocol", code, f"worker protocol error: {problem}")
    if final is None:
        how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        return WorkerOutcome("crashed", code, f"{CRASH_MESSAGE}, {how}")
    if final["event"] == "result":
        if code != 0:
            return WorkerOutcome("protocol", code, f"worker sent a result but exited with status {code}")
        return WorkerOutcome("result", code, "done", result_path=str(final.get("result")),
                             files=dict(final.get("files") or {}))
    kind = str(final.get("kind") or "internal")
    expected = 2 if kind == "input" else 3
    message = str(final.get("message") or "unknown error")
    if code != expected:
        message += f" (exit status {code})"
    return WorkerOutcome("error", code, message, kind=kind)


def _remove_partials(out_dir: Path | None) -> None:
    """Remove the worker's ``.partial-*`` staging folders from ``out_dir`` (after a failed run)."""
    if out_dir is None or not out_dir.is_dir():
        return
    for entry in out_dir.iterdir():
        if entry.name.startswith(".partial-") and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)


__all__ = ["CRASH_MESSAGE", "WorkerOutcome", "run_worker"]
