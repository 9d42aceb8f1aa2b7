"""Logic, presenter and view of the MMXAI Slicer module. Research use only - not for diagnosis.

The pieces (each importable without Qt and without the Slicer application, except ``view``):

* :mod:`.core`        find the mmxai-core sources the extension carries, the worker's Python and environment
* :mod:`.checkpoint`  what a checkpoint folder says about itself (name, classes, metrics, clinical schema)
* :mod:`.runner`      the worker process: non-blocking start, lines drained on the GUI thread, cancel
* :mod:`.results`     result.json / heatmap_bins.json read and the result text formatted
* :mod:`.nodes`       MRML node builders (labelmap + colour table, continuous map, table, chart, text,
                      subject hierarchy folder)
* :mod:`.logic`       :class:`MMXAISlicerLogic` (scene passed in): one case from volume node to result nodes
* :mod:`.presenter`   all panel behaviour (form from the schema, validation, state, events, export)
* :mod:`.params`      values kept in a parameter node (saved with the scene)
* :mod:`.device`      which GPU there is and how much memory it has free (``nvidia-smi``; no torch here)
* :mod:`.deps`        the Python packages the worker needs, checked and offered for install on first Run
* :mod:`.view`        the thin Qt view, the same code for Slicer's PythonQt and for PyQt5 (tests)

All computation (model, explanations, preprocessing) happens in the worker process, which runs the core's
own entry point ``python -m mmxai_core.worker``; nothing here re-implements it.
"""

NOTICE = "Research use only - not for diagnosis."
