"""``python -m mmxai_core.worker REQUEST.json``: explain one case for the Slicer module (or any caller).

Reads the request (:class:`~mmxai_core.worker.protocol.WorkerRequest`), writes prefixed JSON-line events
on stdout (``started``, ``progress`` per step, then exactly one ``result`` or ``error``) and the case's
files into the request's ``output_dir``; exit status 0 / 2 (input) / 3 (internal). See
:mod:`mmxai_core.worker.run` and ``docs/WORKER.md``. Research use only - not for diagnosis.
"""

import sys

from mmxai_core.worker.run import main

if __name__ == "__main__":
    sys.exit(main())
