"""Helpers of the reliability tests (no tests here): folder snapshots, CLI runs in a subprocess, the checks
that a refusal is clean, and a pickle that would leave a trace if anything ever unpickled it.

Research use, not for diagnosis.
"""

from __future__ import annotations

import hashlib
import os
import pickle
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
