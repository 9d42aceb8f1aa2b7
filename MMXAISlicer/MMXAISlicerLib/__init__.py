"""Logic of the MMXAI Slicer module (no Qt; the MRML scene is passed in). Filled in by the Slicer issue.

Research use only - not for diagnosis.
"""
