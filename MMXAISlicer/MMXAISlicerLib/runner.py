"""The worker process: started without blocking, its output delivered line by line on the GUI thread.

Three runners with one interface (``start``, ``poll``, ``cancel``, ``running``):

* :class:`PopenRunner`: ``subprocess.Popen`` + a reader thread that only fills a queue; ``poll()`` drains the
  queue on the calling (GUI) thread and calls the callbacks there. Used by the blocking
  ``MMXAISlicerLogic.run`` and by the panel outside Slicer (tests), polled by a timer.
* :class:`SlicerConsoleRunner`: Slicer >= 5.12's ``slicer.util.launchConsoleProcess(blocking=False,
  logCallback=..., completedCallback=...)``, whose callbacks Slicer calls from a QTimer on the GUI thread.
* :class:`QProcessRunner`: ``qt.QProcess`` for older Slicer; its signals arrive on the GUI thread.

Callbacks: ``on_line(text)`` per output line (stderr is merged into stdout), then exactly one
``on_finished(returncode)``. MRML and Qt are never touched from the reader thread.
Cancel kills the whole process tree (the worker and anything it started).
"""

from __future__ import annotations

import abc
import os
import queue
import signal
import subprocess
import threading
import time
from typing import Callable

LineCallback = Callable[[str], None]
FinishedCallback = Callable[[int], None]


class WorkerStartError(Exception):
    """The worker process could not be started (missing Python, no permission, ...)."""


class Runner(abc.ABC):
    """Interface of a worker runner (abstract: every runner implements start, running and cancel)."""

    pid: int | None = None

    @abc.abstractmethod
    def start(self, args: list[str], env: dict[str, str] | None, on_line: LineCallback,
              on_finished: FinishedCallback, cwd: str | None = None) -> None:
        """Start the worker; ``on_line(text)`` per output line, ``on_finished(exit_code)`` at the end."""

    def poll(self, timeout: float = 0.0) -> None:
        """Deliver pending output (only needed by runners that do not push it themselves)."""

    @property
    @abc.abstractmethod
    def running(self) -> bool:
        """True while the worker process is alive."""

    @abc.abstractmethod
    def cancel(self) -> None:
        """Kill the worker and its children."""


# ------------------------------------------------------------------------------------------- Popen
class PopenRunner(Runner):
    """``subprocess.Popen`` read by a thread into a queue; :meth:`poll` delivers on the calling thread."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._queue: queue.Queue = queue.Queue()
        self._on_line: LineCallback | None = None
        self._on_finished: FinishedCallback | None = None
        self._finished = False

    def start(self, args, env, on_line, on_finished, cwd=None) -> None:
        self._on_line, self._on_finished = on_line, on_finished
        kwargs: dict = {}
        if os.name == "nt":  # pragma: no cover - Windows
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | 0x08000000  # CREATE_NO_WINDOW
        else:
            kwargs["start_new_session"] = True  # own process group: cancel kills the whole tree
        try:
            self._proc = subprocess.Popen(list(args), env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                          encoding="utf-8", errors="replace", bufsize=1, **kwargs)
        except (OSError, ValueError) as exc:
            raise WorkerStartError(_start_error_text(args, exc)) from None
        self.pid = self._proc.pid
        threading.Thread(target=self._read, name="mmxai-worker-reader", daemon=True).start()

    def _read(self) -> None:  # reader thread: touches nothing but the queue
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        for line in proc.stdout:
            self._queue.put(("line", line.rstrip("\r\n")))
        proc.wait()
        self._queue.put(("done", proc.returncode))

    def poll(self, timeout: float = 0.0) -> None:
        deadline = time.monotonic() + max(0.0, timeout)
        while not self._finished:
            try:
                wait = max(0.0, deadline - time.monotonic())
                kind, data = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                return
            if kind == "line":
                if self._on_line:
                    self._on_line(data)
            else:
                self._finished = True
                if self._on_finished:
                    self._on_finished(int(data))

    @property
    def running(self) -> bool:
        return self._proc is not None and not self._finished

    def cancel(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            kill_process_tree(self._proc.pid, own_group=True)


# ----------------------------------------------------------------------------- Slicer (>= 5.12)
class SlicerConsoleRunner(Runner):  # pragma: no cover - only real Slicer runs this
    """``slicer.util.launchConsoleProcess(..., blocking=False)`` (Slicer >= 5.12)."""

    def __init__(self) -> None:
        self._proc = None
        self._finished = False

    def start(self, args, env, on_line, on_finished, cwd=None) -> None:
        import slicer

        def finished(rc: int) -> None:
            self._finished = True
            on_finished(int(rc))

        startup = dict(slicer.util.startupEnvironment())
        changes = {k: v for k, v in (env or {}).items() if startup.get(k) != v}
        try:
            self._proc = slicer.util.launchConsoleProcess(
                list(args), useStartupEnvironment=True, updateEnvironment=changes, cwd=cwd, blocking=False,
                logCallback=on_line, completedCallback=finished)
        except (OSError, ValueError) as exc:
            raise WorkerStartError(_start_error_text(args, exc)) from None
        self.pid = self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and not self._finished

    def cancel(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            kill_process_tree(self._proc.pid, own_group=False)


# ---------------------------------------------------------------------------- Slicer (< 5.12)
class QProcessRunner(Runner):  # pragma: no cover - only real Slicer runs this
    """``qt.QProcess`` with merged channels (Slicer before 5.12)."""

    def __init__(self) -> None:
        self._proc = None
        self._buffer = ""
        self._finished = False

    def start(self, args, env, on_line, on_finished, cwd=None) -> None:
        import qt

        proc = qt.QProcess()
        proc.setProcessChannelMode(qt.QProcess.MergedChannels)
        qenv = qt.QProcessEnvironment()
        for k, v in (env or {}).items():
            qenv.insert(k, v)
        proc.setProcessEnvironment(qenv)
        if cwd:
            proc.setWorkingDirectory(cwd)

        def read() -> None:
            self._buffer += bytes(proc.readAllStandardOutput()).decode("utf-8", "replace")
            *lines, self._buffer = self._buffer.split("\n")
            for line in lines:
                on_line(line.rstrip("\r"))

        def finished(*_a) -> None:
            read()
            if self._buffer:
                on_line(self._buffer)
                self._buffer = ""
            self._finished = True
            crashed = proc.exitStatus() == qt.QProcess.CrashExit
            on_finished(-9 if crashed else int(proc.exitCode()))

        proc.connect("readyReadStandardOutput()", read)
        proc.connect("finished(int,QProcess::ExitStatus)", finished)
        proc.start(args[0], list(args[1:]))
        if not proc.waitForStarted(10000):
            raise WorkerStartError(_start_error_text(args, OSError(str(proc.errorString()))))
        self._proc = proc
        self.pid = int(proc.processId()) if hasattr(proc, "processId") else None

    @property
    def running(self) -> bool:
        return self._proc is not None and not self._finished

    def cancel(self) -> None:
        if self._proc is not None and not self._finished:
            if self.pid:
                kill_process_tree(self.pid, own_group=False)
            self._proc.kill()


def make_slicer_runner() -> Runner:  # pragma: no cover - only real Slicer runs this
    """The runner for the Slicer application: launchConsoleProcess(blocking=False) where the installed
    Slicer has it (5.12+), else QProcess."""
    import inspect

    import slicer

    try:
        params = inspect.signature(slicer.util.launchConsoleProcess).parameters
    except (AttributeError, TypeError, ValueError):
        params = {}
    if "blocking" in params and "completedCallback" in params:
        return SlicerConsoleRunner()
    return QProcessRunner()


# ---------------------------------------------------------------------------------- kill a tree
def kill_process_tree(pid: int, own_group: bool = False) -> None:
    """Kill ``pid`` and all its descendants. ``own_group``: the process leads its own process group
    (PopenRunner's ``start_new_session``), so the group is killed too, catching orphans."""
    if os.name == "nt":  # pragma: no cover - Windows
        subprocess.run(["taskkill", "/PID", str(pid), "/T", "/F"], capture_output=True, check=False)
        return
    victims = _descendants(pid)
    for p in [pid] + victims:
        try:
            os.kill(p, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if own_group:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _descendants(pid: int) -> list[int]:
    """All descendants of ``pid`` (Linux: /proc; elsewhere: ``ps``)."""
    children: dict[int, list[int]] = {}
    pairs: list[tuple[int, int]] = []
    if os.path.isdir("/proc"):
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", "rb") as fh:
                    stat = fh.read().decode("ascii", "replace")
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                pairs.append((int(entry), ppid))
            except (OSError, ValueError, IndexError):
                continue
    else:  # pragma: no cover - macOS
        try:
            out = subprocess.run(["ps", "-A", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
            pairs = [(int(a), int(b)) for a, b in (line.split() for line in out.splitlines() if line.strip())]
        except (OSError, ValueError):
            pairs = []
    for child, parent in pairs:
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in found:
                found.append(c)
                todo.append(c)
    return found


def _start_error_text(args, exc: Exception) -> str:
    exe = args[0] if args else "(none)"
    if isinstance(exc, FileNotFoundError):
        why = "the program was not found"
    elif isinstance(exc, PermissionError):
        why = "it is not executable (permission denied)"
    else:
        why = str(exc) or type(exc).__name__
    return (f"The MMXAI worker could not be started: {exe}: {why}. Check the worker's Python "
            f"(environment variable MMXAI_WORKER_PYTHON; in Slicer it is PythonSlicer).")


def is_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


__all__ = ["Runner", "PopenRunner", "SlicerConsoleRunner", "QProcessRunner", "WorkerStartError",
           "make_slicer_runner", "kill_process_tree", "is_main_thread"]
