"""Turn one planned image (:class:`.cohort.ImageCase`) into stored pixel values, a lesion mask and the
geometry that SimpleITK will report for the written DICOM."""

from __future__ import annotations

import dataclasses

import numpy as np

from mmxai_core.data.synthetic._rng import STREAM_RENDER, rng_for
from mmxai_core.data.synthetic.cohort import ImageCase, PatientCase
from mmxai_core.data.synthetic.mammogram import render_mammogram
from mmxai_core.data.synthetic.mri import PHYSICAL_SCALE, render_mri

MG_MAX = 4095  # 12 bits stored


@dataclasses.dataclass
class Rendered:
    """Pixels and geometry of one image, SimpleITK conventions (array (Z, Y, X), spacing x-y-z, origin
    LPS of voxel [0,0,0], direction columns = index axes). ``stored`` is what goes into PixelData
    (uint16); the modality values are ``stored * slope + intercept``."""

    stored: np.ndarray
    mask: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray
    slope: float = 1.0
    intercept: float = 0.0

    @property
    def values(self) -> np.ndarray:
        """Modality values (rescale applied), float64."""
        return self.stored.astype(np.float64) * self.slope + self.intercept

    def mask_image(self):
        """The mask as an :class:`mmxai_core.io.Image` on this image's grid."""
        from mmxai_core.io.image import Image

        return Image(self.mask, self.spacing, self.origin, self.direction)


def render_image(seed: int, patient: PatientCase, image_index: int) -> Rendered:
    """Render image ``image_index`` of ``patient`` (deterministic for seed, patient and image)."""
    image: ImageCase = patient.images[image_index]
    rng = rng_for(seed, STREAM_RENDER, patient.index, image_index)
    density = int(patient.clinical["breast_density"])
    if image.modality == "MG":
        value, mask = render_mammogram(rng, image.size, image.spacing[0], image.view or "CC",
                                       image.laterality, density, patient.lesion)
        stored = np.clip(np.rint(value * MG_MAX), 0, MG_MAX).astype(np.uint16)[None]
        return Rendered(stored, mask[None], image.spacing, (0.0, 0.0, 0.0), np.eye(3))
    shape = (image.n_slices, *image.size)
    value, mask = render_mri(rng, shape, image.spacing, image.laterality, density, patient.lesion)
    slope, intercept = image.rescale
    stored = np.clip(np.rint((value * PHYSICAL_SCALE - intercept) / slope), 0, 65535).astype(np.uint16)
    return Rendered(stored, mask, image.spacing, image.origin, image.rotation.copy(), slope, intercept)
