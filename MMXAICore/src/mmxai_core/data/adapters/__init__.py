"""Adapters that turn public datasets (CBIS-DDSM, Duke Breast Cancer MRI, a generic CSV + image
folder) into an MMXAI manifest CSV and clinical schema.

Each ``adapt_*`` function writes ``manifest.csv``, ``schema.yaml`` and ``adapter_summary.json`` into
an output folder (atomically) and returns an :class:`AdapterSummary` (rows per split and class, what
was dropped and why). Manifest columns: ``patient_id, image, label[, mask], dataset, split[, case_id]``
and the clinical fields in schema order. ``image`` / ``mask`` are relative to the manifest's folder, so
the output folder is best the data root itself (a folder beside it gives ``../`` paths, which
``load_manifest`` accepts with ``allow_outside=True``). The CLI is ``mmxai-adapt``
(:mod:`mmxai_core.cli.adapt`).
"""

from mmxai_core.data.adapters._output import AdapterSummary
from mmxai_core.data.adapters.cbis_ddsm import adapt_cbis_ddsm
from mmxai_core.data.adapters.duke_mri import SERIES_PRESETS, adapt_duke_mri, series_descriptions
from mmxai_core.data.adapters.generic import adapt_generic

__all__ = ["AdapterSummary", "adapt_cbis_ddsm", "adapt_duke_mri", "adapt_generic", "series_descriptions",
           "SERIES_PRESETS"]
