"""Helpers of the reliability tests (no tests here): folder snapshots, CLI runs in a subprocess, the checks
that a refusal is clean, and a pickle that would leave a trace if anything ever unpickled it.

Research use, not for diagnosis.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from mmxai_core import RESEARCH_USE_NOTICE

#: console-script name -> module run with ``python -m``
CLI_MODULES = {"mmxai-explain": "mmxai_core.cli.explain", "mmxai-inspect": "mmxai_core.cli.inspect",
               "mmxai-train": "mmxai_core.cli.train", "mmxai-evaluate": "mmxai_core.cli.evaluate",
               "mmxai-synth": "mmxai_core.cli.synth"}


def one_thread_env(**extra: str) -> dict[str, str]:
    """This environment with one BLAS / torch thread, no debug tracebacks, unbuffered output."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    env.pop("MMXAI_DEBUG", None)
    return env


def run_cli(prog: str, *args: str | os.PathLike, timeout: float = 180, env: dict | None = None
            ) -> subprocess.CompletedProcess:
    """``python -m <module of prog> ARGS`` with text output captured."""
    return subprocess.run([sys.executable, "-m", CLI_MODULES[prog], *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env or one_thread_env())


#: The fork server's program: import a CLI module (and the heavy modules it loads later) once, then per
#: request fork a child that runs ``module.main(argv)`` with stderr to a file, report its pid, and reap it
#: only when asked (until then an ended child stays a zombie, so its pid cannot be reused and killed by mistake).
_FORK_SERVER = r"""
import importlib, json, os, sys
module = importlib.import_module(sys.argv[1])
for name in sys.argv[2:]:
    importlib.import_module(name)
print("ready", flush=True)
for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 70
        try:
            os.dup2(os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 2)
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            code = module.main(request["argv"])
        except SystemExit as exc:
            code = exc.code
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code if isinstance(code, int) else 1)
    print(json.dumps({"pid": pid}), flush=True)
    sys.stdin.readline()  # "reap"
    _, status = os.waitpid(pid, 0)
    code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    print(json.dumps({"returncode": code}), flush=True)
"""


class ForkServer:
    """Runs a CLI's ``main(argv)`` in fresh processes forked from one that imported the package once.

    Each child is a separate process (its own pid, killable with SIGKILL, nothing shared with earlier
    children) that starts with the imports done, so a chain of kill-and-restart trials does not pay
    torch's import time at every restart. One child at a time; Linux only (uses ``/proc``).
    """

    def __init__(self, module: str, preload: tuple[str, ...] = ()):
        self.proc = subprocess.Popen([sys.executable, "-c", _FORK_SERVER, module, *preload], text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=one_thread_env())
        self.pid: int | None = None

    def _read(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the fork server ended (exit status {self.proc.wait()})")
        return line.strip()

    def wait_ready(self) -> None:
        """Block until the imports are done."""
        assert self._read() == "ready"

    def start(self, argv: list[str], stderr_file: Path) -> int:
        """Fork a child running ``main(argv)`` with its stderr written to ``stderr_file``; returns its pid."""
        assert self.pid is None, "one child at a time"
        self.proc.stdin.write(json.dumps({"argv": [str(a) for a in argv], "stderr": str(stderr_file)}) + "\n")
        self.proc.stdin.flush()
        self.pid = int(json.loads(self._read())["pid"])
        return self.pid

    def running(self) -> bool:
        """Whether the current child is still running (not ended, not a zombie)."""
        try:
            state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state != "Z"

    def reap(self) -> int:
        """Wait for the current child to end; its exit status (negative: the signal that ended it)."""
        self.proc.stdin.write("reap\n")
        self.proc.stdin.flush()
        code = int(json.loads(self._read())["returncode"])
        self.pid = None
        return code

    def close(self) -> None:
        if self.pid is not None:
            os.kill(self.pid, signal.SIGKILL)
            self.reap()
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 (files) or ``"<dir>"`` of everything under ``folder`` (hidden entries too)."""
    out: dict[str, str] = {}
    if not folder.exists():
        return out
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_symlink():
            out[rel] = f"<link {os.readlink(p)}>"
        elif p.is_dir():
            out[rel] = "<dir>"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def error_lines(prog: str, stderr: str) -> list[str]:
    """stderr without the research-use notice line (the one line a CLI prints when it starts)."""
    notice = f"{prog}: {RESEARCH_USE_NOTICE}"
    return [line for line in stderr.splitlines() if line.strip() and line.strip() != notice]


def refusal_problems(prog: str, proc: subprocess.CompletedProcess, culprits: tuple[str, ...]) -> list[str]:
    """What is wrong with how a CLI refused a bad input (empty list: a clean refusal)."""
    problems = []
    if proc.returncode == 0:
        problems.append("exit status 0")
    elif proc.returncode != 2:
        problems.append(f"exit status {proc.returncode} (2 expected for bad input)")
    lines = error_lines(prog, proc.stderr)
    if "Traceback" in proc.stderr or "Traceback" in proc.stdout:
        problems.append("a traceback was printed")
    if len(lines) != 1:
        problems.append(f"{len(lines)} lines on stderr instead of one: {lines[:6]}")
    elif not lines[0].startswith(f"{prog}: error: "):
        problems.append(f"the line does not start with '{prog}: error: ': {lines[0]!r}")
    text = lines[0] if lines else ""
    missing = [c for c in culprits if c not in text]
    if missing:
        problems.append(f"the line does not name {missing}: {text!r}")
    if proc.stdout.strip():
        problems.append(f"output on stdout: {proc.stdout[:200]!r}")
    return problems


def api_problems(exc: BaseException | None, expected: type, culprits: tuple[str, ...]) -> list[str]:
    """What is wrong with how the Python API refused a bad input (empty list: a clean refusal)."""
    if exc is None:
        return ["the API accepted the input"]
    if not isinstance(exc, expected):
        return [f"raised {type(exc).__name__} instead of {expected.__name__}: {exc}"]
    first = str(exc).splitlines()[0] if str(exc) else ""
    missing = [c for c in culprits if c not in first]
    return [f"the message does not name {missing}: {first!r}"] if missing else []


@dataclass
class Tally:
    """Bad inputs tried and handled, for the summary the suite prints and writes."""

    tried: dict[str, list[str]] = field(default_factory=dict)

    def record(self, name: str, problems: list[str]) -> None:
        self.tried[name] = list(problems)

    @property
    def handled(self) -> list[str]:
        return [n for n, p in self.tried.items() if not p]

    def lines(self) -> list[str]:
        out = [f"bad inputs tried: {len(self.tried)}, refused cleanly (CLI and API): {len(self.handled)}, "
               f"not handled: {len(self.tried) - len(self.handled)}"]
        out += [f"  NOT HANDLED {n}: {'; '.join(p)}" for n, p in self.tried.items() if p]
        return out


class _LeavesATrace:
    """Unpickling this object creates the file ``path`` (a harmless stand-in for code execution)."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def write_evil_pickle(dest: Path, trace: Path, zip_format: bool = False) -> Path:
    """A pickle (or a ``torch.save`` zip archive) that creates ``trace`` when loaded with pickle."""
    if zip_format:
        import torch

        torch.save({"state": _LeavesATrace(trace)}, dest)
    else:
        dest.write_bytes(pickle.dumps({"state": _LeavesATrace(trace)}, protocol=4))
    return dest
