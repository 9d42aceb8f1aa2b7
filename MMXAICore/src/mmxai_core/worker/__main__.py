"""``python -m mmxai_core.worker REQUEST.json``: explain one case for the Slicer module (or any caller).

Reads the request (:class:`~mmxai_core.worker.protocol.WorkerRequest`), writes prefixed JSON-line events
on stdout (``started``, ``progress`` per step, then exactly one ``result`` or ``error``) and the case's
files into the request's ``output_dir``; exit status 0 / 2 (input) / 3 (internal). See
:mod:`mmxai_core.worker.run` and ``docs/WORKER.md``. Research use only - not for diagnosis.

The process ends with ``os._exit`` once its streams are flushed: every file is complete (and the staging
folder removed) before the last event, and the interpreter's own teardown (unloading torch and friends)
took 1.6-1.8 s after the result on a 2-core machine, time the caller spent waiting for the exit status
(BENCHMARKS.md, click to overlay). ``MMXAI_WORKER_SLOW_EXIT=1`` keeps the normal exit (for coverage tools).
"""

import os
import sys

from mmxai_core.worker.run import main


def _exit(code: int) -> None:
    if os.environ.get("MMXAI_WORKER_SLOW_EXIT") == "1":
        sys.exit(code)
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    _exit(main())
