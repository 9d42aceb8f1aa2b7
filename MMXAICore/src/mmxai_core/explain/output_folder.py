"""Output folders that appear complete or not at all, for ``mmxai-explain`` (one case, and each case of a
batch). Research use only - not for diagnosis.

* :func:`staging_folder` makes a hidden sibling ``.NAME.partial-PID-XXXX`` to build the output in;
* :func:`publish_folder` renames it to ``NAME`` (an older ``NAME`` is renamed aside first and removed
  once the new one is in place), so ``NAME`` is either absent, the old output or the new one;
* :func:`check_output_folder` refuses to replace a complete output unless forced, and never replaces a
  folder that holds anything but an mmxai-explain output;
* :func:`remove_stale_partials` removes partial folders whose process is gone (a killed run);
* :func:`input_sha256` hashes an image file or DICOM folder, so a rerun can tell "same inputs".
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from mmxai_core.errors import MMXAIError

RESULT_FILE = "result.json"
RESULT_FORMAT = "mmxai.explain_result"


def input_sha256(path: str | os.PathLike) -> str:
    """SHA-256 over an image file's bytes, or over (relative name, content hash) of every file in a
    DICOM folder (sorted): says whether two runs saw the same input."""
    from mmxai_core.utils.files import sha256_file

    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(p):
        dirs.sort()
        for name in sorted(files):
            f = Path(root) / name
            digest.update(f"{f.relative_to(p).as_posix()}\0{sha256_file(f)}\n".encode())
    return digest.hexdigest()



def read_result(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The result.json of an explain output folder, or None when there is none (or it is unreadable)."""
    try:
        data = json.loads((Path(folder) / RESULT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == RESULT_FORMAT else None


_PARTIAL = re.compile(r"^\.(?P<name>.+)\.partial-(?P<pid>\d+)-[A-Za-z0-9_]+$")


def check_output_folder(dest: str | os.PathLike, inputs_sha256: str | None, force: bool,
                        what: str = "--out") -> None:
    """Refuse to replace what should not be replaced (raises MMXAIError naming ``dest``).

    Absent or empty: fine. A complete explain output: refused unless ``force`` (the message says whether
    it holds the same inputs). Anything else (a file, a folder with other content): always refused.
    """
    d = Path(dest)
    if not d.exists():
        return
    if not d.is_dir():
        raise MMXAIError(f"{what} {d}: exists and is not a folder")
    if not any(d.iterdir()):
        return
    previous = read_result(d)
    if previous is None:
        raise MMXAIError(f"{what} {d}: folder is not empty and holds no mmxai-explain result; refusing to "
                         "replace it (choose another folder)")
    if force:
        return
    same = inputs_sha256 is not None and (previous.get("identity") or {}).get("inputs_sha256") == inputs_sha256
    if same:
        raise MMXAIError(f"{what} {d}: already holds a complete explanation of the same inputs; use --force to "
                         "compute it again and replace it")
    raise MMXAIError(f"{what} {d}: holds an explanation of other inputs (image, clinical values, model or "
                     "options differ); use --force to replace it, or choose another folder")


def staging_folder(dest: str | os.PathLike) -> Path:
    """A new hidden sibling folder ``.NAME.partial-PID-XXXX`` of ``dest`` to build an output in."""
    d = Path(dest)
    d.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{d.name}.partial-{os.getpid()}-", dir=d.parent))


def publish_folder(staging: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Rename the finished ``staging`` folder to ``dest``; an existing ``dest`` is renamed aside first and
    removed once the new one is in place."""
    s, d = Path(staging), Path(dest)
    old = None
    if d.exists():
        old = d.with_name(f".{d.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.replace(d, old)
    os.replace(s, d)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return d


def remove_stale_partials(parent: str | os.PathLike, name: str | None = None, *, check_pid: bool = True
                          ) -> list[Path]:
    """Remove ``.NAME.partial-PID-*`` folders in ``parent`` whose process is gone (a killed run); with
    ``name`` only those of that output; with ``check_pid=False`` all of them (for a folder the caller has
    locked, where no other process can be writing). Returns what was removed."""
    removed = []
    p = Path(parent)
    if not p.is_dir():
        return removed
    for entry in p.iterdir():
        m = _PARTIAL.match(entry.name)
        if not m or not entry.is_dir() or (name is not None and m.group("name") != name):
            continue
        if check_pid and _pid_alive(int(m.group("pid"))):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


__all__ = ["RESULT_FILE", "RESULT_FORMAT", "check_output_folder", "input_sha256", "publish_folder", "read_result",
           "remove_stale_partials", "staging_folder"]
