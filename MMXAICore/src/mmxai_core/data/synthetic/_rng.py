"""Deterministic random streams and DICOM UIDs for the synthetic cohort.

Every random draw of the generator comes from a NumPy generator seeded with ``[seed, stream, *keys]``
(a :class:`numpy.random.SeedSequence` entropy list), so one case's pixels do not depend on the order in
which cases are rendered, and the same seed always gives the same cohort.
"""

from __future__ import annotations

import numpy as np

# Stream numbers: fixed forever (changing one changes every cohort; bump GENERATOR_VERSION if you do).
STREAM_PLAN = 1        # modality, views, laterality per patient
STREAM_IMAGE_LATENT = 2  # lesion presence and appearance
STREAM_CLINICAL = 3    # clinical values
STREAM_MISSING = 4     # which clinical cells are written empty
STREAM_DISCORDANT = 5  # which patients get deliberately discordant clinical values
STREAM_LABEL = 6       # the Bernoulli draw of the label
STREAM_RENDER = 7      # pixels of one image (keyed by patient and image index)


def rng_for(seed: int, stream: int, *keys: int) -> np.random.Generator:
    """A generator for one stream (and optional integer keys, e.g. patient and image index)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(stream), *(int(k) for k in keys)])


def make_uid(seed: int, *parts: object) -> str:
    """A DICOM UID derived only from the seed and ``parts`` (same inputs -> same UID)."""
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=["mmxai-synth", str(int(seed)), *(str(p) for p in parts)]))
