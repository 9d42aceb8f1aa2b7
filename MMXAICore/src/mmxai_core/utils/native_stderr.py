"""Collect what C/C++ libraries (OpenJPEG, GDCM, libjpeg) print straight to file descriptor 2.

A corrupt JPEG 2000 stream makes OpenJPEG print lines such as "Invalid number of tiles" to the process's
stderr, below Python; a CLI that refuses the file would then print those lines besides its own one-line
error. :func:`native_stderr_captured` redirects descriptor 2 into a private temporary file for the
duration of a block and hands the lines to the caller, who decides: drop them when the decode failed (the
error says so), turn them into warnings when it worked. With ``MMXAI_DEBUG`` set the lines are also
echoed at once. Research use, not for diagnosis.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def native_stderr_captured() -> Iterator[list[str]]:
    """Context manager: descriptor-2 output of the block, as non-empty lines, in the yielded list (filled
    when the block ends). Does nothing where descriptor 2 cannot be duplicated (embedded interpreters)."""
    lines: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield lines
        return
    try:
        sink = tempfile.TemporaryFile()
    except OSError:
        os.close(saved)
        yield lines
        return
    with sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            with contextlib.suppress(ValueError, OSError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(line.strip() for line in sink.read().decode("utf-8", "replace").splitlines()
                         if line.strip())
            if os.environ.get("MMXAI_DEBUG"):
                for line in lines:
                    print(f"native: {line}", file=sys.stderr)
