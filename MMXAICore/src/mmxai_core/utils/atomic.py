"""Write files so that a crash never leaves a half-written result behind.

Use :func:`atomic_path` to get a temporary path in the destination folder; on success it is renamed over
the destination with :func:`os.replace` (atomic on POSIX and Windows for the same filesystem); on error
the temporary file is removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(destination: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``destination``; rename it onto ``destination`` on success.

    ``suffix`` defaults to the destination's full suffix (e.g. ``.nii.gz``) so writers that pick the
    format from the file name still work on the temporary path.
    """
    dest = Path(destination)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(dest.suffixes)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=f".tmp{suffix}", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_text_atomic(destination: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``destination`` atomically and return the path."""
    with atomic_path(destination) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(destination)


def write_json_atomic(destination: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """Write ``obj`` as JSON (sorted keys off, UTF-8, trailing newline) atomically."""
    return write_text_atomic(destination, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")
