"""Synthetic multimodal cohort: mammogram-like and MRI-like DICOM images with lesion masks, clinical
fields, and labels drawn from a documented logistic model of image appearance and clinical facts.

Research use, not for diagnosis. No real patient data: every name, ID and date is fake.

Modules, one job each:

* :mod:`.fields` - the clinical fields, their distributions and schema entries;
* :mod:`.lesion_model` - lesion presence and appearance, and the ground-truth image score;
* :mod:`.label_model` - the logistic label model, clinical score, interaction, discordance;
* :mod:`.cohort` - plan a cohort in memory (no pixels): :func:`sample_cohort`;
* :mod:`.texture`, :mod:`.lesion_render`, :mod:`.mammogram`, :mod:`.mri`, :mod:`.render` - pixels;
* :mod:`.dicom_write` - DICOM files with pydicom;
* :mod:`.output` - the cohort folder: :func:`write_cohort`, manifest, schema, ground truth.

Typical use::

    from mmxai_core.data.synthetic import sample_cohort, write_cohort
    cohort = sample_cohort(5000, seed=1)          # in memory: labels, scores, clinical values
    write_cohort("out/synth", n=400, seed=0)      # on disk, ready to train
"""

from mmxai_core.data.synthetic.cohort import CLASSES, KINDS, Cohort, ImageCase, PatientCase, sample_cohort
from mmxai_core.data.synthetic.fields import FIELDS, NOISE_FIELDS
from mmxai_core.data.synthetic.output import (GENERATOR, GENERATOR_VERSION, ground_truth, is_synth_output,
                                              manifest_csv, schema_dict, write_cohort)
from mmxai_core.data.synthetic.render import Rendered, render_image

__all__ = ["CLASSES", "KINDS", "Cohort", "ImageCase", "PatientCase", "sample_cohort", "FIELDS", "NOISE_FIELDS",
           "GENERATOR", "GENERATOR_VERSION", "ground_truth", "is_synth_output", "manifest_csv", "schema_dict",
           "write_cohort", "Rendered", "render_image"]
