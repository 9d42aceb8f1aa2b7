"""The inference worker behind the Slicer module: ``python -m mmxai_core.worker REQUEST.json``.

Runs in the core's own Python environment (in Slicer: ``PythonSlicer`` with mmxai-core installed), talks
to its caller through JSON lines on stdout (see :mod:`mmxai_core.worker.protocol`), and touches nothing
outside the output folder the caller chose. Research use only - not for diagnosis.
"""
